"""Atomic writes: the new content or the previous one, never half, and no temporary file left behind."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from tensordict import TensorDict

from functional_ast import io as fio
from functional_ast.data import cache as data_cache
from functional_ast.data import images as data
from functional_ast.edges import checkpoint


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("kind", ["bytes", "text", "json", "save"])
def test_each_writer_writes_its_content_and_leaves_no_temporary(tmp_path, kind):
    path = tmp_path / f"out.{kind}"
    obj = {"a": [1, 2], "when": object()} if kind == "json" else None
    if kind == "bytes":
        assert fio.atomic_write_bytes(path, b"\x00\x01abc") == path
        assert path.read_bytes() == b"\x00\x01abc"
    elif kind == "text":
        fio.atomic_write_text(path, "héllo\n")
        assert path.read_text(encoding="utf-8") == "héllo\n"
    elif kind == "json":
        fio.atomic_write_json(path, obj)
        assert json.loads(path.read_text()) == {"a": [1, 2], "when": str(obj["when"])}
        assert path.read_text().startswith('{\n "a"')  # indent=1
    else:
        fio.atomic_save(path, {"w": torch.arange(3)})
        assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    assert _names(tmp_path) == [path.name]


def test_overwrite_replaces_and_temporary_name_is_hidden_beside_the_target(tmp_path):
    path = tmp_path / "f.txt"
    fio.atomic_write_text(path, "one")
    fio.atomic_write_text(path, "two", fsync=False)
    assert path.read_text() == "two" and _names(tmp_path) == ["f.txt"]
    tmp = fio.temp_path(path)
    assert tmp.parent == tmp_path and tmp.name == f".f.txt.tmp-{os.getpid()}"


def test_a_failing_rename_keeps_the_previous_file_and_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    fio.atomic_write_json(path, {"v": 1})

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    for write in (lambda: fio.atomic_write_json(path, {"v": 2}), lambda: fio.atomic_write_bytes(path, b"x"),
                  lambda: fio.atomic_save(path, {"v": torch.zeros(2)})):
        with pytest.raises(OSError, match="No space"):
            write()
        assert json.loads(path.read_text()) == {"v": 1}
        assert _names(tmp_path) == ["f.json"]


def test_a_failing_serialisation_keeps_the_previous_file(tmp_path):
    path = tmp_path / "m.pt"
    fio.atomic_save(path, {"v": torch.ones(2)})
    with pytest.raises(Exception):
        fio.atomic_save(path, {"f": lambda: 0})  # a lambda cannot be pickled: fails mid-write
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.ones(2))
    assert _names(tmp_path) == ["m.pt"]


def test_atomic_dir_builds_renames_and_cleans_up(tmp_path):
    target = tmp_path / "cache"
    with fio.atomic_dir(target) as tmp:
        assert tmp.name.startswith(".cache.tmp-") and tmp.parent == tmp_path
        (tmp / "a.txt").write_text("1")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "1" and _names(tmp_path) == ["cache"]

    with pytest.raises(OSError):  # an existing folder (another writer won) is not replaced by default
        with fio.atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("2")
    assert _names(target) == ["a.txt"] and _names(tmp_path) == ["cache"]

    with pytest.raises(RuntimeError):  # a failing block leaves the old folder and no temporary
        with fio.atomic_dir(target, replace=True) as tmp:
            (tmp / "c.txt").write_text("3")
            raise RuntimeError("killed")
    assert _names(target) == ["a.txt"] and _names(tmp_path) == ["cache"]

    with fio.atomic_dir(target, replace=True) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "d.txt").write_text("4")
    assert _names(target) == ["sub"] and _names(tmp_path) == ["cache"]


def test_a_folder_whose_replacement_was_killed_between_its_renames_is_taken_back(tmp_path, monkeypatch):
    target = tmp_path / "unsent"
    with fio.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    # SIGKILLed in atomic_dir(target, replace=True): the old folder moved aside, the new one not yet renamed in
    os.replace(target, tmp_path / ".unsent.old-4242")
    (tmp_path / ".unsent.tmp-4242").mkdir()
    assert (fio.recovered_dir(target) / "a.txt").read_text() == "old"
    assert _names(tmp_path) == [".unsent.tmp-4242", "unsent"]

    # Killed after the new one was renamed in: the copy aside is stale, and deleted.
    (tmp_path / ".unsent.old-4243").mkdir()
    assert (fio.recovered_dir(target) / "a.txt").read_text() == "old" and ".unsent.old-4243" not in _names(tmp_path)

    real_replace = os.replace

    def refuse_the_new(src, dst):  # a failing (not killed) second rename puts the old folder back
        if os.path.basename(src).startswith(".unsent.tmp-"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse_the_new)
    with pytest.raises(OSError):
        with fio.atomic_dir(target, replace=True) as tmp:
            (tmp / "b.txt").write_text("new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert _names(target) == ["a.txt"] and _names(tmp_path) == [".unsent.tmp-4242", "unsent"]

    fio.remove_dir(target)  # and the temporary its killed writer left
    assert _names(tmp_path) == []
    fio.remove_dir(target)  # gone already: nothing to do


def _state(step: int) -> TensorDict:
    return TensorDict(step=torch.tensor(step), params=TensorDict({"0.weight": torch.randn(2, 3)}))


def test_checkpoint_save_is_atomic_and_its_temporary_is_never_listed(tmp_path, monkeypatch):
    first = checkpoint.save(tmp_path, _state(1), {"n": 1})
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        assert checkpoint.list_checkpoints(tmp_path) == [first]  # the half-written file is not a checkpoint
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    second = checkpoint.save(tmp_path, _state(2), {"n": 2})
    assert seen == [f".{second.name}.tmp-{os.getpid()}"]
    assert checkpoint.list_checkpoints(tmp_path) == [first, second] and _names(tmp_path) == [first.name, second.name]

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(checkpoint.CheckpointError, match="cannot write checkpoint.*run the same command with "
                                                         "--resume"):
        checkpoint.save(tmp_path, _state(3), {"n": 3})
    assert _names(tmp_path) == [first.name, second.name]
    assert checkpoint.load(second)[1] == {"n": 2}


def test_a_checkpoint_save_keeps_those_up_to_it_and_clears_what_killed_writers_left(tmp_path):
    for step in (1, 2, 9):
        checkpoint.save(tmp_path, _state(step), {}, keep=2)
    (tmp_path / ".step-000000010.pt.tmp-4242").write_bytes(b"half")  # a writer SIGKILLed mid-write
    # A resume passed over step 9 (unreadable) and went on from step 2: its next checkpoint is the newest.
    third = checkpoint.save(tmp_path, _state(3), {}, keep=2)
    assert _names(tmp_path) == ["step-000000002.pt", third.name]


def test_data_cache_is_written_whole_and_a_second_writer_loses_quietly(tmp_path):
    train = data.from_tensors(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    test = data.from_tensors(torch.ones(2, 3, 2, 2, dtype=torch.uint8), torch.tensor([1, 0]), ["a", "b"])
    folder = tmp_path / "cache" / "abc"
    data_cache._write_cache(folder, train, test)
    assert json.loads((folder / "classes.json").read_text()) == {"classes": ["a", "b"]}
    assert {"train", "test", "classes.json"} <= set(_names(folder)) and _names(folder.parent) == ["abc"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache exists: the rename fails, no warning, nothing left behind
        data_cache._write_cache(folder, train, test)
    assert _names(folder.parent) == ["abc"]
