"""Tests for functional_ast.data: loading (folders, archives, CIFAR pickles), cache, subsets, batches."""

import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.io import encode_jpeg, write_png

from functional_ast.data import decode as data_decode
from functional_ast.data import images as D
from functional_ast.data.images import (
    DataError,
    augment,
    balanced_subset,
    channel_stats,
    from_tensors,
    iterate_batches,
    load_dataset,
    load_image_folder,
    num_batches,
)


def _image(seed: int, size=(8, 8)) -> torch.Tensor:
    return torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _write_tree(root: Path, layout: dict, size=(8, 8)) -> dict:
    """layout: {split: {class: n_images}}; writes PNGs (lossless) and returns {path: tensor}."""
    written, seed = {}, 0
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                img = _image(seed, size)
                path = root / split / cls / f"{i:03d}.png"
                write_png(img, str(path))
                written[path] = img
    return written


def _tar(src: Path, dest: Path, arcname: str) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname=arcname)
    return dest


LAYOUT = {"train": {"cat": 3, "dog": 2}, "test": {"cat": 1, "dog": 2}}


def test_image_folder_loads_labels_and_skips_non_images(tmp_path):
    written = _write_tree(tmp_path, LAYOUT)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "cat" / "._001.png").write_bytes(b"macOS resource fork")
    jpeg = encode_jpeg(_image(99))
    (tmp_path / "train" / "dog" / "extra.jpg").write_bytes(jpeg.numpy().tobytes())
    bmp = _image(98)  # BMP: not decodable by torchvision, read through Pillow
    Image.fromarray(bmp.permute(1, 2, 0).numpy()).save(tmp_path / "train" / "dog" / "z.bmp")
    train = load_image_folder(tmp_path / "train")
    assert train.classes == ("cat", "dog")
    assert len(train) == 7
    assert train.data["label"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert train.data["image"].dtype == torch.uint8 and train.data["image"].shape == (7, 3, 8, 8)
    assert torch.equal(train.data["image"][-1], bmp)
    assert torch.equal(train.data["image"][0], written[tmp_path / "train" / "cat" / "000.png"])


def test_directory_and_archive_load_equal(tmp_path):
    _write_tree(tmp_path / "src" / "mydata", LAYOUT)
    direct = load_dataset(tmp_path / "src" / "mydata", root=tmp_path / "r1")
    one_down = load_dataset(tmp_path / "src", root=tmp_path / "r2")  # train/ and test/ one level down
    archive = load_dataset(_tar(tmp_path / "src" / "mydata", tmp_path / "d.tar.gz", "mydata"), root=tmp_path / "r3")
    for train, test in (one_down, archive):
        assert train.classes == direct[0].classes == test.classes
        assert (train.data == direct[0].data).all() and (test.data == direct[1].data).all()
    assert len(direct[0]) == 5 and len(direct[1]) == 3


def _write_cifar(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    folder.mkdir(parents=True)
    images, labels = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        img = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
        lab = [i % 3, (i + 1) % 3]
        batch = {b"data": img.reshape(2, -1).numpy(), b"labels": lab, b"batch_label": name.encode()}
        (folder / name).write_bytes(pickle.dumps(batch))
        images.append(img)
        labels += lab
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b", b"c"]}))
    return torch.cat(images), torch.tensor(labels)


def test_cifar_pickles_from_directory_and_archive(tmp_path):
    images, labels = _write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    train, test = load_dataset(tmp_path / "src", root=tmp_path / "r1")
    assert train.classes == ("a", "b", "c") and len(train) == 10 and len(test) == 2
    assert torch.equal(train.data["image"], images[:10]) and torch.equal(test.data["image"], images[10:])
    assert torch.equal(train.data["label"], labels[:10])
    archive = _tar(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "c.tgz", "cifar-10-batches-py")
    train2, test2 = load_dataset(archive, root=tmp_path / "r2")
    assert (train2.data == train.data).all() and (test2.data == test.data).all()


@pytest.mark.parametrize("as_archive", [False, True])
def test_corrupt_image_is_named(tmp_path, as_archive):
    _write_tree(tmp_path / "src", LAYOUT)
    bad = tmp_path / "src" / "train" / "dog" / "broken.jpg"
    bad.write_bytes(encode_jpeg(_image(7)).numpy().tobytes()[:40])  # truncated JPEG
    source = _tar(tmp_path / "src", tmp_path / "d.tar.gz", "src") if as_archive else tmp_path / "src"
    with pytest.raises(DataError, match="broken.jpg") as err:
        load_dataset(source, root=tmp_path / "r")
    assert "remove or replace" in str(err.value)


def test_missing_empty_and_mismatched_sources(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope", root=tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path / "empty", root=tmp_path / "r")
    _write_tree(tmp_path / "mixed", {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "emu": 1}})
    with pytest.raises(DataError, match=r"\['cat', 'dog'\].*\['cat', 'emu'\]"):
        load_dataset(tmp_path / "mixed", root=tmp_path / "r")


def test_torchvision_cifar_missing_mentions_data_flag(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(None, root=tmp_path, download=False)
    message = str(err.value)
    assert "--data" in message and "CIFAR-10 not found" in message and "Traceback" not in message


def test_different_sizes_need_image_size(tmp_path):
    _write_tree(tmp_path / "src", {"train": {"a": 2}, "test": {"a": 1}}, size=(8, 8))
    write_png(_image(50, (12, 10)), str(tmp_path / "src" / "train" / "a" / "big.png"))
    with pytest.raises(DataError, match="image_size"):
        load_dataset(tmp_path / "src", root=tmp_path / "r")
    train, test = load_dataset(tmp_path / "src", root=tmp_path / "r", image_size=6)
    assert train.data["image"].shape == (3, 3, 6, 6) and test.data["image"].shape == (1, 3, 6, 6)


def test_cache_round_trip_skips_decoding_and_tracks_changes(tmp_path, monkeypatch):
    _write_tree(tmp_path / "src", LAYOUT)
    first = load_dataset(tmp_path / "src", root=tmp_path / "r")
    assert [p.name for p in (tmp_path / "r" / "cache").iterdir() if p.name.startswith(".")] == []

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(data_decode, "_decode", no_decoding)
    second = load_dataset(tmp_path / "src", root=tmp_path / "r")
    assert second[0].classes == first[0].classes
    assert (second[0].data == first[0].data).all() and (second[1].data == first[1].data).all()
    monkeypatch.undo()
    write_png(_image(77), str(tmp_path / "src" / "train" / "dog" / "new.png"))  # source changed: not trusted
    assert len(load_dataset(tmp_path / "src", root=tmp_path / "r")[0]) == len(first[0]) + 1


def test_unwritable_cache_warns_and_continues(tmp_path):
    _write_tree(tmp_path / "src", LAYOUT)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache directory should go")
    with pytest.warns(UserWarning, match="without"):
        train, _ = load_dataset(tmp_path / "src", root=blocker)
    assert len(train) == 5


def test_from_tensors_validates_and_converts():
    floats = torch.rand(4, 3, 5, 5)
    ds = from_tensors(floats, torch.tensor([0, 1, 2, 1]))
    assert ds.data["image"].dtype == torch.uint8 and ds.classes == ("0", "1", "2")
    assert torch.allclose(ds.data["image"].float() / 255, floats, atol=1 / 255)
    with pytest.raises(DataError, match="labels must lie"):
        from_tensors(floats, torch.tensor([0, 1, 2, 3]), classes=["a", "b", "c"])
    with pytest.raises(DataError, match=r"\[N,C,H,W\]"):
        from_tensors(floats[0], torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        from_tensors(floats * 2, torch.tensor([0, 1, 2, 1]))


def _toy(sizes, hw=4) -> D.LabelledImages:
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    images = torch.randint(0, 256, (len(labels), 3, hw, hw), dtype=torch.uint8, generator=_gen(0))
    return from_tensors(images, labels, [f"c{i}" for i in range(len(sizes))])


def test_balanced_subset_is_balanced_seeded_and_random():
    ds = _toy([40, 40, 40])
    sub = balanced_subset(ds, 31, seed=1)
    counts = torch.bincount(sub.data["label"], minlength=3)
    assert len(sub) == 31 and counts.max() - counts.min() <= 1
    assert (balanced_subset(ds, 31, seed=1).data == sub.data).all()
    assert not (balanced_subset(ds, 31, seed=2).data["image"] == sub.data["image"]).all()
    assert not (sub.data["image"] == ds.data["image"][:31]).all()
    uneven = balanced_subset(_toy([50, 30, 5]), 30, seed=0)
    assert torch.bincount(uneven.data["label"]).tolist() == [13, 12, 5]
    assert balanced_subset(ds, 500, seed=0) is ds


def test_channel_stats_matches_direct_computation():
    images = _toy([10, 10], hw=6).data["image"]
    mean, std = channel_stats(images)
    x = images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert mean.shape == (3,) and torch.allclose(mean.double(), x.mean(1), atol=1e-6)
    assert torch.allclose(std.double(), x.std(1, unbiased=False), atol=1e-6)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_augment_identity_determinism_and_flips():
    x = torch.rand(64, 3, 8, 8)
    assert torch.equal(augment(x, _gen(), pad=0, flip=False), x)
    out = augment(x, _gen(3))
    assert out.shape == x.shape and torch.equal(out, augment(x, _gen(3)))
    flipped = augment(x, _gen(), pad=0, flip=True)
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and 10 < mirrored.sum() < 54


def test_augment_is_a_shifted_window_of_the_padded_image():
    x = torch.rand(6, 2, 5, 5)
    out = augment(x, _gen(1), pad=2, flip=True)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(len(x)):  # each output equals some (dy, dx, flip) window
        windows = [padded[b, :, dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[b], w) or torch.equal(out[b], w.flip(-1)) for w in windows)
    ones = torch.ones(4, 3, 8, 8)
    assert torch.equal(augment(ones, _gen(), pad=3, padding_mode="reflect"), ones)


def test_augment_op_count_does_not_grow_with_batch():
    def op_count(batch):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            augment(torch.rand(batch, 3, 8, 8), _gen())
        return len(prof.events())

    assert op_count(2) == op_count(256)


def test_iterate_batches_covers_every_index_once():
    ds = _toy([25, 25])
    batches = list(iterate_batches(ds, 16, seed=0, epoch=0, drop_last=False))
    assert [len(b) for b in batches] == [16, 16, 16, 2] and len(batches) == num_batches(50, 16, False)
    index = torch.cat([b["index"] for b in batches])
    assert sorted(index.tolist()) == list(range(50)) and index.tolist() != list(range(50))
    for b in batches:
        assert torch.equal(b["label"], ds.data["label"][b["index"]]) and b["image"].dtype == torch.float32
    assert len(list(iterate_batches(ds, 16, seed=0, epoch=0))) == num_batches(50, 16, True) == 3


def test_iterate_batches_deterministic_in_seed_and_epoch_and_resumable():
    ds = _toy([20, 20])

    def run(seed, epoch, start=0):
        return list(iterate_batches(ds, 8, seed=seed, epoch=epoch, augment=True, start_batch=start))

    a, b = run(0, 0), run(0, 0)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not torch.equal(a[0]["index"], run(0, 1)[0]["index"])
    assert not torch.equal(a[0]["index"], run(1, 0)[0]["index"])
    assert all((x == y).all() for x, y in zip(a[2:], run(0, 0, start=2)))


def test_iterate_batches_normalises():
    ds = _toy([3, 3])
    mean, std = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.3, 0.4])
    (batch,) = iterate_batches(ds, 6, seed=0, epoch=0, shuffle=False, mean=mean, std=std)
    expected = (ds.data["image"].float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(batch["image"], expected) and torch.equal(batch["index"], torch.arange(6))


def test_num_batches():
    assert num_batches(10, 3, True) == 3 and num_batches(10, 3, False) == 4 and num_batches(9, 3, False) == 3


def _real_archive() -> Path:
    env = os.environ.get("FUNCTIONAL_AST_CIFAR_ARCHIVE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"


def test_real_cifar10_archive(tmp_path):
    archive = _real_archive()
    if not archive.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {archive}: set FUNCTIONAL_AST_CIFAR_ARCHIVE to its .tar.gz")
    train, test = load_dataset(archive, root=tmp_path)
    assert (len(train), len(test)) == (50000, 10000)
    assert len(train.classes) == 10 and train.classes == test.classes
    assert train.data["image"].shape[1:] == (3, 32, 32) and train.data["image"].dtype == torch.uint8
    assert torch.bincount(train.data["label"]).tolist() == [5000] * 10


def test_bad_batch_size_fails_at_call():
    with pytest.raises(DataError, match="batch size"):
        iterate_batches(_toy([2, 2]), 0, seed=0, epoch=0)
