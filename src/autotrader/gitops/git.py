"""The few git operations promotion needs: commit the pin files, read one file's history.

Plain ``git`` subprocesses: history is only ever appended to (no amend, reset or rebase here).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from autotrader.errors import DeployError

TRAILER_ACTION = "Autotrader-Action"
TRAILER_VERSION = "Autotrader-Model-Version"
TRAILER_PREVIOUS = "Autotrader-Previous-Version"
TRAILER_IMAGE = "Autotrader-Image-Digest"


def git(repo: str | os.PathLike[str], *args: str, check: bool = True) -> str:
    """Run ``git -C repo args…`` and return stdout; a DeployError carries git's own message."""
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        raise DeployError(
            f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout


def toplevel(path: str | os.PathLike[str]) -> Path:
    """The root of the git work tree holding ``path``."""
    start = Path(path)
    folder = start if start.is_dir() else start.parent
    return Path(git(folder, "rev-parse", "--show-toplevel").strip())


def relative(repo: Path, path: Path) -> str:
    return Path(os.path.relpath(path.resolve(), repo.resolve())).as_posix()


def commit_file(path: str | os.PathLike[str], message: str) -> str:
    """Commit ``path`` and nothing else (other staged changes stay staged); return the new commit id."""
    return commit_files([path], message)


def commit_files(paths: list[str | os.PathLike[str]], message: str) -> str:
    """Commit ``paths`` (one work tree) and nothing else, in one commit; return the new commit id."""
    resolved = [Path(p) for p in paths]
    repo = toplevel(resolved[0])
    rels = [relative(repo, p) for p in resolved]
    git(repo, "add", "--", *rels)
    git(repo, "commit", "--quiet", "--only", "-m", message, "--", *rels)
    return git(repo, "rev-parse", "HEAD").strip()


def changed_files(repo: str | os.PathLike[str], commit: str) -> list[str]:
    """The paths a commit touched."""
    out = git(repo, "show", "--name-only", "--format=", commit)
    return [line for line in out.splitlines() if line.strip()]


@dataclass(frozen=True)
class Revision:
    """One committed version of a file."""

    commit: str
    text: str
    trailers: dict[str, str]


def file_history(path: str | os.PathLike[str]) -> list[Revision]:
    """Every committed content of ``path``, oldest first (renames not followed)."""
    path = Path(path)
    repo = toplevel(path)
    rel = relative(repo, path)
    commits = git(repo, "log", "--format=%H", "--reverse", "--", rel).split()
    history = []
    for commit in commits:
        text = git(repo, "show", f"{commit}:{rel}", check=False)
        body = git(repo, "show", "-s", "--format=%B", commit)
        history.append(Revision(commit=commit, text=text, trailers=parse_trailers(body)))
    return history


def parse_trailers(message: str) -> dict[str, str]:
    """``Key: value`` lines of the last paragraph of a commit message."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if not paragraphs:
        return {}
    out = {}
    for line in paragraphs[-1].splitlines():
        key, sep, value = line.partition(": ")
        if sep and key and " " not in key:
            out[key] = value.strip()
    return out
