"""A roll-forward journal: several renames and one final file, committed as one step even across kill -9.

An incremental store update moves many finished files into place and then rewrites the file that lists
them (the feature store's ``_metadata.json``). A process killed inside that loop would leave files the
list does not name, or a list that names files that are not there. So the whole intent is written
first, atomically, to ``_journal.json`` in the same folder: every (source → destination) rename and the
final file's content. Then the renames run, then the final file is written, then the journal is
deleted. ``recover`` (called on the next start, before anything sweeps the sources away) finds a
journal that was not deleted and finishes it: the sources that are still there are moved, the final
file is written. The commit happens completely or, if killed before the journal exists, not at all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autotrader.atomic import write_json
from autotrader.errors import AutoTraderError
from autotrader.faults import fault_point

JOURNAL_FILE = "_journal.json"


class JournalError(AutoTraderError):
    """A journal names a rename whose source and destination are both gone: the commit cannot finish."""


def journal_path(root: str | os.PathLike[str]) -> Path:
    return Path(root) / JOURNAL_FILE


def commit(root: str | os.PathLike[str], moves: list[tuple[Path, Path]], final: Path, content: Any) -> None:
    """Rename every ``source → destination`` (paths under ``root``), then write ``final`` as JSON."""
    root = Path(root)
    record = {
        "moves": [[str(Path(src).relative_to(root)), str(Path(dst).relative_to(root))] for src, dst in moves],
        "final": str(Path(final).relative_to(root)),
        "content": content,
    }
    write_json(journal_path(root), record)
    _apply(root, record)


def recover(root: str | os.PathLike[str]) -> bool:
    """Finish a commit that a killed process left half done; True if there was one."""
    root = Path(root)
    path = journal_path(root)
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except ValueError:  # cannot happen with an atomic write; a torn file means nothing was applied yet
        path.unlink()
        return False
    _apply(root, record)
    return True


def _apply(root: Path, record: dict[str, Any]) -> None:
    for src, dst in record["moves"]:
        source, dest = root / src, root / dst
        if source.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, dest)
            fault_point("journal", "middle")  # tests kill here: a commit interrupted after its first rename
        elif not dest.exists():
            raise JournalError(
                f"{journal_path(root)}: neither {source} nor {dest} exists; the interrupted commit cannot "
                "be finished (delete the store to rebuild it)"
            )
    write_json(root / record["final"], record["content"])
    journal_path(root).unlink()
