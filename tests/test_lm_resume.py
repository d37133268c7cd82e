"""A language-modelling run killed with SIGKILL resumes from its checkpoint to exactly the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import REPO, assert_tree_equal
from test_text_data import _corpus_dir

import functional_ast as fa
from functional_ast import models
from functional_ast.data import text
from functional_ast.edges import checkpoint
from functional_ast.edges.callbacks import Checkpoints
from functional_ast.tasks import language_modelling

EPOCHS = 30
SCRIPT = """
import sys
from functional_ast import TrainConfig, fit, models
from functional_ast.data import text
from functional_ast.edges.callbacks import Checkpoints
from functional_ast.tasks import language_modelling
src, root, folder, epochs = sys.argv[1:5]
train, test = text.split(text.load_corpus(src, root=root), 16, 0.34, 0)
config = TrainConfig(strategy="sundew", epochs=int(epochs), batch_size=8, target_rate=0.5, optimizer="adam", lr=3e-3)
fit(lambda: models.gpt(context=16, depth=1, width=16, heads=2), train, test, config, task=language_modelling(),
    callbacks=[Checkpoints(folder)], safe_point_every=5)
"""


def _fit(train, test, folder, state=None):
    config = fa.TrainConfig(strategy="sundew", epochs=EPOCHS, batch_size=8, target_rate=0.5, optimizer="adam",
                            lr=3e-3)
    return fa.fit(lambda: models.gpt(context=16, depth=1, width=16, heads=2), train, test, config,
                  task=language_modelling(), callbacks=[Checkpoints(folder)], safe_point_every=5, state=state)


def test_a_killed_lm_run_resumes_bit_exactly(tmp_path):
    src, root, folder = _corpus_dir(tmp_path / "src", files=6, lines=12), tmp_path / "cache", tmp_path / "run"
    text.load_corpus(src, root=root)  # the cache exists before the child starts
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(src), str(root), str(folder), str(EPOCHS)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if any(int(p.stem.split("-")[1]) >= 20 for p in folder.glob("step-*.pt")):
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (folder / "result.json").exists()  # killed part-way
    train, test = text.split(text.load_corpus(src, root=root), 16, 0.34, 0)
    resumed = _fit(train, test, folder, state=checkpoint.load(checkpoint.latest(folder))[0])
    uninterrupted = _fit(train, test, tmp_path / "reference")
    assert_tree_equal(resumed.state.exclude("clock", ("history", "epochs")),
                      uninterrupted.state.exclude("clock", ("history", "epochs")))
    assert resumed.summary["test_bits_per_byte"] == uninterrupted.summary["test_bits_per_byte"]
    assert [e["test_loss"] for e in resumed.history.epochs] == [e["test_loss"] for e in uninterrupted.history.epochs]
