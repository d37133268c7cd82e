"""benchmarks/gpu_check.sh, the script a lent GPU runs: every command of every part parses with its program's own
flags, so a GPU session is not lost to a typo (the commands are recorded by stand-ins, never run here)."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess

import pytest
from conftest import REPO

PARTS = ("steps", "runs", "airbench")


class Parsed(BaseException):
    """Raised once the flags have parsed: nothing is run."""


def _recorded(tmp_path) -> list[list[str]]:
    """The python commands gpu_check.sh runs for every part, with `python` and `nvidia-smi` as stand-ins."""
    bin_dir, log = tmp_path / "bin", tmp_path / "commands.tsv"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/usr/bin/env bash\nprintf "%s\\t" "$@" >> {log}\necho >> {log}\n')
    (bin_dir / "nvidia-smi").write_text("#!/usr/bin/env bash\necho 'name\nStand-in GPU'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", OUT=str(tmp_path / "out"),
               DATA=str(tmp_path / "cifar10-jpeg.tar.gz"))
    out = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), *PARTS], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.rstrip("\t").split("\t") for line in log.read_text().splitlines() if line]


def test_every_command_of_the_gpu_script_parses_with_its_programs_flags(tmp_path, monkeypatch):
    commands = _recorded(tmp_path)
    modules = [c[1] for c in commands]
    assert all(c[0] == "-m" for c in commands)
    assert {"benchmarks.step_speed", "benchmarks.precision_speed", "benchmarks.lm_speed", "benchmarks.savings",
            "experiments.cifar10"} <= set(modules)
    assert any("airbench94" in c for c in commands)  # the airbench part is there
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)  # a bad flag exits 2 here
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for _, module, *args in commands:
        with pytest.raises(Parsed):
            importlib.import_module(module).main(args)


def test_an_unknown_part_is_refused_with_exit_2(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/usr/bin/env bash\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", OUT=str(tmp_path / "out"))
    out = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "stepz"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "unknown part stepz (steps, runs, airbench)" in out.stderr
