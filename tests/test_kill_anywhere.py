"""Kill it anywhere, lose nothing (CI's share of `benchmarks.kill_anywhere`): a tracked command-line run SIGKILLed at
a random instant, mid-checkpoint write, mid-evaluation and mid-MLflow write, resumed with --resume each time, ends
bit-identical to the uninterrupted run with one complete MLflow run (every step of every metric once)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import kill_anywhere as ka


def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_run_and_one_complete_mlflow_run(tmp_path):
    setup = ka.prepare(tmp_path / "setup", log_model=False)
    rng = random.Random(0)
    with ThreadPoolExecutor(3) as pool:  # the runs are subprocesses: side by side where the machine has the cores
        uninterrupted = pool.submit(ka.reference, setup, tmp_path / "uninterrupted")
        # One run killed again and again: in a safe point's checkpoint write (its metrics already sent), in its
        # resume's second evaluation, in the next resume's third write of metrics (half of them sent).
        chain = pool.submit(ka.kill_and_resume, setup, tmp_path / "chain", ["checkpoint:2", "eval:2", "flush:3"],
                            timeout=300)
        ref = uninterrupted.result()
        instant = pool.submit(ka.kill_and_resume, setup, tmp_path / "random", ["random"],
                              lambda: rng.uniform(*ref.window), ref.steps, timeout=300)
        chain, instant = ka.compared(chain.result(), ref), ka.compared(instant.result(), ref)

    assert [a.landed for a in chain.attempts] == ["mid-checkpoint write", "mid-evaluation", "mid-MLflow write",
                                                  "not killed"], chain.problems
    assert chain.problems == []
    assert instant.attempts[0].code != 0 or instant.attempts[0].landed == "finished before the kill"
    assert instant.problems == [], instant.attempts[0].landed


def test_the_check_names_every_gap_duplicate_and_other_value_but_wall_clock_ones():
    ref = {"runs": ["FINISHED"], "status": "FINISHED", "params": {"lr": "0.1", "checkpoint_folder": "a/1"},
           "metrics": {"loss": [(0, 1.0), (1, 0.5), (2, 0.25)], "epoch/train_time_s": [(1, 3.0)]},
           "artifacts": ["loss.png"], "inputs": 1, "models": ["model READY"]}
    assert ka.store_differences(ref, dict(ref, params={"lr": "0.1", "checkpoint_folder": "b/2"},
                                          metrics=dict(ref["metrics"], **{"epoch/train_time_s": [(1, 9.0)]}))) == []
    got = dict(ref, metrics={"loss": [(0, 1.0), (1, 0.5), (1, 0.5), (3, 0.1)], "epoch/train_time_s": [(1, 9.0)]},
               models=["model PENDING", "model READY"])
    assert ka.store_differences(ref, got) == [
        "store: loss twice at steps 1", "store: loss missing at steps 2", "store: loss at steps the run never had, 3",
        "store: models ['model PENDING', 'model READY'], uninterrupted ['model READY']"]
    assert ka.store_differences(ref, dict(ref, runs=["FINISHED", "RUNNING"])) == \
        ["store: 2 runs (FINISHED, RUNNING), not one"]
    assert ka.store_differences(ref, dict(ref, status="RUNNING", metrics={**ref["metrics"], "loss": [(0, 2.0)]})) \
        == ["store: the run is RUNNING, not FINISHED", "store: loss missing at steps 1-2",
            "store: loss has other values at steps 0"]


def test_the_summary_counts_a_kill_that_came_after_the_run_had_finished_apart():
    done = [ka.Trial(Path("a"), ["random"], [ka.Attempt("random", 0, "finished before the kill")]),
            ka.Trial(Path("b"), ["checkpoint:2", "random"], [ka.Attempt("checkpoint:2", -9, "mid-checkpoint write"),
                                                            ka.Attempt("random", -9, "between checkpoints"),
                                                            ka.Attempt(None, 0, "")], ["differs"])]
    out = ka.summary(done)
    assert (out["trials"], out["passed"], out["kills"], out["killed_before_the_end"]) == (2, 1, 3, 2)
    assert out["killed"] == 1 and not ka.killed(done[0]) and ka.killed(done[1])
    assert out["landed"][ka.KINDS["random"]] == {"finished before the kill": 1, "between checkpoints": 1}
