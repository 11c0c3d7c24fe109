"""Atomic writes: a reader sees the old file or the new one, never half of either.

Every output of the pipeline goes through here, so a failed run leaves what was there before.

A process killed with ``kill -9`` runs no ``finally``: it can leave the temporary siblings of an
output (``.<name>.*.tmp``), the old tree parked for deletion (``.<name>.trash``), or, between the two
renames of a directory swap, no output at all. ``guard_output`` is what a stage wraps its run in: it
takes a per-output lock (so no concurrent run's temp files are swept), puts a parked old tree back if
the swap never finished, and removes the stale siblings.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from autotrader.errors import AutoTraderError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600; the result should look like any other file
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Sorted keys and a trailing newline so that the same content gives the same bytes."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(target: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """Parquet without pandas' index and with no timestamps in the file metadata, so reruns are byte-identical."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a whole directory in a temporary sibling, then swap it in place of ``target``.

    The swap is two renames (old → trash, new → target); a crash between them leaves the old tree
    in the ``.trash`` sibling, never a half-written target.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        trash = None
        if target.exists():
            trash = target.with_name(f".{target.name}.trash")
            if trash.exists():
                shutil.rmtree(trash)
            os.replace(target, trash)
        os.replace(tmp, target)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- crash hygiene


class OutputLocked(AutoTraderError):
    """Another process is writing the same output right now."""


_TEMPDIR_NAME = re.compile(r"^tmp[a-z0-9_]{8}$")  # tempfile.mkdtemp()'s default names


def trash_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.trash")


def lock_path(target: str | os.PathLike[str]) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def stale_siblings(target: str | os.PathLike[str], *, tempdirs: bool = False) -> list[Path]:
    """Leftovers of interrupted writes of ``target``: ``.<name>.*.tmp``, ``.<name>.trash`` and, with
    ``tempdirs``, the ``tmp`` + 8 random characters folders that ``tempfile`` made beside it."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    found = sorted(target.parent.glob(f".{glob.escape(target.name)}.*.tmp"))
    if trash_path(target).exists():
        found.append(trash_path(target))
    if tempdirs:
        found.extend(p for p in sorted(target.parent.iterdir()) if p.is_dir() and _TEMPDIR_NAME.match(p.name))
    return found


def recover_swap(target: str | os.PathLike[str]) -> bool:
    """A swap killed between its two renames left no ``target`` and the old tree in ``.trash``: put it back."""
    target = Path(target)
    trash = trash_path(target)
    if not target.exists() and trash.is_dir():
        os.replace(trash, target)
        return True
    return False


def sweep(target: str | os.PathLike[str], *, tempdirs: bool = False) -> list[Path]:
    """Restore an interrupted swap, then delete the stale siblings of ``target``; returns what was removed.

    Only safe while holding ``target``'s lock (``guard_output``): a running writer's temp files look
    exactly like a dead one's.
    """
    recover_swap(target)
    removed = []
    for path in stale_siblings(target, tempdirs=tempdirs):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def output_lock(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``.<name>.lock`` beside ``target``; the kernel drops it if we die."""
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OutputLocked(
                f"{target}: another process holds {path} (a second run of the same stage?); "
                "wait for it to finish"
            ) from exc
        yield path
    finally:
        os.close(fd)


@contextlib.contextmanager
def guard_output(
    target: str | os.PathLike[str],
    *,
    tempdirs: bool = False,
    also: tuple[str | os.PathLike[str], ...] = (),
) -> Iterator[list[Path]]:
    """Lock ``target`` for a whole stage run and clean up after any earlier run that was killed.

    ``also`` names the stage's other outputs (metrics files), whose stale temp siblings go too.
    Yields the stale paths that were removed, so the stage can say so.
    """
    with output_lock(target):
        removed = sweep(target, tempdirs=tempdirs)
        for other in also:
            removed.extend(sweep(other))
        yield removed
