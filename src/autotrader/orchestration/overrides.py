"""``KEY=VALUE`` params overrides for a pipeline step, like ``dvc exp run -S`` but strict.

An Argo step edits the params.yaml of its own pod before ``dvc repro`` (DVC then records the values it
ran with in dvc.lock). The edited file must still pass ``load_params``: a misspelt key fails the step
before any stage runs, instead of being silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from autotrader.atomic import write_text
from autotrader.errors import ConfigError
from autotrader.params import Params

_RELATIVE_DAY = re.compile(r"^today(?:-(\d+)h)?$")


def relative_day(value: str, now: datetime | None = None) -> str | None:
    """``today`` → the UTC date now; ``today-4h`` → the UTC date four hours ago; anything else → None."""
    match = _RELATIVE_DAY.match(value.strip())
    if not match:
        return None
    moment = (now or datetime.now(UTC)).astimezone(UTC) - timedelta(hours=int(match.group(1) or 0))
    return moment.strftime("%Y-%m-%d")


def parse_assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(
            f"params override {text!r}: expected KEY=VALUE with a dotted key such as data.end=2026-11-20"
        )
    return key, value


def _typed(raw: str, existing: Any) -> Any:
    """YAML-typed like ``dvc exp run -S``, except that a string setting stays a string (dates, symbols)."""
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"params override value {raw!r} is not valid YAML: {exc}") from exc
    if isinstance(existing, str) and not isinstance(value, str):
        return raw
    return value


def apply_overrides(
    params_path: str | Path, assignments: Iterable[str], now: datetime | None = None
) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides to params.yaml atomically; returns what was set. Unknown keys fail."""
    params_path = Path(params_path)
    try:
        params = yaml.safe_load(params_path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{params_path}: not found (run from the repository root)") from exc
    changes: dict[str, Any] = {}
    for text in assignments:
        key, raw = parse_assignment(text)
        node = params
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                raise ConfigError(f"params override {key}: {part!r} is not a section of {params_path}")
            node = child
        leaf = parts[-1]
        existing = node.get(leaf)
        if key == "data.end" and (day := relative_day(raw, now)) is not None:
            value: Any = day
        else:
            value = _typed(raw, existing)
        node[leaf] = value
        changes[key] = value
    try:
        Params.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise ConfigError(
            f"params overrides {sorted(changes)} make {params_path} invalid: {problems}"
        ) from exc
    if changes:
        write_text(params_path, yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    return changes
