"""The README's library examples run as written."""

import re

from conftest import REPO


def _blocks():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## As a library"):text.index("## Architecture")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_fit_example_runs(capsys):
    namespace: dict = {}
    exec(compile(_blocks()[0], "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.summary["epochs"] == 3 and len(result.history.epochs) == 3
    # epoch 1 on all 1024, then per epoch 4 pools of round(64 / 0.3) = 213, training 64 of each
    assert result.summary["samples_trained"] == 1024 + 2 * 4 * 64
    assert "epoch 3: test acc" in capsys.readouterr().out


def test_readme_text_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the corpus cache goes to the data root, nothing to the working directory
    namespace: dict = {}
    exec(compile(_blocks()[1], "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.summary["epochs"] == 2 and result.summary["strategy"] == "small_loss"
    assert 0 < result.summary["test_bits_per_byte"] < 8  # below a uniform byte's 8 bits after 2 epochs
    assert list(tmp_path.iterdir()) == []  # the corpus cache is in the data root, not the working directory


def test_readme_step_example_runs(capsys):
    namespace: dict = {}
    exec(compile(_blocks()[2], "README.md", "exec"), namespace)
    state = namespace["state"]
    assert int(state["step"]) == 16  # 2 epochs of 512 // 64 batches
    trained = int(state["work", "samples_trained"])
    assert 512 < trained < 2 * 512  # all of epoch 0, a gated share of epoch 1
