"""The torchrl decision's benchmark runs and prints both jobs' ratios (skipped where torchrl is not installed)."""

from __future__ import annotations

import builtins

import pytest

from benchmarks import torchrl_choice


def test_it_times_both_jobs_against_torchrl(capsys, tmp_path):
    import json

    pytest.importorskip("torchrl")
    assert torchrl_choice.main(["--sizes", "2000", "--k", "64", "--context", "16", "--repeats", "2",
                                "--json", str(tmp_path / "t.json")]) == 0
    written = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [(r["job"], r["n"]) for r in written] == [("prioritised draw + update", 2000),
                                                     ("gather windows from memmap", 2000)]
    assert all(r["ratio"] == r["torchrl_ms"] / r["ours_ms"] for r in written)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "2,000" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| prioritised draw + update", "| gather windows from memmap"]
    assert all(float(row.rstrip(" |").rsplit("| ", 1)[1]) > 0 for row in rows)


def test_without_torchrl_it_says_how_to_install_it(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_torchrl(name, *args, **kwargs):
        if name.startswith("torchrl"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchrl)
    assert torchrl_choice.main(["--sizes", "100"]) == 2
    assert "pip install torchrl" in capsys.readouterr().err
