"""Which code trained a run: its git commit, read once when the process starts.

A sweep runs for hours; a `git pull` or an edit meanwhile must not change
what its runs record. `AT_START` is this checkout's commit (`+changes` with
uncommitted changes to tracked files) when the code runs from its own git
checkout, else `dropout-zoo <version>` (an installed package, or a checkout
git will not read), else None. A comparison compares commits only
(`is_commit`): a package version names no code exactly.
"""
import importlib.metadata
import os
import re
import subprocess

_COMMIT = re.compile(r"^[0-9a-f]{40}(\+changes)?$")


def code_version(root=None):
    """The commit (or package version) of the code at `root` (default: this project's own directory)."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        if os.path.realpath(git("rev-parse", "--show-toplevel")) == os.path.realpath(root):  # not a parent repo's
            return git("rev-parse", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no")
                                               else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"dropout-zoo {importlib.metadata.version('dropout-zoo')}"
    except importlib.metadata.PackageNotFoundError:
        return None


def is_commit(version):
    """Whether a recorded code version names a git commit (not a package version, not None)."""
    return bool(version) and bool(_COMMIT.match(version))


AT_START = code_version()
