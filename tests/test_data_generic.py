"""Generic image sets for functional_ast.data: any class count, grayscale, non-square and mixed sizes,
label noise, memory-mapped images and `describe`."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensordict import MemoryMappedTensor
from torchvision.io import encode_jpeg, write_png

from functional_ast.data.images import (
    DataError,
    LabelledImages,
    augment,
    batch_at,
    channel_stats,
    describe,
    from_tensors,
    iterate_batches,
    load_dataset,
    load_image_folder,
    with_label_noise,
)
from functional_ast.train.config import ConfigError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _pixels(seed: int, shape) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=_gen(seed))


def _write_tree(root: Path, layout: dict, shape) -> dict:
    """layout: {split: {class: n_images}}; writes PNGs of uint8 `shape` [C,H,W]; returns {path: tensor}."""
    written, seed = {}, 0
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                img = _pixels(seed, shape)
                path = root / split / cls / f"{i:03d}.png"
                write_png(img, str(path))
                written[path] = img
    return written


def _batches_equal(a, b) -> bool:
    return len(a) == len(b) and all(set(x.keys()) == set(y.keys()) and (x == y).all() for x, y in zip(a, b))


# --------------------------------------------------------------------------- loading


def test_grayscale_28x28_three_classes_load_with_labels(tmp_path):
    layout = {"train": {"ant": 3, "bee": 2, "cow": 4}, "test": {"ant": 1, "bee": 1, "cow": 1}}
    written = _write_tree(tmp_path / "src", layout, (1, 28, 28))
    train, test = load_dataset(tmp_path / "src", root=tmp_path / "r")
    assert train.classes == test.classes == ("ant", "bee", "cow")
    assert train.data["image"].shape == (9, 1, 28, 28) and train.data["image"].dtype == torch.uint8
    assert test.data["image"].shape == (3, 1, 28, 28)
    assert train.data["label"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2] and test.data["label"].tolist() == [0, 1, 2]
    assert torch.equal(train.data["image"][3], written[tmp_path / "src" / "train" / "bee" / "000.png"])
    cached = load_dataset(tmp_path / "src", root=tmp_path / "r")[0]  # the cache keeps 1 channel
    assert (cached.data == train.data).all()
    assert describe(train) == {"num_samples": 9, "num_classes": 3, "image_shape": (1, 28, 28)}

    mean, std = channel_stats(train.data["image"])
    assert mean.shape == std.shape == (1,)
    x = train.data["image"].double() / 255
    assert torch.allclose(mean.double(), x.mean(), atol=1e-6) and torch.allclose(std.double(), x.std(unbiased=False),
                                                                                 atol=1e-6)
    batches = list(iterate_batches(train, 4, seed=0, epoch=0, augment=True, mean=mean, std=std, drop_last=False))
    assert [tuple(b["image"].shape) for b in batches] == [(4, 1, 28, 28), (4, 1, 28, 28), (1, 1, 28, 28)]
    assert sorted(torch.cat([b["index"] for b in batches]).tolist()) == list(range(9))
    plain = batch_at(train, torch.tensor([8, 0]), mean=mean, std=std)
    assert torch.allclose(plain["image"], (train.data["image"][[8, 0]].float() / 255 - mean) / std)


def test_grayscale_and_colour_files_decode_to_their_channels(tmp_path):
    gray = _pixels(1, (1, 10, 10))
    (tmp_path / "g" / "a").mkdir(parents=True)
    write_png(gray, str(tmp_path / "g" / "a" / "0.png"))
    (tmp_path / "g" / "a" / "1.jpg").write_bytes(encode_jpeg(gray).numpy().tobytes())  # grayscale JPEG
    Image.fromarray(gray[0].numpy()).convert("LA").save(tmp_path / "g" / "a" / "2.png")
    Image.fromarray((gray[0].numpy().astype(np.uint16) * 257)).save(tmp_path / "g" / "a" / "3.png")  # 16-bit
    Image.fromarray(gray[0].numpy()).save(tmp_path / "g" / "a" / "4.bmp")  # grayscale BMP, via Pillow
    ds = load_image_folder(tmp_path / "g")
    assert ds.data["image"].shape == (5, 1, 10, 10) and ds.data["image"].dtype == torch.uint8
    for i in (0, 2, 3, 4):
        assert torch.equal(ds.data["image"][i], gray)

    colour = _pixels(2, (3, 6, 5))
    (tmp_path / "c" / "a").mkdir(parents=True)
    rgb = colour.permute(1, 2, 0).numpy()
    Image.fromarray(rgb).quantize(colors=256).save(tmp_path / "c" / "a" / "0.png")  # palette PNG
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "c" / "a" / "1.png")
    with Image.open(tmp_path / "c" / "a" / "0.png") as im:
        palette_rgb = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    ds = load_image_folder(tmp_path / "c")
    assert ds.data["image"].shape == (2, 3, 6, 5)
    assert torch.equal(ds.data["image"][0], palette_rgb) and torch.equal(ds.data["image"][1], colour)


def test_mixed_grayscale_and_colour_become_three_channels(tmp_path):
    gray, colour = _pixels(1, (1, 8, 8)), _pixels(2, (3, 8, 8))
    for split in ("train", "test"):
        (tmp_path / "src" / split / "a").mkdir(parents=True)
    write_png(gray, str(tmp_path / "src" / "train" / "a" / "0.png"))
    write_png(colour, str(tmp_path / "src" / "train" / "a" / "1.png"))
    write_png(gray, str(tmp_path / "src" / "test" / "a" / "0.png"))  # an all-grayscale split
    train, test = load_dataset(tmp_path / "src", root=tmp_path / "r")
    assert train.data["image"].shape == (2, 3, 8, 8) and test.data["image"].shape == (1, 3, 8, 8)
    assert torch.equal(train.data["image"][0], gray.expand(3, -1, -1)) and torch.equal(train.data["image"][1], colour)
    assert torch.equal(test.data["image"][0], gray.expand(3, -1, -1))


def test_two_class_non_square_colour_loads_augments_and_batches(tmp_path):
    layout = {"train": {"no": 5, "yes": 4}, "test": {"no": 2, "yes": 2}}
    written = _write_tree(tmp_path / "src", layout, (3, 20, 24))  # H=20, W=24
    train, test = load_dataset(tmp_path / "src", root=tmp_path / "r")
    assert train.classes == ("no", "yes") and train.data["image"].shape == (9, 3, 20, 24)
    assert train.data["label"].tolist() == [0] * 5 + [1] * 4 and len(test) == 4
    assert torch.equal(train.data["image"][5], written[tmp_path / "src" / "train" / "yes" / "000.png"])

    x = train.data["image"].float() / 255
    out = augment(x, _gen(1), pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    assert out.shape == x.shape
    for b in range(len(x)):  # each output is some (dy, dx, flip) 20x24 window of the padded image
        windows = [padded[b, :, dy:dy + 20, dx:dx + 24] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[b], w) or torch.equal(out[b], w.flip(-1)) for w in windows)
    assert augment(x, _gen(1), pad=4, padding_mode="reflect").shape == x.shape

    a = list(iterate_batches(train, 4, seed=3, epoch=1, augment=True))
    assert [tuple(b["image"].shape) for b in a] == [(4, 3, 20, 24)] * 2
    assert _batches_equal(a, list(iterate_batches(train, 4, seed=3, epoch=1, augment=True)))
    assert all(torch.equal(b["label"], train.data["label"][b["index"]]) for b in a)


def test_mixed_sizes_need_image_size_which_resizes_and_keys_the_cache(tmp_path):
    _write_tree(tmp_path / "src", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}}, (3, 8, 8))
    odd = tmp_path / "src" / "train" / "b" / "odd.png"
    write_png(_pixels(9, (3, 12, 10)), str(odd))
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "src", root=tmp_path / "r")
    message = str(err.value)
    assert "\n" not in message and str(odd) in message and "--image-size" in message
    train, test = load_dataset(tmp_path / "src", root=tmp_path / "r", image_size=16)
    assert train.data["image"].shape == (5, 3, 16, 16) and test.data["image"].shape == (2, 3, 16, 16)
    small, _ = load_dataset(tmp_path / "src", root=tmp_path / "r", image_size=6)  # another cache entry
    assert small.data["image"].shape == (5, 3, 6, 6)
    assert len(list((tmp_path / "r" / "cache").iterdir())) == 2
    _write_tree(tmp_path / "g", {"x": {"a": 1, "b": 1}}, (1, 28, 20))
    gray = load_image_folder(tmp_path / "g" / "x", image_size=14)
    assert gray.data["image"].shape == (2, 1, 14, 14)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(DataError, match="--image-size"):
            load_dataset(tmp_path / "src", root=tmp_path / "r", image_size=bad)


# --------------------------------------------------------------------------- label noise


def _toy(n_per_class=30, num_classes=10) -> LabelledImages:
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    images = _pixels(0, (len(labels), 1, 4, 4))
    return from_tensors(images, labels, [f"c{i}" for i in range(num_classes)])


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.99])
def test_label_noise_changes_exactly_round_f_n_labels_to_other_classes(fraction):
    ds = _toy()
    before = ds.data.clone()
    noisy = with_label_noise(ds, fraction, seed=0)
    changed = noisy.data["label"] != ds.data["label"]
    assert int(changed.sum()) == round(fraction * len(ds))  # never the same class: every pick changes
    assert torch.equal(noisy.data["clean_label"], ds.data["label"])
    assert (ds.data == before).all() and set(ds.data.keys()) == {"image", "label"}  # input untouched
    assert noisy.data["image"] is ds.data["image"] and noisy.classes == ds.classes
    assert noisy.data["label"].dtype == torch.int64 and 0 <= noisy.data["label"].min() <= noisy.data["label"].max() < 10


def test_label_noise_is_seeded_uniform_and_validated():
    ds = _toy(300)
    a, b, c = (with_label_noise(ds, 0.9, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.data["label"], b.data["label"]) and not torch.equal(a.data["label"], c.data["label"])
    changed = a.data["label"] != ds.data["label"]
    pairs = torch.bincount(ds.data["label"][changed] * 10 + a.data["label"][changed], minlength=100).view(10, 10)
    assert pairs.diagonal().sum() == 0 and pairs.sum() == 2700  # ~30 per (class, other class) pair
    off_diagonal = pairs[~torch.eye(10, dtype=torch.bool)]
    assert off_diagonal.min() >= 10 and off_diagonal.max() <= 60
    assert with_label_noise(ds, 0, seed=0) is ds and with_label_noise(ds, 0.0, seed=5) is ds
    twice = with_label_noise(a, 0.2, seed=3)
    assert torch.equal(twice.data["clean_label"], ds.data["label"])
    for bad in (-0.1, 1, 1.5, float("nan"), "0.1", None):
        with pytest.raises(ConfigError, match="label_noise") as err:
            with_label_noise(ds, bad, seed=0)
        assert isinstance(err.value, ValueError)


def test_label_noise_batches_carry_noisy_labels_only():
    ds = _toy(4, 3)
    noisy = with_label_noise(ds, 0.5, seed=0)
    (batch,) = iterate_batches(noisy, len(ds), seed=0, epoch=0, augment=True)
    assert set(batch.keys()) == {"image", "label", "index"}
    assert torch.equal(batch["label"], noisy.data["label"][batch["index"]])
    clean = batch_at(ds, batch["index"], generator=_gen(4))
    assert torch.equal(batch_at(noisy, batch["index"], generator=_gen(4))["image"], clean["image"])


# --------------------------------------------------------------------------- memory-mapped images


def test_memmap_backed_images_batch_like_in_memory(tmp_path):
    images = _pixels(5, (37, 1, 6, 9))
    labels = torch.arange(37) % 3
    in_memory = from_tensors(images.clone(), labels, ["a", "b", "c"])
    mm = MemoryMappedTensor.from_tensor(images, filename=tmp_path / "images.memmap")
    images.numpy().tofile(tmp_path / "images.bin")
    from_file = torch.from_file(str(tmp_path / "images.bin"), shared=True, size=images.numel(),
                                dtype=torch.uint8).view(images.shape)
    mean, std = channel_stats(images)
    for backing in (mm, from_file):
        ds = from_tensors(backing, labels, ["a", "b", "c"])
        assert ds.data["image"].data_ptr() == backing.data_ptr()  # still file-backed, not copied
        for kwargs in ({}, {"augment": True, "mean": mean, "std": std, "drop_last": False}):
            expected = list(iterate_batches(in_memory, 8, seed=2, epoch=0, **kwargs))
            assert _batches_equal(list(iterate_batches(ds, 8, seed=2, epoch=0, **kwargs)), expected)
        index = torch.tensor([36, 0, 17, 17])
        assert (batch_at(ds, index, generator=_gen(1)) == batch_at(in_memory, index, generator=_gen(1))).all()
        assert torch.equal(channel_stats(ds.data["image"])[0], mean)
        noisy = with_label_noise(ds, 0.3, seed=0)  # shares the memory-mapped images
        assert noisy.data["image"].data_ptr() == backing.data_ptr()
        assert describe(noisy) == {"num_samples": 37, "num_classes": 3, "image_shape": (1, 6, 9)}
