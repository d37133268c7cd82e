"""Kill it anywhere, lose nothing: a tracked run SIGKILLed at random instants and at chosen points, resumed until it
finishes, must end as if it had never been killed.

    python -m benchmarks.kill_anywhere [--kills 50] [--seed 0] [--json PATH]

The run is a small one of the command line (`python -m functional_ast`, in a subprocess): 96 8x8 images, a tiny
network, the default rule, 6 epochs (21 steps), a checkpoint every 5 steps, a sqlite MLflow store. It runs once
uninterrupted; then each trial starts it in a folder of its own, kills it (the process group, with SIGKILL) and
resumes it with `--resume` until it finishes. A kill lands at a random instant of the uninterrupted run's life (from
its run folder's record to its exit) or, through `benchmarks.kill_points`, in the middle of a chosen event: the
run's creation in the store, a checkpoint write, an evaluation, a write of metrics to the store, a save of unsent
tracking data, the model's upload, the end (the run finished in the store, result.json not yet written).
Every fourth trial's first resume is killed too, at a random instant. A trial whose run outlived every random
instant drawn for it (on a loaded machine a run can end sooner than the uninterrupted one did) is drawn again, so
every trial counted was killed.

A trial passes when its run ends bit-identical to the uninterrupted one (every tensor of the final checkpoint, the
clock's wall times apart; result.json's numbers but its wall-clock ones) and its store holds one FINISHED run whose
every metric has the uninterrupted run's steps, each once, with the same values (wall-clock ones apart), and the same
params (`UNLIKE_PARAMS` apart), artifacts, dataset inputs and logged model. Prints how many passed, where each
kill landed, and each failure's differences. tests/test_kill_anywhere.py runs `reference`, `kill_and_resume` and
`compared` on a few kills.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT, NAME = "kill", "kill"
# Params that differ without a fault: the run folder's name; --resume, logged by a resume when its killed start had
# created the run and not yet logged its params.
UNLIKE_PARAMS = ("checkpoint_folder", "resume")
WALL_CLOCK = ("train_time_s", "eval_time_s", "samples_per_s", "flops_per_s", "gflop_per_s")  # keys ending so
KINDS = {"random": "random instant", "start": "run created, id unrecorded", "checkpoint": "mid-checkpoint write",
         "eval": "mid-evaluation", "flush": "mid-MLflow write", "unsent": "mid-save of unsent tracking",
         "model": "mid-model upload", "end": "run finished, result.json unwritten"}  # kill_points' kinds and random
OUTLIVED = "finished before the kill"  # a random instant after the run's end: that start was not killed
RETRIES = 5  # a trial no kill reached (its run outlived every instant drawn) is drawn again, at most this often
CYCLE = ("random", "checkpoint", "random", "eval", "random", "flush", "random", "unsent", "random", "model", "random",
         "start", "random", "end")


def tiny_net(num_classes: int, in_channels: int) -> nn.Module:
    """The run's network (`--model benchmarks.kill_anywhere:tiny_net`): a convolution with batch norm, pooled."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


@dataclass(frozen=True)
class Setup:
    """What every run shares: `root` holds the images, the decoded-data cache and an empty store to copy."""

    root: Path
    log_model: bool = True

    def flags(self, folder: Path) -> list[str]:
        """The command's flags for a run in `folder` (its store and checkpoints there)."""
        return ["--data", str(self.root / "images"), "--data-root", str(self.root / "cache"),
                "--model", "benchmarks.kill_anywhere:tiny_net", "--strategy", "sundew_remembered",  # gate + controller
                "--epochs", "6", "--warmup-epochs", "1",
                "--cooldown-epochs", "0", "--batch-size", "16", "--pool-size", "32", "--target-rate", "0.25",
                "--checkpoint-every", "5", "--log-every", "3", "--no-progress",
                "--tracking-uri", f"sqlite:///{folder / 'store' / 'mlflow.db'}", "--experiment", EXPERIMENT,
                "--run-name", NAME] + ([] if self.log_model else ["--no-log-model"])


def runs_dir(folder: Path) -> Path:
    """Where the run's folders (one per start, `<stamp>-<pid>`) are made."""
    return folder / "store" / "checkpoints" / EXPERIMENT / NAME


def prepare(root: Path, log_model: bool = True) -> Setup:
    """Write the images (4 classes, 24 training and 6 test images each, 8x8), their decoded cache (so that every
    run's life is as long as the uninterrupted one's) and an empty store under `root`."""
    from mlflow.tracking import MlflowClient
    from torchvision.io import write_png

    from functional_ast.data.images import load_dataset

    g = torch.Generator().manual_seed(0)
    for split, count in (("train", 24), ("test", 6)):
        for c in range(4):
            folder = root / "images" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = (torch.rand(3, 8, 8, generator=g) * 80 + 40 * c).clamp(0, 255).to(torch.uint8)
                write_png(pixels, str(folder / f"{i}.png"))
    load_dataset(root / "images", root=root / "cache")
    (root / "empty-store").mkdir()
    MlflowClient(f"sqlite:///{root / 'empty-store' / 'mlflow.db'}").search_experiments()  # creates the tables
    return Setup(root, log_model)


def _new_folder(setup: Setup, folder: Path) -> None:
    (folder / "store").mkdir(parents=True)
    shutil.copyfile(setup.root / "empty-store" / "mlflow.db", folder / "store" / "mlflow.db")


# --------------------------------------------------------------------------- one start of the command


@dataclass
class Attempt:
    """One start of the command: the kill it was given ("random", "checkpoint:2", None: none), its exit code,
    where the kill landed, the end of its output."""

    kill: str | None
    code: int
    landed: str
    tail: str = ""


def _start(setup: Setup, folder: Path, resume: bool, kill: str | None, log: Path) -> subprocess.Popen:
    injected = kill is not None and kill != "random"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("FUNCTIONAL_AST_KILL_AT", None)
    if injected:
        env["FUNCTIONAL_AST_KILL_AT"] = kill
    program = "benchmarks.kill_points" if injected else "functional_ast"
    argv = [sys.executable, "-m", program, *setup.flags(folder), *(["--resume"] if resume else [])]
    with open(log, "w") as out:
        return subprocess.Popen(argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _landing(folder: Path, pid: int, steps: int) -> str:
    """Where a kill of process `pid` landed, read from what it left on disk."""
    found = [f for f in runs_dir(folder).glob("*") if (f / "run.json").is_file()]
    if not found:
        return "before the run existed"
    run = max(found, key=lambda f: (f / "run.json").stat().st_mtime)
    if (run / "result.json").is_file():
        return "after result.json"
    if list(run.glob(f".step-*.pt.tmp-{pid}")):
        return "mid-checkpoint write"
    if list(run.glob(f".tracking-unsent.tmp-{pid}")):
        return "mid-save of unsent tracking"
    checkpoints = sorted(run.glob("step-*.pt"))
    if not checkpoints:
        return "before the first checkpoint"
    if steps and int(checkpoints[-1].stem.split("-")[1]) >= steps:
        return "after the last checkpoint"
    return "between checkpoints"


def attempt(setup: Setup, folder: Path, resume: bool, kill: str | None, delay: float, steps: int,
            timeout: float = 600) -> Attempt:
    """Start the command in `folder` (`--resume` with `resume`) and wait for its end: SIGKILLed after `delay` seconds
    when `kill` is "random", killing itself at `kill`'s point (`benchmarks.kill_points`) when it names one."""
    log = folder / f"attempt-{len(list(folder.glob('attempt-*.log')))}.log"
    proc = _start(setup, folder, resume, kill, log)
    landed = "not killed"
    try:
        if kill == "random":
            try:
                proc.wait(delay)
                landed = OUTLIVED
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                landed = _landing(folder, proc.pid, steps)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        landed = f"hung for {timeout:.0f} s"
    if kill not in (None, "random"):
        landed = KINDS[kill.split(":")[0]] if proc.returncode == -signal.SIGKILL else "its point never came"
    return Attempt(kill, proc.returncode, landed, log.read_text(errors="replace")[-3000:])


# --------------------------------------------------------------------------- what a finished run left


@dataclass
class Record:
    """What a finished run left: its final checkpoint's state, its result.json and its experiment's store."""

    state: object  # TensorDict
    result: dict
    store: dict


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(out)


def store_record(uri: str, experiment: str = EXPERIMENT) -> dict:
    """The experiment's runs (statuses) and, of its newest run, every metric point, params, artifacts, dataset
    inputs and logged models."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {"runs": []}
    runs = client.search_runs([found.experiment_id], run_view_type=ViewType.ALL, order_by=["start_time DESC"])
    if not runs:
        return {"runs": []}
    run = runs[0]
    run_id = run.info.run_id
    metrics = {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
               for key in run.data.metrics}
    models = client.search_logged_models([found.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    return {"runs": [r.info.status for r in runs], "status": run.info.status, "metrics": metrics,
            "params": dict(run.data.params), "artifacts": _artifacts(client, run_id),
            "inputs": len(run.inputs.dataset_inputs), "models": sorted(f"{m.name} {m.status}" for m in models)}


def record(folder: Path) -> Record:
    """The Record of the finished run in `folder` (the one run folder holding result.json)."""
    from functional_ast.edges import checkpoint

    (run,) = [f for f in runs_dir(folder).glob("*") if (f / "result.json").is_file()]
    state, _ = checkpoint.load(checkpoint.latest(run))
    return Record(state, json.loads((run / "result.json").read_text()),
                  store_record(f"sqlite:///{folder / 'store' / 'mlflow.db'}"))


# --------------------------------------------------------------------------- the comparison


def _timeless(state):
    """The state without its wall-clock: the clock, and the epoch table's time columns set to 0."""
    from functional_ast.core.state import EPOCH_COLUMNS, with_parts

    epochs = state["history", "epochs"].clone()
    for column in ("train_time_s", "eval_time_s"):
        epochs[:, EPOCH_COLUMNS.index(column)] = 0.0
    return with_parts(state.exclude("clock"), history={"epochs": epochs})


def _numbers(value, prefix: str = "") -> dict[str, float]:
    """A JSON value's numbers by path, wall-clock ones and the MLflow run id left out."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {} if prefix.endswith(WALL_CLOCK) or prefix.endswith("mlflow_run_id") else {prefix: value}
    out = {}
    for key, item in items:
        out.update(_numbers(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _same(a, b) -> bool:
    nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return nan or a == b


def _spans(steps) -> str:
    """Steps as runs, "0-4, 9", at most 8 runs."""
    steps, runs = sorted(set(steps)), []
    for s in steps:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:8])
    return text + (" ..." if len(runs) > 8 else "")


def store_differences(reference: dict, got: dict) -> list[str]:
    """How a trial's store falls short of one complete run like the uninterrupted one's."""
    if len(got["runs"]) != 1:
        return [f"store: {len(got['runs'])} runs ({', '.join(got['runs'])}), not one"]
    problems = [] if got["status"] == "FINISHED" else [f"store: the run is {got['status']}, not FINISHED"]
    for key in sorted(set(reference["metrics"]) | set(got["metrics"])):
        want, have = dict(reference["metrics"].get(key, [])), got["metrics"].get(key, [])
        steps = [s for s, _ in have]
        twice = [s for s, n in Counter(steps).items() if n > 1]
        if twice:
            problems.append(f"store: {key} twice at steps {_spans(twice)}")
        if missing := set(want) - set(steps):
            problems.append(f"store: {key} missing at steps {_spans(missing)}")
        if extra := set(steps) - set(want):
            problems.append(f"store: {key} at steps the run never had, {_spans(extra)}")
        if not key.endswith(WALL_CLOCK):
            if off := [s for s, v in have if s in want and not _same(v, want[s])]:
                problems.append(f"store: {key} has other values at steps {_spans(off)}")
    params = {k for k in set(reference["params"]) | set(got["params"]) if k not in UNLIKE_PARAMS
              and reference["params"].get(k) != got["params"].get(k)}
    if params:
        problems.append(f"store: params differ: {', '.join(sorted(params))}")
    for part in ("artifacts", "inputs", "models"):
        if reference[part] != got[part]:
            problems.append(f"store: {part} {got[part]}, uninterrupted {reference[part]}")
    return problems


def differences(reference: Record, got: Record) -> list[str]:
    """Every way `got` differs from the uninterrupted `reference`: state leaves, result.json numbers, the store."""
    from functional_ast.core.state import differing_leaves

    problems = [f"state: {key} differs" for key in differing_leaves(_timeless(reference.state), _timeless(got.state))]
    want, have = _numbers(reference.result), _numbers(got.result)
    problems += [f"result.json: {key} is {have.get(key)!r}, uninterrupted {want.get(key)!r}"
                 for key in sorted(set(want) | set(have)) if not _same(want.get(key), have.get(key))]
    return problems + store_differences(reference.store, got.store)


# --------------------------------------------------------------------------- the uninterrupted run and a trial


@dataclass
class Reference:
    """The uninterrupted run: its Record, its events by kind (`benchmarks.kill_points` counts), its steps, and the
    span of its life a random kill is drawn from (seconds from its start: its run.json written, its exit)."""

    record: Record
    events: dict[str, int]
    steps: int
    window: tuple[float, float]


def reference(setup: Setup, folder: Path) -> Reference:
    """Run the command uninterrupted in `folder` (through `benchmarks.kill_points` counting its events)."""
    _new_folder(setup, folder)
    counts = folder / "events.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), FUNCTIONAL_AST_KILL_AT=f"count:{counts}")
    start = time.monotonic()
    with open(folder / "attempt-0.log", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.kill_points", *setup.flags(folder)], cwd=folder,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    born = None
    while proc.poll() is None:
        if born is None and list(runs_dir(folder).glob("*/run.json")):
            born = time.monotonic() - start
        time.sleep(0.02)
    end = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed ({proc.returncode}): "
                           f"{(folder / 'attempt-0.log').read_text()[-2000:]}")
    got = record(folder)
    return Reference(got, json.loads(counts.read_text()), int(got.result["summary"]["steps"]), (born or 0.0, end))


@dataclass
class Trial:
    """A killed run resumed to its end: its folder, its kills, every start, and what went wrong (a start that failed,
    or, once `compared`, how its end differs from the uninterrupted run)."""

    folder: Path
    kills: list[str]
    attempts: list[Attempt] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def kill_and_resume(setup: Setup, folder: Path, kills: list[str], instant: Callable[[], float] = lambda: 0.0,
                    steps: int = 0, timeout: float = 600) -> Trial:
    """Start the run in `folder`, kill it as `kills` say (the first start by the first, its resume by the second...;
    "random" after `instant()` seconds, `steps` saying where that landed), resume it with --resume until it finishes
    (afresh when a kill came before the run existed)."""
    _new_folder(setup, folder)
    out, resume = Trial(folder, list(kills)), False
    for n in range(len(kills) + 4):
        kill = kills[n] if n < len(kills) else None
        done = attempt(setup, folder, resume, kill, instant() if kill == "random" else 0.0, steps, timeout)
        out.attempts.append(done)
        if done.code == 0:
            break
        if done.code == 2 and "no run named" in done.tail:  # killed before its run.json: start it again
            resume = False
            continue
        if done.code != -signal.SIGKILL:
            out.problems.append(f"start {n} exited with {done.code}: {done.tail[-1500:]}")
            return out
        resume = True
    else:
        out.problems.append("the run never finished")
    return out


def compared(done: Trial, ref: Reference) -> Trial:
    """`done`, with its differences from the uninterrupted run `ref` among its problems (if it finished)."""
    if not done.problems:
        done.problems += differences(ref.record, record(done.folder))
    return done


def trial(setup: Setup, ref: Reference, folder: Path, kills: list[str], rng: random.Random,
          timeout: float = 600) -> Trial:
    """A killed and resumed run (`kill_and_resume`, random kills uniform over `ref.window`), compared with `ref`."""
    return compared(kill_and_resume(setup, folder, kills, lambda: rng.uniform(*ref.window), ref.steps, timeout), ref)


def plan(i: int, ref: Reference, rng: random.Random) -> list[str]:
    """Trial `i`'s kills: its kind by `CYCLE` (a chosen point's event drawn among the uninterrupted run's), and
    every fourth trial a random kill of the first resume too."""
    kind = CYCLE[i % len(CYCLE)]
    events = {**ref.events, "unsent": ref.events["checkpoint"]}  # a fallback save at each safe point
    first = kind if kind == "random" else f"{kind}:{rng.randint(1, max(1, events[kind]))}"
    return [first, "random"] if i % 4 == 3 else [first]


def killed(done: Trial) -> bool:
    """Whether some kill of the trial came before its run's end."""
    return any(a.kill is not None and a.landed != OUTLIVED for a in done.attempts)


def summary(trials: list[Trial]) -> dict:
    """Passed count and where each kill landed, by kind."""
    landed: dict[str, Counter] = {}
    for t in trials:
        for a in t.attempts:
            if a.kill is not None:
                landed.setdefault(KINDS[a.kill.split(":")[0]], Counter())[a.landed] += 1
    attempts = [a for t in trials for a in t.attempts if a.kill is not None]
    return {"trials": len(trials), "passed": sum(t.passed for t in trials),
            "killed": sum(killed(t) for t in trials), "kills": len(attempts),
            "killed_before_the_end": sum(a.landed != OUTLIVED for a in attempts),
            "landed": {kind: dict(c) for kind, c in landed.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kill_anywhere", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="trials: runs killed and resumed (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random instants and chosen events")
    parser.add_argument("--json", type=Path, default=None, help="write the trials and the summary here")
    parser.add_argument("--keep", type=Path, default=None, help="keep every run's folder here (default: deleted)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kill-anywhere-") as tmp:
        root = args.keep or Path(tmp)
        setup = prepare(root / "setup")
        ref = reference(setup, root / "uninterrupted")
        print(f"uninterrupted: {ref.steps} steps, events {ref.events}, killed between {ref.window[0]:.1f} s and "
              f"{ref.window[1]:.1f} s at random", flush=True)
        trials = []
        redrawn = 0
        for i in range(args.kills):
            kills = plan(i, ref, rng)
            for again in range(RETRIES):
                done = trial(setup, ref, root / f"trial-{i:03d}-{again}", kills, rng)
                if killed(done) or again == RETRIES - 1:  # the last draw counts as it is (`killed` says so)
                    break
                redrawn += 1
                print(f"trial {i}: the run outlived its random instant, not killed: drawn again", flush=True)
            trials.append(done)
            landed = "; ".join(f"{a.kill}: {a.landed}" for a in done.attempts if a.kill)
            print(f"trial {i}: {'identical' if done.passed else 'DIFFERS'} ({landed}, {len(done.attempts)} starts)"
                  + "".join(f"\n    {p}" for p in done.problems[:12]), flush=True)
    out = dict(summary(trials), redrawn=redrawn)
    print(f"\n{out['passed']} of {out['trials']} runs ended bit-identical with one complete MLflow run, "
          f"{out['killed']} of them killed before their end ({out['kills']} kills, {out['killed_before_the_end']} "
          f"before a run's end; {redrawn} trials drawn again, their run having outlived the instant; load average "
          f"{os.getloadavg()[0]:.1f})")
    for kind, counts in out["landed"].items():
        print(f"  {kind:<28} {sum(counts.values()):>3}  " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    if args.json:
        args.json.write_text(json.dumps(dict(out, seed=args.seed, trials_detail=[
            dict(kills=t.kills, problems=t.problems, attempts=[dict(kill=a.kill, code=a.code, landed=a.landed)
                                                              for a in t.attempts]) for t in trials]), indent=1))
    return 0 if out["passed"] == out["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
