"""The typed summary and the package's manners: one declared Summary read by attribute everywhere, no task-kind
branch outside tasks/ and data/, no global side effects on import or in fit, and --joules-per-gflop wired through."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import functional_ast as fa
from functional_ast.train.base import Summary

PACKAGE = Path(fa.__file__).resolve().parent


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def _tensors(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _fit(**changes):
    config = fa.TrainConfig(**dict(dict(strategy="stale", epochs=2, batch_size=16, cooldown_epochs=0), **changes))
    return fa.fit(_net, _tensors(), _tensors(16, 1), config)


def test_a_summary_has_its_declared_fields_the_tasks_metrics_and_the_rules_and_nothing_else():
    s = _fit().summary
    assert isinstance(s, Summary) and s.headline == "accuracy" and s.test_accuracy == s.result == s.test["accuracy"]
    assert s.test_loss == s.test["loss"] and s["samples_trained"] == s.samples_trained
    with pytest.raises(AttributeError, match="no field 'test_bits_per_byte'"):
        _ = s.test_bits_per_byte
    with pytest.raises(KeyError):
        _ = s["joules_per_gflop"]
    again = Summary.from_dict(s.to_dict())
    assert again == s
    old = {k: v for k, v in s.to_dict().items() if k not in ("headline", "higher_is_better", "selective_epochs",
                                                               "epochs_cut_short", "test_loss")}
    assert Summary.from_dict(old).test_accuracy == s.test_accuracy  # a result.json from before the typed summary


def test_the_phases_as_they_ran_are_in_the_summary():
    s = _fit(strategy="stale", epochs=4, warmup_epochs=1, cooldown_epochs=1).summary
    assert (s.epochs, s.warmup_epochs, s.selective_epochs, s.cooldown_epochs, s.epochs_cut_short) == (4, 1, 2, 1, 0)
    full = _fit(strategy="full", epochs=2).summary
    assert (full.warmup_epochs, full.selective_epochs, full.cooldown_epochs) == (0, 0, 0)


def test_the_package_reads_summaries_by_attribute_only():
    found = []
    for path in PACKAGE.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"summary\[|summary\.get\(|summary\.update\(", code) and path.name != "base.py":
                found.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


def test_no_module_outside_tasks_and_data_branches_on_the_kind_of_task():
    patterns = [r"\.kind\s*[!=]=", r"isinstance\([^)]*(ImageData|TextData|Windows)", r"[\'\"] in summary\b",
                r"hasattr\(run\.data", r"\"test_bits_per_byte\" in", r"is_text\("]
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("tasks", "data"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if any(re.search(p, line.split("#")[0]) for p in patterns):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


def test_importing_the_package_leaves_matplotlib_alone():
    code = ("import sys, functional_ast; "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
            "import matplotlib; assert matplotlib.rcParams['backend'] is not None")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_fit_leaves_the_callers_random_generator_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    _fit()
    assert torch.equal(torch.random.get_rng_state(), before)
    first = _fit().state["params"]
    again = _fit().state["params"]
    assert all(torch.equal(first[k], again[k]) for k in first.keys())  # still seeded by the config


def test_trackers_do_not_share_their_peers():
    a = fa.MLflowTracking("sqlite:///unused.db", "e", "a")
    b = fa.MLflowTracking("sqlite:///unused.db", "e", "b")
    a.peers[("full", 0)] = [{}]
    assert b.peers == {}
    shared = {}
    c = fa.MLflowTracking("sqlite:///unused.db", "e", "c", peers=shared)
    assert c.peers is shared


def test_joules_per_gflop_prices_the_energy_estimate(tmp_path):
    config = fa.TrainConfig(strategy="full", epochs=1, batch_size=16)
    priced = fa.fit(_net, _tensors(), _tensors(16, 1), config, joules_per_gflop=2.5).summary
    assert priced.energy_j == pytest.approx(priced.flops_spent / 1e9 * 2.5)
    assert "2.5 J/GFLOP" in priced.energy_kind
    from functional_ast.cli import main as cli

    images, labels = _tensors()
    folder = tmp_path / "set"
    for split in ("train", "test"):
        for c in range(3):
            (folder / split / f"c{c}").mkdir(parents=True)
    from torchvision.io import write_png

    for i in range(48):
        write_png(images[i], str(folder / ("train" if i < 36 else "test") / f"c{int(labels[i])}" / f"{i}.png"))
    summary = cli.train(cli.build_parser().parse_args([
        "--data", str(folder), "--strategy", "full", "--epochs", "1", "--batch-size", "8", "--joules-per-gflop",
        "4", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--data-root", str(tmp_path / "cache"),
        "--no-progress", "--no-log-model", "--checkpoint-dir", str(tmp_path / "ck")]))
    assert summary.energy_j == pytest.approx(summary.flops_spent / 1e9 * 4)
