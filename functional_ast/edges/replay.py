"""Upload what a run could not send: a `tracking-unsent` folder into its run (`python -m functional_ast.cli.tracking
replay DIR`)."""

from __future__ import annotations

import json
from pathlib import Path

from functional_ast.edges.tracking import RunTracker
from functional_ast.io import recovered_dir


def replay(folder: str | Path, tracking_uri: str | None = None) -> str:
    """Upload a `tracking-unsent` folder into its run (or a new run); returns the run id."""
    folder = recovered_dir(folder)
    if not (folder / "run.json").is_file():
        raise ValueError(f"{folder} is not a tracking-unsent folder (no run.json)")
    meta = json.loads((folder / "run.json").read_text())
    tracker = RunTracker(tracking_uri or meta["tracking_uri"], meta["experiment"], meta["run_name"],
                         parent_run_id=meta["parent_run_id"], run_id=meta["run_id"], tags=meta.get("run_tags"))
    if not tracker.online:
        raise RuntimeError(f"MLflow store {tracker.tracking_uri} is still unreachable; nothing was uploaded")
    tracker.adopt(folder)
    if not tracker.flush():
        raise RuntimeError("the upload failed part-way; the folder is kept, run the command again")
    tracker.client.set_terminated(tracker.run_id, status="FINISHED")
    return tracker.run_id
