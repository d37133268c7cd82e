"""Runs carry where they came from: source (the entry point), user, and the package's git commit and dirtiness."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from functional_ast.edges import provenance, replay, tracking


@pytest.mark.parametrize("orig,argv,want", [
    (["python", "-m", "experiments.cifar10", "--epochs", "3"], ["/x/experiments/cifar10.py", "--epochs", "3"],
     "python -m experiments.cifar10"),
    (["python3", "-u", "-W", "ignore", "-m", "functional_ast", "--data", "d"], ["/x/functional_ast/__main__.py"],
     "python -m functional_ast"),
    (["python", "-mbenchmarks.savings"], ["/x/benchmarks/savings.py"], "python -m benchmarks.savings"),
    (["python", "train.py", "-m", "not-a-module"], ["train.py", "-m", "not-a-module"], "train.py"),
    (["python", "-c", "import x"], ["-c"], "python -c"),
    (["/usr/bin/pytest", "-q"], ["/usr/bin/pytest", "-q"], "pytest"),
])
def test_entry_point_names_the_module_or_the_script(orig, argv, want):
    assert provenance.entry_point(argv, orig) == want


def _git(folder, *args):
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(folder)})


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_state_gives_the_commit_and_marks_a_dirty_tree(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    _git(repo, "add", "pkg/a.py")
    _git(repo, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert provenance.git_state(repo / "pkg") == {"commit": head, "branch": "main", "dirty": "false"}
    (repo / "pkg" / "new.py").write_text("")  # untracked: not dirty
    assert provenance.git_state(repo / "pkg")["dirty"] == "false"
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert provenance.git_state(repo / "pkg")["dirty"] == "true"
    tags = provenance.run_tags("python -m x", folder=repo / "pkg")
    assert tags[provenance.GIT_COMMIT] == head and tags[provenance.GIT_DIRTY] == "true"
    assert provenance.git_state(tmp_path / "elsewhere") == {}  # not a checkout (an installed package): no git tags
    assert set(provenance.run_tags("s", folder=tmp_path)) == {"mlflow.source.name", "mlflow.source.type",
                                                               "mlflow.user"}


def test_a_new_run_is_tagged_with_source_user_and_the_packages_commit(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with tracking.RunTracker(uri, "provenance", "r") as tracker:
        pass
    tags = MlflowClient(uri).get_run(tracker.run_id).data.tags
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] == provenance.entry_point()
    assert tags["mlflow.user"] == provenance.user() and tags["mlflow.user"]
    git = provenance.git_state()
    if git:  # this checkout is a git repository
        assert tags["mlflow.source.git.commit"] == git["commit"] and len(git["commit"]) == 40
        assert tags["git.dirty"] in ("true", "false")


def test_tags_of_a_run_created_offline_are_saved_and_replayed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.warns(UserWarning, match="unreachable"):
        with tracking.RunTracker("http://127.0.0.1:9", "prov-replayed", fallback_dir=tmp_path,
                                 tags={"mlflow.source.name": "python -m here", "mlflow.user": "me"}) as tracker:
            tracker.set_tags({tracking.NOTE_TAG: "what this run is"})
    run_id = replay.replay(tmp_path / "tracking-unsent", uri)
    tags = MlflowClient(uri).get_run(run_id).data.tags
    assert tags["mlflow.source.name"] == "python -m here" and tags["mlflow.user"] == "me"
    assert tags[tracking.NOTE_TAG] == "what this run is"
