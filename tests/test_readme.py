"""The README's library example runs as written."""

import re

from conftest import REPO


def test_readme_library_example_runs(capsys):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## As a library"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    state = namespace["state"]
    assert int(state["step"]) == 16  # 2 epochs of 512 // 64 batches
    trained = int(state["work", "samples_trained"])
    assert 512 < trained < 2 * 512  # all of epoch 0, a gated share of epoch 1
