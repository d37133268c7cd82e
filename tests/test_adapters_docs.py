"""docs/adapters.md's examples run as written (one test per section, after the page's setup block), and the
proposed README section shows the page's Sampler example unchanged."""

from __future__ import annotations

import os
import re
import socket

import pytest
import torch
import torch.multiprocessing as mp
from conftest import REPO

PAGE = REPO / "docs" / "adapters.md"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread (on a loaded 2-core machine, more only wait for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _sections() -> dict[str, list[str]]:
    """The python blocks of the page, by the heading above them ("setup" for those before the first heading)."""
    out: dict[str, list[str]] = {}
    heading = "setup"
    for part in re.split(r"^(## .*)$", PAGE.read_text(), flags=re.M):
        if part.startswith("## "):
            heading = part[3:].strip()
            continue
        out.setdefault(heading, []).extend(re.findall(r"```python\n(.*?)```", part, re.S))
    return out


def _run(*headings: str) -> dict:
    sections, namespace = _sections(), {}
    for heading in ("setup", *headings):
        for block in sections[heading]:
            exec(compile(block, f"{PAGE.name}: {heading}", "exec"), namespace)
    return namespace


def test_every_adapter_has_an_example_under_ten_lines():
    sections = _sections()
    for heading in ("Plain PyTorch: `Selector`", "Any DataLoader: `Sampler`", "torchrun and DDP", "Lightning",
                    "The honest comparison, from your loop"):
        (block,) = sections[heading]
        assert len([line for line in block.splitlines() if line.strip()]) <= 10, heading


def test_the_selector_example_selects_and_counts():
    counters = _run("Plain PyTorch: `Selector`")["selector"].counters
    assert counters["samples_seen"] == 2 * 512 and 0 < counters["samples_trained"] < counters["samples_seen"]


def test_the_sampler_example_trains_the_selection_and_saves_its_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sampler = _run("Any DataLoader: `Sampler`")["sampler"]
    # 1 warm-up epoch of 16 batches of 32, then 2 epochs of 4 pools of round(32 / 0.3) = 107, training 32 of each
    assert sampler.counters["samples_trained"] == 512 + 2 * 4 * 32
    assert (tmp_path / "sampler.pt").is_file()


def _ddp_example(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    sampler = _run("torchrun and DDP")["sampler"]
    # one epoch of 4 pools of round(32 / 0.3), 32 trained of each, between the two ranks (the counters are global)
    assert sampler.collective.world == world and sampler.counters["samples_trained"] == 4 * 32


def test_the_ddp_example_runs_under_two_processes_as_torchrun_starts_them():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_example, args=(2, port), nprocs=2, join=True)


def test_the_lightning_example_runs():
    pytest.importorskip("lightning")
    selection = _run("Lightning")["selection"]
    assert selection.sampler.counters["samples_trained"] == 2 * 4 * 32


def test_the_comparison_example_reports_paired_differences(capsys):
    namespace = _run("The honest comparison, from your loop")
    out = capsys.readouterr().out
    assert "small_loss minus full:" in out and "small_loss minus random:" in out and "3 seeds" in out
    compare = namespace["compare"]
    assert compare.__module__ == "functional_ast.adapters.compare"


def test_the_readme_section_shows_the_pages_examples():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## In the loop you already have")[1].split("\n## ")[0]
    sampler, selector = re.findall(r"```python\n(.*?)```", section, re.S)
    assert sampler == _sections()["Any DataLoader: `Sampler`"][0]  # each runs in its own test above
    assert selector == _sections()["Plain PyTorch: `Selector`"][0]
    assert all(len(block.splitlines()) <= 10 for block in (sampler, selector))
