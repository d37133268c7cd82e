"""What a new user meets in MLflow's UI, checked: the experiment's training runs and the logged model's page.

    python tools/check_mlflow_ui.py                                  # the default store, sqlite:///mlruns/mlflow.db
    python tools/check_mlflow_ui.py --tracking-uri sqlite:///x/mlflow.db --experiment cifar10
    python tools/check_mlflow_ui.py --demo /tmp/demo --screenshot docs/mlflow/training-runs.png

It starts `mlflow ui` on a free localhost port against the store (as the program's "browse:" line says) and
checks, through MLflow's REST API and the built UI's own routes:

1. the experiment and its finished runs, each tagged with source, user (and git commit where there is one);
2. every logged model: READY, output of its run at the final step, its Metrics the run's `final/*` results at
   that step, each with a dataset (the model page's "Datasets used");
3. the UI: the page and its main script are served, and the script takes the GenAI / Model training view from
   the URL's `workflowType` before the browser's stored switch (GenAI by default): the address the program
   prints (`.../#/experiments/<id>/runs?workflowType=machine_learning`) is what opens training runs in a new
   browser profile, and the experiment tag alone does not.

With Debian's headless Chromium (`apt-get install chromium`; `--chromium PATH` elsewhere) it also opens the
printed address and the model page in a fresh profile, checks what they render (training runs, not the GenAI
overview; the model's final metrics and datasets) and, with `--screenshot PATH`, saves a picture of the runs.
`--demo DIR` first trains a tiny synthetic run into DIR/store (seconds) to check against.
Exit status 0 when every check passed, 1 otherwise (each failure is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from functional_ast.edges import store, tracking  # noqa: E402

BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1680,900")
GENAI_WORDS = ("Token Usage", "Detect Issues", "Cost Breakdown")  # the GenAI overview's panels


class CheckFailed(AssertionError):
    """A check did not pass; the message says which and what was found."""


def free_port(preferred: int = store.UI_PORT) -> int:
    """`preferred` if nothing listens there on localhost, else a free port the system picks."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free localhost port")


@contextlib.contextmanager
def mlflow_ui(tracking_uri: str, port: int, timeout: float = 180.0):
    """`mlflow ui --backend-store-uri URI` on 127.0.0.1:port (one worker) while the block runs; yields its base
    address. The server and its workers are stopped at the end (they run in a session of their own)."""
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
                                "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise CheckFailed(f"mlflow ui exited ({process.returncode}): {log.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as answer:
                    if answer.read().strip() == b"OK":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise CheckFailed(f"mlflow ui did not answer on {base}/health within {timeout:.0f} s")
            time.sleep(1.0)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def rest(base: str, path: str, payload: dict | None = None, prefix: str = "/api/2.0/mlflow") -> dict:
    """One MLflow REST call (GET, or POST with `payload`); the answer's JSON."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"{base}{prefix}/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        raise CheckFailed(f"{prefix}/{path}: HTTP {error.code} {error.read().decode()[:300]}") from None


def _tags(entity: dict) -> dict:
    return {t["key"]: t.get("value", "") for t in entity.get("tags", [])}


def _metrics(run: dict) -> dict:
    return {m["key"]: m for m in run["data"].get("metrics", [])}


def check_rest(base: str, experiment: str) -> dict:
    """The store's checks through the REST API and the UI's routes; returns what was found: experiment id, run
    names, logged model ids and the main script's path. Raises CheckFailed on the first check that fails."""
    found = rest(base, f"experiments/get-by-name?experiment_name={urllib.request.quote(experiment)}")
    exp = found["experiment"]
    exp_id = exp["experiment_id"]
    runs = rest(base, "runs/search", {"experiment_ids": [exp_id], "max_results": 1000}).get("runs", [])
    finished = [r for r in runs if r["info"]["status"] == "FINISHED"]
    if not finished:
        raise CheckFailed(f"experiment {experiment!r} ({exp_id}) has no finished run")
    models = []
    for run in finished:
        name, tags = run["info"].get("run_name", run["info"]["run_id"]), _tags(run["data"])
        missing = [t for t in ("mlflow.source.name", "mlflow.source.type", "mlflow.user") if not tags.get(t)]
        if missing:
            raise CheckFailed(f"run {name}: no {', '.join(missing)} tag (the UI shows 'Source —', 'Created by —')")
        metrics = _metrics(run)
        for output in (run.get("outputs") or {}).get("model_outputs", []):
            model = rest(base, f"logged-models/{output['model_id']}")["model"]
            models.append(check_model(model, output, metrics, name))
    # The UI: its page, its script, and the ajax routes the page calls.
    page = _get(f"{base}/")
    script = re.search(r'src="([^"]*static/js/main\.[0-9a-f]+\.js)"', page)
    if not script:
        raise CheckFailed("the UI's page names no static/js/main.*.js")
    code = _get(f"{base}/{script.group(1).lstrip('./')}")
    check_view_selection(code)
    rest(base, "runs/search", {"experiment_ids": [exp_id], "max_results": 1}, prefix="/ajax-api/2.0/mlflow")
    return dict(experiment_id=exp_id, runs=[r["info"].get("run_name") for r in finished], models=models,
                kind=_tags(exp).get(tracking.EXPERIMENT_KIND_TAG), script=script.group(1))


def check_model(model: dict, output: dict, run_metrics: dict, run_name: str) -> str:
    """One logged model: READY, at the run's final step, its metrics the run's final/* there, with datasets."""
    info, data = model["info"], model.get("data", {})
    model_id = info["model_id"]
    if info.get("status") != "LOGGED_MODEL_READY":
        raise CheckFailed(f"model {model_id} of run {run_name} is {info.get('status')}, not READY")
    final_step = int(run_metrics["final/steps"]["value"]) if "final/steps" in run_metrics else None
    step = int(output.get("step", 0))
    if final_step is not None and step != final_step:
        raise CheckFailed(f"model {model_id} is the output of step {step}, not the final step {final_step}")
    metrics = {m["key"]: m for m in data.get("metrics", [])}
    if "final/test_accuracy" not in metrics:
        raise CheckFailed(f"model {model_id}'s page has no final/test_accuracy (it shows {sorted(metrics)})")
    if metrics["final/test_accuracy"]["value"] != run_metrics["final/test_accuracy"]["value"]:
        raise CheckFailed(f"model {model_id}: test accuracy {metrics['final/test_accuracy']['value']} is not the "
                          f"run's {run_metrics['final/test_accuracy']['value']}")
    stale = sorted(k for k, m in metrics.items() if int(m.get("step", 0)) != step)
    if stale:
        raise CheckFailed(f"model {model_id} carries metrics of other steps: {stale}")
    if not any(m.get("dataset_name") for m in metrics.values()):
        raise CheckFailed(f"model {model_id}'s metrics name no dataset (its page: 'Datasets used: None')")
    if not _tags(info).get(tracking.NOTE_TAG):
        raise CheckFailed(f"model {model_id} has no description")
    return model_id


def check_view_selection(code: str) -> None:
    """The built UI reads `workflowType` from the page's URL (genai or machine_learning) before its stored switch,
    which defaults to GenAI: the reason the printed address carries the parameter."""
    if 'get("workflowType")' not in code or '"machine_learning"' not in code:
        raise CheckFailed("the UI's script does not read workflowType=machine_learning from the URL: the printed "
                          "address may not open training runs in this MLflow version")
    if '"mlflow.workflowType"' not in code:
        raise CheckFailed("the UI's script keeps no mlflow.workflowType switch: re-check how it picks its view")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.read().decode("utf-8", "replace")


def chromium_path(given: str | None = None) -> str | None:
    """The headless Chromium to use: `given`, else chromium or chromium-browser on PATH; None if absent."""
    if given:
        return given if shutil.which(given) or Path(given).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(chromium: str, url: str, screenshot: str | Path | None = None, budget_ms: int = 10000) -> str:
    """The text `url` renders in a fresh Chromium profile (scripts run for `budget_ms` of virtual time); with
    `screenshot`, also a PNG of it there."""
    with tempfile.TemporaryDirectory() as profile:
        base = [chromium, *BROWSER_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=240).stdout
    if screenshot is not None:
        with tempfile.TemporaryDirectory() as profile:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([chromium, *BROWSER_FLAGS, f"--user-data-dir={profile}",
                            f"--virtual-time-budget={budget_ms}", f"--screenshot={Path(screenshot).resolve()}", url],
                           capture_output=True, timeout=240)
            if not Path(screenshot).is_file():
                raise CheckFailed(f"chromium wrote no screenshot of {url}")
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def check_browser(chromium: str, base: str, found: dict, screenshot: str | Path | None = None) -> dict:
    """In fresh profiles: the printed address shows the training runs (not the GenAI overview), each model page
    its final metrics and datasets. Returns what each address rendered (its text, shortened)."""
    port = int(base.rsplit(":", 1)[1])
    url = store.browse_url(found["experiment_id"], port=port)
    runs_text = browse(chromium, url, screenshot)
    genai = [w for w in GENAI_WORDS if w in runs_text]
    if genai or "Run Name" not in runs_text:
        raise CheckFailed(f"{url} did not open the training runs (GenAI panels {genai}): {runs_text[:400]}")
    absent = [name for name in found["runs"] if name and name not in runs_text]
    if absent:
        raise CheckFailed(f"{url} does not show the runs {absent}")
    bare_text = browse(chromium, f"{base}/#/experiments/{found['experiment_id']}")
    seen = dict(runs=runs_text[:2000], bare=bare_text[:2000],
                bare_is_genai=any(w in bare_text for w in GENAI_WORDS))
    for model_id in found["models"]:
        page = browse(chromium, f"{base}/#/experiments/{found['experiment_id']}/models/{model_id}"
                                f"?workflowType=machine_learning")
        if not re.search(r"Metrics \(\d+\)", page) or "final/test_accuracy" not in page:
            raise CheckFailed(f"model {model_id}'s page shows no final metrics: {page[:400]}")
        seen[model_id] = page[:2000]
    return seen


# --------------------------------------------------------------------------- a demo store


def demo_store(folder: str | Path, epochs: int = 4) -> str:
    """A tiny synthetic run (4 classes of 8x8 images, warm-up then selection) trained by the command line into
    `folder`/store; returns its tracking URI (experiment "functional_ast")."""
    import torch
    from torchvision.io import write_png

    from functional_ast.cli import main as cli

    folder = Path(folder).resolve()
    images = folder / "images"
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", 24), ("test", 6)):
        for c, name in enumerate(("ant", "bee", "cat", "dog")):
            (images / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = (torch.rand(3, 8, 8, generator=g) * 80 + 40 * c).clamp(0, 255).to(torch.uint8)
                write_png(img, str(images / split / name / f"{i}.png"))
    uri = f"sqlite:///{folder}/store/mlflow.db"
    code = cli.main(["--data", str(images), "--epochs", str(epochs), "--warmup-epochs", "1", "--batch-size", "16",
                     "--target-rate", "0.5", "--tracking-uri", uri, "--no-progress", "--log-every", "2",
                     "--data-root", str(folder / "data"), "--run-name", "demo-sundew"])
    if code != 0:
        raise CheckFailed(f"the demo run failed (exit {code})")
    return uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/check_mlflow_ui.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=store.DEFAULT_TRACKING_URI)
    parser.add_argument("--experiment", default="functional_ast")
    parser.add_argument("--demo", metavar="DIR", help="first train a tiny synthetic run into DIR/store, check that")
    parser.add_argument("--port", type=int, default=store.UI_PORT, help="preferred port (a free one if taken)")
    parser.add_argument("--chromium", default=None, help="headless Chromium (default: chromium on PATH)")
    parser.add_argument("--no-browser", action="store_true", help="REST and route checks only")
    parser.add_argument("--screenshot", default=None, metavar="PNG", help="save the training runs' page here")
    args = parser.parse_args(argv)
    try:
        uri = demo_store(args.demo) if args.demo else args.tracking_uri
        port = free_port(args.port)
        print(f"store {uri}; browse: {store.ui_command(uri)} (here on port {port})", flush=True)
        with mlflow_ui(uri, port) as base:
            found = check_rest(base, args.experiment)
            url = store.browse_url(found["experiment_id"], port=port)
            print(f"REST: experiment {found['experiment_id']} (kind tag {found['kind']}), finished runs "
                  f"{found['runs']}, models {found['models']}: checked", flush=True)
            print(f"UI: {found['script']} reads workflowType from the URL before its stored switch (GenAI by "
                  f"default); training runs: {url}", flush=True)
            chromium = None if args.no_browser else chromium_path(args.chromium)
            if chromium is None:
                print("browser: skipped" + ("" if args.no_browser else " (no chromium; apt-get install chromium)"))
                if args.screenshot:
                    raise CheckFailed("--screenshot needs chromium")
            else:
                seen = check_browser(chromium, base, found, args.screenshot)
                print(f"browser: {url} shows the training runs; {base}/#/experiments/{found['experiment_id']} "
                      f"without workflowType shows "
                      f"{'the GenAI overview' if seen['bare_is_genai'] else 'no GenAI overview'} in a fresh "
                      f"profile; model pages show their final metrics"
                      + (f"; screenshot {args.screenshot}" if args.screenshot else ""), flush=True)
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
