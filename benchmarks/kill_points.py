"""Test support: the command line, SIGKILLed by itself at a chosen point of its work.

    FUNCTIONAL_AST_KILL_AT=checkpoint:3 python -m benchmarks.kill_points FLAGS   (FLAGS: python -m functional_ast's)

`KIND:N` kills the process in the middle of the Nth event of KIND in this process (1-based), where a random instant
rarely lands:

- `start`: the start, the run just created in the MLflow store and its id not yet recorded beside the checkpoints;
- `checkpoint`: a checkpoint write, its temporary file half written (the metrics of that safe point already sent);
- `eval`: an evaluation, after its first batch;
- `flush`: a write of metrics to the MLflow store, half of its points sent;
- `unsent`: the store refuses every metric write of this process (an outage), so each safe point saves the buffer
  in `tracking-unsent/`; the Nth save is killed just before its new copy replaces the old one;
- `model`: the model's upload at the end, its logged-model record created and no file written;
- `end`: the end, the MLflow run finished and result.json not yet written.

`FUNCTIONAL_AST_KILL_AT=count:PATH` kills nothing and writes each kind's count of events to PATH (JSON) at the end.
Only this wrapper reads the variable: it patches torch, MLflow and the trainer in its own process, then runs
`functional_ast.cli.main.main`; the package's own path is unchanged.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import signal
import sys
from pathlib import Path

VARIABLE = "FUNCTIONAL_AST_KILL_AT"
KINDS = ("start", "checkpoint", "eval", "flush", "unsent", "model", "end")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Points:
    """Counts events by kind; `due(kind)` says whether this one is the event to die in."""

    def __init__(self, spec: str):
        kind, _, value = spec.partition(":")
        if kind not in KINDS + ("count",) or not value:
            raise SystemExit(f"{VARIABLE}={spec!r}: expected KIND:N (KIND one of {', '.join(KINDS)}) or count:PATH")
        self.kind = kind
        self.at = int(value) if kind != "count" else None
        self.counts = dict.fromkeys(KINDS, 0)
        if kind == "count":
            atexit.register(lambda: Path(value).write_text(json.dumps(self.counts)))

    def due(self, kind: str) -> bool:
        self.counts[kind] += 1
        return kind == self.kind and self.counts[kind] == self.at


def install(points: Points) -> None:
    """Patch the functions whose middle each kind of kill lands in."""
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    from functional_ast import io as fio
    from functional_ast.train import trainer

    create_run = MlflowClient.create_run

    def run_created(*args, **kwargs):
        run = create_run(*args, **kwargs)
        if points.due("start"):
            die()
        return run

    save = torch.save

    def checkpoint_save(obj, f, *args, **kwargs):
        name = Path(getattr(f, "name", "") or "").name
        if not name.startswith(".step-") or not points.due("checkpoint"):
            return save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: buffer.tell() // 2])
        f.flush()
        os.fsync(f.fileno())
        die()

    evaluate_test = trainer.evaluate_test

    def evaluation(eval_step, *args, **kwargs):
        if not points.due("eval"):
            return evaluate_test(eval_step, *args, **kwargs)

        def first_batch_then_die(*step_args, **step_kwargs):
            eval_step(*step_args, **step_kwargs)
            die()

        return evaluate_test(first_batch_then_die, *args, **kwargs)

    log_batch = MlflowClient.log_batch

    def metrics_write(self, run_id, metrics=(), *args, **kwargs):
        metrics = list(metrics)
        if metrics and points.kind == "unsent":
            points.counts["flush"] += 1
            raise ConnectionError("the store is down (benchmarks.kill_points)")
        if not metrics or not points.due("flush"):
            return log_batch(self, run_id, metrics, *args, **kwargs)
        if len(metrics) > 1:
            log_batch(self, run_id, metrics[: len(metrics) // 2], *args, **kwargs)
        die()

    replace = os.replace

    def publish(src, dst, *args, **kwargs):
        if Path(dst).name == "tracking-unsent" and points.due("unsent"):
            die()
        return replace(src, dst, *args, **kwargs)

    log_model = mlflow.pytorch.log_model

    def model_upload(*args, **kwargs):
        if points.due("model"):
            die()
        return log_model(*args, **kwargs)

    write_json = fio.atomic_write_json

    def result_written(path, *args, **kwargs):
        if Path(path).name == "result.json" and points.due("end"):
            die()
        return write_json(path, *args, **kwargs)

    MlflowClient.create_run = run_created
    fio.atomic_write_json = result_written
    torch.save = checkpoint_save
    trainer.evaluate_test = evaluation
    MlflowClient.log_batch = metrics_write
    os.replace = publish
    mlflow.pytorch.log_model = model_upload


def main(argv: list[str] | None = None) -> int:
    spec = os.environ.get(VARIABLE)
    if spec:
        install(Points(spec))
    from functional_ast.cli.main import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
