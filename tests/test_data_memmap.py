"""The decoded cache as a memory map: batches gathered from the file, an optional in-memory copy, a decode that
resumes where it was killed, and no full copy of a memory-mapped set when it trains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_tree_equal
from tensordict import MemoryMappedTensor
from torch import nn
from torchvision.io import write_png

import functional_ast as fa
from functional_ast.cli import main as cli
from functional_ast.data import cache as data_cache
from functional_ast.data import decode as data_decode
from functional_ast.data import images as D
from functional_ast.data import placement as data_placement
from functional_ast.data import splits as data_splits
from functional_ast.train.trainer import Data


def _tree(root: Path, layout: dict[str, dict[str, str]], size=(8, 8)) -> Path:
    """Write PNGs root/<split>/<class>/<i>.png; a layout value is one letter per image, "g" grayscale, "c" colour."""
    seed = 0
    for split, classes in layout.items():
        for cls, kinds in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i, kind in enumerate(kinds):
                seed += 1
                g = torch.Generator().manual_seed(seed)
                pixels = torch.randint(0, 256, (1 if kind == "g" else 3, *size), dtype=torch.uint8, generator=g)
                write_png(pixels, str(root / split / cls / f"{i}.png"))
    return root


COLOUR = {"train": {"a": "ccccc", "b": "cccc", "c": "ccc"}, "test": {"a": "cc", "b": "c", "c": "cc"}}


def _equal(x: D.LabelledImages, y: D.LabelledImages) -> bool:
    return x.classes == y.classes and x.data.keys() == y.data.keys() and all(
        torch.equal(x.data[k], y.data[k]) for k in x.data.keys())


def test_a_cached_set_is_memory_mapped_and_trains_bit_identically_to_one_in_memory(tmp_path):
    src = _tree(tmp_path / "src", COLOUR)
    mapped = D.load_dataset(src, root=tmp_path / "r", data_in_memory="off")
    copied = D.load_dataset(src, root=tmp_path / "r", data_in_memory="on")
    assert all(D.is_mapped(ds) for ds in mapped) and not any(D.is_mapped(ds) for ds in copied)
    assert mapped[0].data["image"].filename.startswith(str(tmp_path / "r" / "cache"))
    assert all(_equal(m, c) for m, c in zip(mapped, copied))
    assert _equal(mapped[0], D.load_dataset(src, cache=False)[0])  # as decoded without the cache
    mean, std = D.channel_stats(copied[0].data["image"])
    kwargs = dict(seed=3, epoch=1, augment=True, mean=mean, std=std, drop_last=False)
    for a, b in zip(D.iterate_batches(mapped[0], 4, **kwargs), D.iterate_batches(copied[0], 4, **kwargs)):
        assert (a == b).all()
    subset = D.balanced_subset(mapped[0], 6, seed=1)  # gathered into a file-backed map, not into memory
    assert D.is_mapped(subset) and _equal(subset, D.balanced_subset(copied[0], 6, seed=1))
    noisy = D.with_label_noise(subset, 0.5, seed=0)  # a labels-only copy
    assert noisy.data["image"] is subset.data["image"]

    config = fa.TrainConfig(strategy="stale", epochs=2, warmup_epochs=1, batch_size=4, target_rate=0.5, seed=2)
    results = []
    for train, test, mode in ((*mapped, "off"), (*copied, "on")):
        data = Data.prepare(train, test, "cpu", label_noise=0.25, seed=2, data_in_memory=mode)
        assert D.is_mapped(data.train) == (mode == "off")
        results.append(fa.fit(_net(), data, None, config))
        assert D.is_mapped(data.train) == (mode == "off")
    untimed = [r.state.exclude("clock", ("history", "epochs")) for r in results]  # all but the wall-clock times
    assert_tree_equal(*untimed)
    assert results[0].summary["test_accuracy"] == results[1].summary["test_accuracy"]


def _net(features: int = 3 * 8 * 8, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))


def test_auto_copies_what_fits_and_bad_values_are_one_line(tmp_path, monkeypatch):
    src = _tree(tmp_path / "src", COLOUR)
    image_bytes = D.load_dataset(src, root=tmp_path / "r", data_in_memory="off")[0].data["image"].numel()
    monkeypatch.setattr(data_placement, "_available_memory", lambda: int(image_bytes / D.MEMORY_FRACTION) + 1)
    assert not D.is_mapped(D.load_dataset(src, root=tmp_path / "r")[0])  # just under the share: copied
    monkeypatch.setattr(data_placement, "_available_memory", lambda: int(image_bytes / D.MEMORY_FRACTION))
    train = D.load_dataset(src, root=tmp_path / "r")[0]
    assert D.is_mapped(train)  # the share reached: left mapped
    assert D.is_mapped(D.placed(train, "cpu", "auto")) and not D.is_mapped(D.placed(train, "cpu", "on"))
    assert D.placed(train, "cuda", "off") is train  # a GPU run with "off" gathers each batch from the map
    with pytest.raises(D.DataError, match="auto, on, off"):
        D.placed(train, "cpu", "sometimes")
    args = cli.build_parser().parse_args(["--data", str(src), "--data-in-memory", "off"])
    assert args.data_in_memory == "off"


_KILLED_AFTER_TWO_CHUNKS = """
import os, signal, sys
from functional_ast.data import cache, images as D
from functional_ast.data import decode as data_decode
cache._CHUNK, decode, calls = 2, data_decode._decode, []
def killed_after_two(files, image_size, where):
    calls.append(1)
    if len(calls) > 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return decode(files, image_size, where)
data_decode._decode = killed_after_two
D.load_dataset(sys.argv[1], root=sys.argv[2])
"""


@pytest.mark.parametrize("stop", ["interrupt", "sigkill"])
def test_an_interrupted_decode_resumes_where_it_stopped_and_loses_nothing(tmp_path, monkeypatch, stop):
    # train's first chunk is grayscale, later ones colour: the images file turns 3-channel mid-decode
    src = _tree(tmp_path / "src", {"train": {"a": "ggg", "b": "ccc"}, "test": {"a": "gg", "b": "c"}})
    expected = D.load_dataset(src, cache=False)
    monkeypatch.setattr(data_cache, "_CHUNK", 2)
    decode, calls = data_decode._decode, []

    def interrupted_after_two(files, image_size, where):
        calls.append(len(files))
        if len(calls) > 2:
            raise KeyboardInterrupt  # as a Ctrl-C between chunks
        return decode(files, image_size, where)

    if stop == "sigkill":  # killed outright, in a process of its own
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-c", _KILLED_AFTER_TWO_CHUNKS, str(src), str(tmp_path / "r")],
                              env=env, capture_output=True, timeout=120)
        assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    else:
        monkeypatch.setattr(data_decode, "_decode", interrupted_after_two)
        with pytest.raises(KeyboardInterrupt):
            D.load_dataset(src, root=tmp_path / "r")
    cache = tmp_path / "r" / "cache"
    (partial,) = cache.iterdir()
    assert partial.name.startswith(".") and partial.name.endswith(".partial")  # never read as complete
    assert data_cache.read_cache(cache / partial.name[1:-len(".partial")]) is None
    monkeypatch.setattr(data_decode, "_decode", lambda *a: calls.append(len(a[0])) or decode(*a))
    calls.clear()
    resumed = D.load_dataset(src, root=tmp_path / "r", data_in_memory="off")
    assert calls == [2, 2, 1]  # train's last 2 images, then test's 3: nothing decoded twice
    assert [p.name for p in cache.iterdir()] == [partial.name[1:-len(".partial")]]
    assert all(_equal(r, e) for r, e in zip(resumed, expected))
    assert resumed[0].data["image"].shape[1] == 3 and resumed[1].data["image"].shape[1] == 3
    calls.clear()
    assert all(_equal(r, e) for r, e in zip(D.load_dataset(src, root=tmp_path / "r2"), expected))
    assert calls == [2, 2, 2, 2, 1]  # the uninterrupted decode, for comparison


def _anon_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


class _PeakAnon:
    """The peak of this process's anonymous resident memory (not file-backed pages) while the block runs, in
    bytes above its start, sampled every 0.2 ms by a thread (torch's kernels release the GIL)."""

    def __enter__(self):
        self.start = self.peak = _anon_kb()
        self._stop = threading.Event()
        self._interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-4)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(2e-4):
            self.peak = max(self.peak, _anon_kb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._interval)
        self.peak = max(self.peak, _anon_kb())
        self.growth = (self.peak - self.start) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads RssAnon from /proc")
def test_a_memory_mapped_set_trains_with_no_full_copy(tmp_path, monkeypatch):
    n, shape = 16_384, (3, 64, 64)  # 201 MB of images, written through the cache in chunks
    labels = torch.arange(n) % 4
    monkeypatch.setattr(data_cache, "_fsync_file", lambda path: None)  # durability is not what this test is about

    def rows(a, b):  # a cheap deterministic pattern, made chunk by chunk (never the whole set)
        row = (torch.arange(a, b) % 256).to(torch.uint8)[:, None]
        return (row * 7 + torch.arange(12_288).to(torch.uint8)).view(-1, *shape)

    split = data_splits.Split(labels, rows)
    test = data_splits.Split(labels[:64], rows)
    folder = tmp_path / "cache" / "big"
    train, test = data_cache.cached(folder, (list("abcd"), {"train": split, "test": test}), "synthetic")
    image_bytes = train.data["image"].numel()
    assert image_bytes > 200e6 and D.is_mapped(train)
    config = fa.TrainConfig(strategy="full", epochs=1, warmup_epochs=0, batch_size=64)
    warm = D.LabelledImages(train.data[:2048], train.classes)
    fa.fit(_net(12_288, 4), Data.prepare(warm, test), None, config)  # warms the allocator and kernels
    with _PeakAnon() as peak:
        data = Data.prepare(train, test, "cpu", label_noise=0.1, seed=0, data_in_memory="off")
        result = fa.fit(_net(12_288, 4), data, None, config)
    assert result.summary["steps"] == n // 64
    images = data.train.data["image"]
    assert isinstance(images, MemoryMappedTensor) and images.filename == str(folder / "train" / "image.memmap")
    assert images.untyped_storage().data_ptr() == train.data["image"].untyped_storage().data_ptr()
    assert peak.growth < image_bytes / 8, f"{peak.growth / 1e6:.0f} MB of anonymous memory for 201 MB of images"
    with _PeakAnon() as copied:  # the measure counts a copy: the same preparation with the images in memory
        in_memory = Data.prepare(train, test, "cpu", data_in_memory="on")
    assert copied.growth > image_bytes * 0.9 and not D.is_mapped(in_memory.train)
