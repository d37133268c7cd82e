"""Kill it anywhere, lose nothing (CI's share of `benchmarks.kill_anywhere`): a tracked command-line run SIGKILLed at
a random instant, mid-checkpoint write, mid-evaluation and mid-MLflow write, resumed with --resume each time, ends
bit-identical to the uninterrupted run with one complete MLflow run (every step of every metric once)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

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
