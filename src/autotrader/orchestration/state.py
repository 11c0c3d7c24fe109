"""The hand-off between the pods of an Argo workflow: what DVC's remote does not carry.

Cached outputs (data/raw, the feature store, the model …) travel through the DVC remote. ``dvc.lock``
and the ``cache: false`` outputs (metrics/*.json, reports/) do not, yet the next stage needs them
(``features`` depends on ``metrics/validation.json``; ``gate`` on ``metrics/evaluate.json``). A step
therefore saves them as its ``state`` artifact and the next step restores them before it pulls.

``save`` also writes the step's Argo output parameters (max PSI, stale instruments, freshness lag, gate
decision, promoted model version): one small file each, read by the workflow's metrics and ``when:``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from autotrader.atomic import atomic_dir, write_json, write_text
from autotrader.console import console
from autotrader.errors import AutoTraderError, ConfigError
from autotrader.jsonfiles import read_json
from autotrader.params import Params

STATE_FILE = "state.json"
LOCK_FILE = "dvc.lock"
# Where a restored state's description waits for the next save (DVC's own scratch folder, never tracked).
CARRIED = Path(".dvc") / "tmp" / "autotrader-state.json"
NONE = "none"


class StateError(AutoTraderError):
    """The published state is missing or not the one this run needs (yet)."""


@dataclass(frozen=True)
class Outputs:
    """The Argo output parameters of a step; ``NaN``/``none`` when the step's stage does not make them."""

    max_psi: float = math.nan
    stale_instruments: float = math.nan
    freshness_lag_seconds: float = math.nan
    decision: str = NONE
    model_version: str = NONE
    data_end: str = ""

    def files(self) -> dict[str, str]:
        def num(x: float) -> str:
            return "NaN" if math.isnan(x) else f"{x:g}"

        return {
            "max-psi": num(self.max_psi),
            "stale-instruments": num(self.stale_instruments),
            "freshness-lag-seconds": num(self.freshness_lag_seconds),
            "decision": self.decision,
            "model-version": self.model_version,
            "data-end": self.data_end,
        }


def _find(obj: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(obj, list):
        for item in obj:
            yield from _find(item, key)


def _numbers(values: Iterator[Any]) -> list[float]:
    out = []
    for value in values:
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            out.append(float(value))
    return out


def _read_json(path: Path) -> Any:
    return read_json(path, ConfigError, missing_ok=True)


def health_outputs(health: Any) -> tuple[float, float, float]:
    """(max PSI, stale instruments, largest freshness lag in seconds) from metrics/health.json.

    The lag is the largest ``lag_bars`` of any instrument times the bar interval: bars behind the last
    bar its market calendar expected (closed sessions do not count).
    """
    if not isinstance(health, dict):
        return math.nan, math.nan, math.nan
    psi = _numbers(_find(health, "max_psi")) or _numbers(_find(health, "psi"))
    max_psi = max(psi) if psi else math.nan
    stale = math.nan
    for value in _find(health, "stale_instruments"):
        if isinstance(value, list):
            stale = float(len(value))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            stale = float(value)
        break
    if math.isnan(stale):
        flags = [v for v in _find(health, "stale") if isinstance(v, bool)]
        if flags:
            stale = float(sum(flags))
    lag = math.nan
    lags = _numbers(_find(health, "lag_bars"))
    if lags:
        try:
            seconds = pd.Timedelta(
                pd.tseries.frequencies.to_offset(str(health.get("interval")))
            ).total_seconds()
            lag = max(lags) * seconds
        except (ValueError, TypeError):
            lag = math.nan
    return max_psi, stale, lag


def gate_decision(gates: Any) -> str:
    """``promote`` or ``reject`` from metrics/gates.json (``none`` when there is no decision)."""
    if not isinstance(gates, dict):
        return NONE
    decision = gates.get("decision")
    if isinstance(decision, str) and decision.strip():
        return decision.strip().lower()
    for key in ("promote", "passed", "approved"):
        if isinstance(gates.get(key), bool):
            return "promote" if gates[key] else "reject"
    return NONE


def promoted_version(promotion: Any) -> str:
    """The registry version that ``promote`` registered, or ``none`` when it promoted nothing."""
    if not isinstance(promotion, dict) or promotion.get("promoted") is False:
        return NONE
    for key in ("version", "model_version"):
        value = promotion.get(key)
        if value is not None and str(value).strip() not in ("", "None"):
            return str(value).strip()
    return NONE


def read_outputs(params: Params, root: Path = Path(".")) -> Outputs:
    metrics = root / params.paths.metrics
    psi, stale, lag = health_outputs(_read_json(metrics / "health.json"))
    return Outputs(
        max_psi=psi,
        stale_instruments=stale,
        freshness_lag_seconds=lag,
        decision=gate_decision(_read_json(metrics / "gates.json")),
        model_version=promoted_version(_read_json(metrics / "promotion.json")),
        data_end=params.data.end,
    )


def _carried_dirs(params: Params) -> tuple[str, ...]:
    return (params.paths.metrics, params.paths.reports)


def save(
    params: Params, dest: str | Path, stages: list[str], root: Path = Path("."), outputs: Path | None = None
) -> dict[str, Any]:
    """Write this step's state (dvc.lock, metrics/, reports/, state.json) to ``dest``; outputs if asked."""
    carried = _read_json(root / CARRIED) or {}
    history = [*carried.get("stages", []), *[s for s in stages if s]]
    info = {"data_end": params.data.end, "stages": history}
    with atomic_dir(dest) as tmp:
        if (root / LOCK_FILE).is_file():
            shutil.copy2(root / LOCK_FILE, tmp / LOCK_FILE)
        for folder in _carried_dirs(params):
            if (root / folder).is_dir():
                shutil.copytree(root / folder, tmp / folder)
        write_json(tmp / STATE_FILE, info)
    if outputs is not None:
        for name, value in read_outputs(params, root).files().items():
            write_text(Path(outputs) / name, value + "\n")
    console.print(f"state: saved {', '.join(history) or 'no stages'} (data.end={params.data.end}) → {dest}")
    return info


def restore(params: Params, src: str | Path, root: Path = Path(".")) -> dict[str, Any] | None:
    """Put a saved state back into the workspace; a missing or empty ``src`` is the first run: nothing."""
    src = Path(src)
    info = _read_json(src / STATE_FILE) if src.is_dir() else None
    if info is None:
        console.print(f"state: nothing to restore from {src} (first run)")
        return None
    if (src / LOCK_FILE).is_file():
        write_text(root / LOCK_FILE, (src / LOCK_FILE).read_text())
    for folder in _carried_dirs(params):
        if (src / folder).is_dir():
            with atomic_dir(root / folder) as tmp:
                shutil.copytree(src / folder, tmp, dirs_exist_ok=True)
    write_json(root / CARRIED, info)
    console.print(
        f"state: restored {', '.join(info.get('stages', [])) or 'no stages'} (data.end={info.get('data_end')})"
    )
    return info


def check(src: str | Path, data_end: str) -> dict[str, Any]:
    """Succeed only if ``src`` holds a state whose data.end is ``data_end`` (the run to wait for)."""
    src = Path(src)
    info = _read_json(src / STATE_FILE) if src.is_dir() else None
    if info is None:
        raise StateError(
            f"{src}: no published pipeline state yet (the nightly data pipeline has not published)"
        )
    if str(info.get("data_end")) != data_end:
        raise StateError(
            f"{src}: the published feature store is for data.end={info.get('data_end')}, not {data_end} yet; "
            "the nightly data pipeline has not published today's"
        )
    console.print(f"state: the published feature store is for data.end={data_end}")
    return info
