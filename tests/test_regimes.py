"""The regimes' data transforms on tiny data: a long tail's counts, the noise rate, the near-duplicate share, a
choice of classes, the junk share of a corpus, and a pretrained start."""

import numpy as np
import pytest
import torch

from functional_ast.core.checks import ConfigError
from functional_ast.data import images as fdata
from functional_ast.data import junk, regimes, text
from functional_ast.edges import checkpoint, pretrained
from functional_ast.models import cnn


def _balanced(per_class=20, classes=5, size=8):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (per_class * classes, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return fdata.from_tensors(images, labels, classes=[f"c{i}" for i in range(classes)])


def test_long_tailed_counts_follow_the_exponential_profile():
    assert regimes.long_tailed_counts(5000, 10, 100)[0] == 5000
    assert regimes.long_tailed_counts(5000, 10, 100)[-1] == 50
    assert regimes.long_tailed_counts(5000, 10, 10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert sum(regimes.long_tailed_counts(5000, 10, 100)) == 12406  # CIFAR-10-LT's published sizes
    assert sum(regimes.long_tailed_counts(5000, 10, 10)) == 20431


def test_a_long_tailed_set_has_those_counts_and_the_input_is_untouched():
    ds = _balanced()
    lt = regimes.long_tailed(ds, 10, seed=0)
    counts = torch.bincount(lt.data["label"], minlength=5).tolist()
    assert counts == regimes.long_tailed_counts(20, 5, 10) == [20, 11, 6, 3, 2]
    assert len(ds) == 100
    assert regimes.long_tailed(ds, 1, seed=0) is ds
    again = regimes.long_tailed(ds, 10, seed=0)
    assert torch.equal(again.data["image"], lt.data["image"])  # seeded
    assert not torch.equal(regimes.long_tailed(ds, 10, seed=1).data["image"], lt.data["image"])
    with pytest.raises(ConfigError, match="ratio >= 1"):
        regimes.long_tailed(ds, 0.5, seed=0)


def test_label_noise_flips_exactly_that_share_to_other_classes():
    ds = _balanced()
    noisy = fdata.with_label_noise(ds, 0.4, seed=0)
    flipped = noisy.data["label"] != ds.data["label"]
    assert int(flipped.sum()) == 40
    assert torch.equal(noisy.data["clean_label"], ds.data["label"])


def test_near_duplicates_replace_that_share_with_copies_of_a_few_sources_of_the_same_class():
    ds = _balanced(per_class=40)
    dup = regimes.with_near_duplicates(ds, 0.5, seed=0, sources=0.05)
    source = dup.data["duplicate_of"]
    replaced = source >= 0
    assert int(replaced.sum()) == 100 and len(dup) == 200
    assert torch.equal(dup.data["label"], ds.data["label"])  # the class counts are unchanged
    assert torch.equal(ds.data["label"][source[replaced]], ds.data["label"][replaced])
    assert len(source[replaced].unique()) <= 2 * 5  # 0.05 * 200 / 5 = 2 sources per class
    assert not replaced[source[replaced]].any()  # a source is never replaced
    # a copy is its source shifted by at most 4 pixels (and maybe flipped): its centre matches one of those
    i = int(torch.nonzero(replaced)[0])
    copy, original = dup.data["image"][i].float(), ds.data["image"][int(source[i])].float()
    assert not torch.equal(copy, ds.data["image"][i].float())
    padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
    shifts = [padded[:, dy:dy + 8, dx:dx + 8] for dy in range(9) for dx in range(9)]
    assert any(torch.equal(copy, s) or torch.equal(copy, s.flip(-1)) for s in shifts)
    assert torch.equal(dup.data["image"][~replaced], ds.data["image"][~replaced])
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        regimes.with_near_duplicates(ds, 1.0, seed=0)


def test_only_classes_keeps_those_relabelled_in_the_order_given():
    ds = _balanced()
    part = regimes.only_classes(ds, ["c3", "c1"])
    assert part.classes == ("c3", "c1") and len(part) == 40
    assert torch.equal(part.data["image"][part.data["label"] == 0], ds.data["image"][ds.data["label"] == 3])
    with pytest.raises(ConfigError, match="this set's classes are c0, c1, c2, c3, c4"):
        regimes.only_classes(ds, ["c9"])


def test_junk_makes_up_that_share_of_the_training_bytes_and_the_test_text_stays_clean(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(10):
        (folder / f"f{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * (20 + i))
    corpus = text.load_corpus(folder, "*.py", root=tmp_path)
    train, test = text.split(corpus, 16, 0.2, seed=0)
    mixed = junk.with_junk(train, 0.3, seed=0)
    names = mixed.corpus.names
    sizes = np.diff(mixed.corpus.bounds)
    junk_bytes = sum(int(s) for n, s in zip(names, sizes) if junk.is_junk(n))
    assert abs(junk_bytes / sizes.sum() - 0.3) < 0.01
    assert {n.split("/")[1].split("-")[0] for n in names if junk.is_junk(n)} == set(junk.KINDS)
    assert len(junk.clean_files(mixed)) == len(train.files)
    assert test.corpus is corpus  # held-out text untouched
    assert junk.with_junk(train, 0.0, seed=0) is train
    first = mixed.gather(torch.arange(len(mixed)))
    assert torch.equal(first, junk.with_junk(train, 0.3, seed=0).gather(torch.arange(len(mixed))))


def test_a_pretrained_start_loads_matching_tensors_and_keeps_a_new_head_fresh(tmp_path):
    torch.manual_seed(0)
    source = cnn(num_classes=6)
    saved = tmp_path / "six.pt"
    torch.save(source.state_dict(), saved)
    lines = []
    build = pretrained.starting_from(lambda: cnn(num_classes=4), saved, announce=lines.append)
    model = build()
    own = dict(model.named_parameters())
    head = [n for n, p in own.items() if p.shape != dict(source.named_parameters())[n].shape]
    assert head and all(torch.equal(p, source.state_dict()[n]) for n, p in own.items() if n not in head)
    assert len(lines) == 1 and "kept fresh" in lines[0] and head[0] in lines[0]
    with pytest.raises(ConfigError, match="none of its"):
        pretrained.starting_from(lambda: torch.nn.Linear(3, 2), saved)
    with pytest.raises(ConfigError, match="no such file"):
        pretrained.starting_from(lambda: cnn(num_classes=4), tmp_path / "missing.pt")


def test_a_pretrained_start_reads_a_checkpoint_folder(tmp_path):
    import functional_ast as fa

    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 3, (64,))
    config = fa.TrainConfig(strategy="full", epochs=1, batch_size=32, warmup_epochs=0, cooldown_epochs=0)
    result = fa.fit(lambda: cnn(num_classes=3), (images, labels), (images, labels), config)
    checkpoint.save(tmp_path / "run", result.state, {})
    model = pretrained.starting_from(lambda: cnn(num_classes=3), tmp_path, announce=None)()
    for name, p in model.named_parameters():
        assert torch.equal(p, result.state["params"][name])


def test_the_savings_help_says_what_each_regime_is(capsys, monkeypatch):
    from functional_ast.cli import savings
    from functional_ast.pays import regimes as map_regimes

    monkeypatch.setenv("COLUMNS", "2000")  # argparse wraps its help to the terminal's width
    with pytest.raises(SystemExit):
        savings.main(["--help"])
    text = capsys.readouterr().out
    assert map_regimes.DESCRIPTIONS.keys() == map_regimes.REGIMES.keys()
    for name, what in map_regimes.DESCRIPTIONS.items():
        assert f"{name}: {what}" in text, name
