"""Where a run came from, as MLflow's own run tags: the entry point, the user, the code's git commit.

MLflow's UI shows `mlflow.source.name` as the run's "Source", `mlflow.user` as "Created by" and
`mlflow.source.git.commit` beside the source. The commit is the one of the repository this package is in (not
the working directory's), when it is a git checkout; `git.dirty` says whether its tracked files differed from
that commit when the run started ("true": the run's code is not exactly the commit's).
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path

SOURCE_NAME, SOURCE_TYPE, USER = "mlflow.source.name", "mlflow.source.type", "mlflow.user"
GIT_COMMIT, GIT_BRANCH, GIT_DIRTY = "mlflow.source.git.commit", "mlflow.source.git.branch", "git.dirty"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def entry_point(argv: list[str] | None = None, orig_argv: list[str] | None = None) -> str:
    """The command that started this process, without its arguments: "python -m experiments.cifar10" for a
    module run with -m, else the script as it was named (e.g. "benchmarks/savings.py", "pytest")."""
    orig = list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv)
    argv = list(sys.argv if argv is None else argv)
    i = 1
    while i < len(orig):  # the interpreter's own options come before the script or module
        arg = orig[i]
        if arg == "-m" and i + 1 < len(orig):
            return f"python -m {orig[i + 1]}"
        if arg.startswith("-m") and len(arg) > 2:
            return f"python -m {arg[2:]}"
        if arg == "-c" or arg.startswith("-c"):
            return "python -c"
        if not arg.startswith("-") or arg == "-":
            break
        i += 2 if arg in ("-W", "-X") else 1
    script = argv[0] if argv and argv[0] else ""
    if not script or script == "-c":
        return "python -c" if script == "-c" else "python"
    path = Path(script)
    try:
        shown = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = Path(path.name)
    return str(shown)


def user() -> str:
    """The user running the process (as MLflow's own default: the login name), "unknown" if none is known."""
    try:
        return getpass.getuser()
    except Exception:  # no login name, no USER/LOGNAME (some containers)
        return os.environ.get("USER") or "unknown"


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10,
                              env=dict(os.environ, GIT_OPTIONAL_LOCKS="0"))
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(folder: str | Path = PACKAGE_DIR) -> dict[str, str]:
    """{commit, branch, dirty} of the git repository holding `folder`; {} if it is none (an installed package) or
    git is absent. `dirty` is "true" when tracked files differ from the commit (untracked files do not count)."""
    commit = _git(Path(folder), "rev-parse", "HEAD")
    if not commit:
        return {}
    state = {"commit": commit}
    branch = _git(Path(folder), "rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        state["branch"] = branch
    status = _git(Path(folder), "status", "--porcelain", "--untracked-files=no")
    if status is not None:
        state["dirty"] = "true" if status else "false"
    return state


def run_tags(source: str | None = None, folder: str | Path = PACKAGE_DIR) -> dict[str, str]:
    """The provenance tags of a new run: source (the entry point, `source` if given), type LOCAL, user, and the git
    commit, branch and dirty flag of the package's checkout (left out when it is not one)."""
    tags = {SOURCE_NAME: source or entry_point(), SOURCE_TYPE: "LOCAL", USER: user()}
    git = git_state(folder)
    for key, tag in (("commit", GIT_COMMIT), ("branch", GIT_BRANCH), ("dirty", GIT_DIRTY)):
        if key in git:
            tags[tag] = git[key]
    return tags
