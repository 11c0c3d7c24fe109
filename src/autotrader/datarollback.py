"""Data rollback: put the raw bars and the feature store back to what a git revision's ``dvc.lock`` names.

After a bad day (a vendor re-sent a corrupted session, a source bug that validation did not catch) the
nightly commit of ``dvc.lock`` is the record of every earlier good state. ``rollback_data`` reads that
commit's ``dvc.lock`` (``git show <rev>:dvc.lock``), takes the outputs at ``paths.raw`` and
``paths.features`` (DVC 3 ``md5`` directory hashes) and restores exactly those trees:

1. **Find.** Every object (the ``.dir`` listing and each file) must be in the DVC cache. What is missing
   is fetched for that revision from its default remote (``dvc fetch`` with ``revs=[rev]``, the objects
   ``dvc pull`` would bring; DVC reads the remote from that commit's ``.dvc/config``). If anything is
   still missing, it refuses and names what and where it looked. Nothing has been touched at that point.
2. **Build and verify.** Each tree is copied out of the cache into a temporary sibling of its target
   (``data/.raw.*.tmp``), hashing every file on the way; a hash or count that differs from the listing is
   a refusal (a corrupted cache), and the temporary tree is removed.
3. **Swap.** Only when both trees are complete and verified are they swapped in, each by two renames
   (``autotrader.atomic.atomic_dir``): a reader sees the old tree or the restored one, never a mix of
   files. Each target's output lock is held throughout, so no stage writes it meanwhile, and a swap
   killed between its renames is put back by the next stage start (``atomic.guard_output``).

``dvc.lock`` and git are left alone: the workspace then holds the older data while the current
``dvc.lock`` still names the bad day, so ``dvc status`` says so until the next ``dvc repro`` or commit
(docs/runbooks/data-rollback.md says what to do next).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotrader.atomic import atomic_dir, guard_output
from autotrader.errors import AutoTraderError
from autotrader.params import Params

CHUNK = 1 << 20


class RollbackRefused(AutoTraderError):
    """The data of the requested revision cannot be restored; the workspace is as it was."""


@dataclass(frozen=True)
class TrackedTree:
    """One directory output as a ``dvc.lock`` names it."""

    path: str  # relative to the repository root, as in dvc.lock
    stage: str
    md5: str  # the directory's hash, ``<hex>.dir``
    nfiles: int | None


@dataclass(frozen=True)
class RestoredTree:
    path: str
    md5: str
    files: int
    bytes: int


def resolve_rev(root: Path, rev: str) -> str:
    """The full commit id of ``rev`` in the repository at ``root``."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RollbackRefused(f"{rev!r} is not a commit of the git repository at {root}")
    return proc.stdout.strip()


def lock_at(root: Path, commit: str) -> dict[str, Any]:
    """``dvc.lock`` as committed in ``commit``."""
    proc = subprocess.run(["git", "show", f"{commit}:dvc.lock"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RollbackRefused(f"commit {commit[:12]} has no dvc.lock: its data were never recorded")
    lock = yaml.safe_load(proc.stdout)
    if not isinstance(lock, dict) or not isinstance(lock.get("stages"), dict):
        raise RollbackRefused(f"dvc.lock of commit {commit[:12]} has no stages")
    return lock


def tracked_trees(lock: dict[str, Any], paths: list[str], commit: str) -> list[TrackedTree]:
    """The lock's directory outputs at ``paths``; a refusal names any path the lock does not track."""
    found: dict[str, TrackedTree] = {}
    for stage, entry in lock["stages"].items():
        for out in entry.get("outs") or []:
            path = os.path.normpath(str(out.get("path", "")))
            if path not in paths:
                continue
            md5 = str(out.get("md5", ""))
            if out.get("hash") != "md5" or not md5.endswith(".dir"):
                raise RollbackRefused(
                    f"dvc.lock of commit {commit[:12]}: {path} ({stage}) is not a DVC 3 directory output "
                    f"(hash {out.get('hash')!r}, md5 {md5!r}); only those can be restored"
                )
            found[path] = TrackedTree(path, stage, md5, out.get("nfiles"))
    absent = [p for p in paths if p not in found]
    if absent:
        raise RollbackRefused(f"dvc.lock of commit {commit[:12]} does not track {', '.join(absent)}")
    return [found[p] for p in paths]


class _Cache:
    """The DVC cache of the repository: object paths, and fetching a revision's objects from the remote."""

    def __init__(self, root: Path) -> None:
        from dvc.repo import Repo

        self.root = root
        self.repo = Repo(str(root))
        self.odb = self.repo.cache.local

    def object_path(self, oid: str) -> Path:
        return Path(self.odb.oid_to_path(oid))

    def listing(self, tree: TrackedTree) -> list[dict[str, str]] | None:
        path = self.object_path(tree.md5)
        if not path.is_file():
            return None
        entries = json.loads(path.read_text())
        return [{"relpath": e["relpath"], "md5": e["md5"]} for e in entries]

    def missing(self, tree: TrackedTree) -> int | None:
        """How many file objects of ``tree`` are not in the cache; None when its listing itself is not."""
        entries = self.listing(tree)
        if entries is None:
            return None
        return sum(not self.object_path(e["md5"]).is_file() for e in entries)

    def fetch(self, trees: list[TrackedTree], commit: str) -> str | None:
        """Fetch ``trees`` as of ``commit`` from that commit's default remote; why it could not, or None."""
        from dvc.exceptions import DvcException

        try:
            self.repo.fetch(targets=[t.path for t in trees], revs=[commit], workspace=False)
        except DvcException as exc:
            return str(exc).strip() or type(exc).__name__
        return None

    def close(self) -> None:
        self.repo.close()


def _copy_verified(src: Path, dst: Path, expected: str) -> int:
    """Copy ``src`` to ``dst`` hashing it on the way; a refusal when the md5 is not ``expected``."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    if digest.hexdigest() != expected:
        raise RollbackRefused(
            f"cache object {src} does not hash to {expected} (got {digest.hexdigest()}): the cache is "
            "corrupted; run `dvc fetch` from the remote or `dvc cache` checks"
        )
    return size


def _build(cache: _Cache, tree: TrackedTree, dest: Path) -> RestoredTree:
    entries = cache.listing(tree)
    assert entries is not None  # checked before anything is built
    if tree.nfiles is not None and len(entries) != tree.nfiles:
        raise RollbackRefused(
            f"{tree.path}: the cached listing {tree.md5} has {len(entries)} files, dvc.lock says {tree.nfiles}"
        )
    total = 0
    for entry in entries:
        rel = Path(entry["relpath"])
        if rel.is_absolute() or ".." in rel.parts:
            raise RollbackRefused(f"{tree.path}: listing {tree.md5} names a path outside the tree: {rel}")
        total += _copy_verified(cache.object_path(entry["md5"]), dest / rel, entry["md5"])
    return RestoredTree(tree.path, tree.md5, len(entries), total)


def _describe_missing(cache: _Cache, trees: list[TrackedTree]) -> list[str]:
    gaps = []
    for tree in trees:
        missing = cache.missing(tree)
        if missing is None:
            gaps.append(f"{tree.path}: its listing {tree.md5}")
        elif missing:
            gaps.append(f"{tree.path}: {missing} of {len(cache.listing(tree) or [])} files")
    return gaps


def rollback_data(params: Params, rev: str, root: str | os.PathLike[str] = ".") -> list[RestoredTree]:
    """Restore ``paths.raw`` and ``paths.features`` to what ``rev``'s ``dvc.lock`` names; all or nothing."""
    root = Path(root).resolve()
    commit = resolve_rev(root, rev)
    paths = [os.path.normpath(params.paths.raw), os.path.normpath(params.paths.features)]
    trees = tracked_trees(lock_at(root, commit), paths, commit)
    cache = _Cache(root)
    try:
        gaps = _describe_missing(cache, trees)
        if gaps:
            why = cache.fetch(trees, commit)
            gaps = _describe_missing(cache, trees)
            if gaps:
                where = (
                    f"the remote could not supply them: {why}"
                    if why
                    else "nor on the remote that commit's .dvc/config names"
                )
                raise RollbackRefused(
                    f"the data of commit {commit[:12]} cannot be found: not in the DVC cache "
                    f"({cache.odb.path}) — {'; '.join(gaps)} — {where}. Nothing was changed."
                )
        with contextlib.ExitStack() as stack:
            for tree in trees:
                stack.enter_context(guard_output(root / tree.path))
            return _swap_in(cache, trees, root)
    finally:
        cache.close()


def _swap_in(cache: _Cache, trees: list[TrackedTree], root: Path) -> list[RestoredTree]:
    """Build every tree in a temporary sibling; the swaps happen only after the last one verified."""
    restored: list[RestoredTree] = []

    def build(i: int) -> None:
        if i == len(trees):
            return
        with atomic_dir(root / trees[i].path) as tmp:
            restored.append(_build(cache, trees[i], tmp))
            build(i + 1)  # the inner trees are built (and verified) before this one is swapped in

    build(0)
    return restored
