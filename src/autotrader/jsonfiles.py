"""Read a JSON file another stage or tool wrote, with an error that says what to do: the one place it is done.

Why one function: a stage's input is often the JSON output of an earlier stage, and a missing or torn
file must fail with the file's path and the step that makes it ("run the evaluate stage first"), as the
project's error rule asks, never with a bare ``FileNotFoundError`` or ``JSONDecodeError`` traceback.
Each module raises its own error type (``ModelError``, ``StoreError``…), so the type is a parameter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autotrader.errors import AutoTraderError


def read_json(
    path: str | os.PathLike[str],
    error: type[AutoTraderError],
    hint: str = "",
    *,
    missing_ok: bool = False,
) -> Any:
    """The parsed content of ``path``.

    A missing file raises ``error("<path>: not found; <hint>")`` (or returns None with ``missing_ok``);
    unreadable bytes or invalid JSON raise ``error("<path>: not valid JSON (<why>); <hint>")``.
    """
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        if missing_ok:
            return None
        raise error(f"{path}: not found{suffix}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: unreadable ({exc}){suffix}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise error(f"{path}: not valid JSON ({exc}){suffix}") from exc
