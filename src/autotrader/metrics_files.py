"""Headline metrics: the dozen numbers a reviewer compares, beside each stage's detail JSON.

A stage's detail file (``metrics/evaluate.json``: per-instrument numbers, hashes, run ids, windows)
is what later stages and tools read; it is a plain DVC ``out``. What ``dvc metrics show``,
``dvc metrics diff`` and ``dvc exp show`` display is ``metrics/headline/<name>.json``, a flat dict of
at most :data:`MAX_KEYS` scalars picked from the detail here, so those commands fit a terminal and a
diff between two runs is a short table. (The health stage's ``health.json`` explains each instrument
in a line of text for people and alerts; its headline here keeps only the counts.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autotrader.atomic import write_json

HEADLINE_DIR = "headline"
MAX_KEYS = 14

Scalar = bool | int | float | str


def _sum(instruments: Mapping[str, Any], key: str) -> int:
    return sum(int(v.get(key) or 0) for v in instruments.values() if isinstance(v, Mapping))


def _validation(d: Mapping[str, Any]) -> dict[str, Any]:
    inst = d.get("instruments") or {}
    return {
        "success": d.get("success"),
        "rows": d.get("rows"),
        "instruments": len(inst),
        "failed": d.get("failed"),
        "warned": d.get("warned"),
        "gaps": _sum(inst, "gaps"),
        "missing_bars": _sum(inst, "missing_bars"),
        "off_calendar_bars": _sum(inst, "off_calendar_bars"),
    }


def _features(d: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "rows",
        "rows_written",
        "feature_count",
        "instrument_count",
        "partitions_written",
        "partitions_skipped",
    )
    return {k: d.get(k) for k in keys} | {"mode": d.get("mode")}


def _archive(d: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "objects_total",
        "objects_written",
        "objects_skipped",
        "objects_replaced",
        "bytes_written",
        "bytes_total",
    )
    return {k: d.get(k) for k in keys} | {"instruments": len(d.get("instruments") or [])}


def _train(d: Mapping[str, Any]) -> dict[str, Any]:
    chosen = d.get("chosen")
    metric = d.get("cv_metric", "cv")
    out: dict[str, Any] = {"chosen": chosen}
    for name, cand in (d.get("cv") or {}).items():
        out[f"cv_{metric}_{name}"] = cand.get("mean")
    out |= {f"valid_{k}": v for k, v in (d.get("valid") or {}).items()}
    counts = d.get("counts") or {}
    return out | {
        "train_rows": counts.get("train"),
        "valid_rows": counts.get("valid"),
        "features": d.get("features"),
        "trials": (d.get("trials") or {}).get("total"),
    }


def _evaluate(d: Mapping[str, Any]) -> dict[str, Any]:
    p = d.get("portfolio") or {}
    ci = p.get("sharpe_ci") or [None, None]
    return {
        "sharpe": p.get("sharpe"),
        "sharpe_ci_low": ci[0],
        "sharpe_ci_high": ci[1],
        "max_drawdown": p.get("max_drawdown"),
        "win_rate": p.get("win_rate"),
        "n_trades": p.get("n_trades"),
        "total_return": p.get("total_return"),
        "profit_factor": p.get("profit_factor"),
        "dsr": (d.get("dsr") or {}).get("dsr"),
        "ic": d.get("ic"),
        "rank_ic": d.get("rank_ic"),
        "balanced_accuracy": (d.get("classification") or {}).get("balanced_accuracy"),
    }


def _gates(d: Mapping[str, Any]) -> dict[str, Any]:
    gates = [g for g in d.get("gates") or [] if isinstance(g, Mapping)]
    out: dict[str, Any] = {"promote": d.get("promote"), "verdict": d.get("verdict")}
    out["passed"] = sum(1 for g in gates if g.get("passed"))
    out["failed"] = len(gates) - out["passed"]
    for g in gates:  # one column per gate: its verdict (values are in evaluate's headline)
        out[f"gate_{g.get('name')}"] = g.get("verdict") or ("pass" if g.get("passed") else "fail")
    return out


def _health(d: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "status",
        "instruments_checked",
        "drifted_instruments",
        "stale_instruments",
        "gap_instruments",
        "jump_instruments",
        "signals_compared",
        "signals_drifted",
        "max_psi",
        "max_psi_ratio",
        "lag_bars",
    )
    return {k: d.get(k) for k in keys}


HEADLINES: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "validation": _validation,
    "features": _features,
    "archive": _archive,
    "train": _train,
    "evaluate": _evaluate,
    "gates": _gates,
    "health": _health,
}


def headline(name: str, detail: Mapping[str, Any]) -> dict[str, Scalar]:
    """The headline of stage file ``name`` from its detail dict: scalars only, floats rounded to 6 places."""
    out: dict[str, Scalar] = {}
    for key, value in HEADLINES[name](detail).items():
        if isinstance(value, float):
            out[key] = round(value, 6)
        elif isinstance(value, bool | int | str):
            out[key] = value
    if len(out) > MAX_KEYS:
        raise ValueError(f"headline {name}: {len(out)} numbers, more than a reviewer reads ({MAX_KEYS})")
    return out


def headline_path(metrics_dir: str | Path, name: str) -> Path:
    return Path(metrics_dir) / HEADLINE_DIR / f"{name}.json"


def write_headline(metrics_dir: str | Path, name: str, detail: Mapping[str, Any]) -> Path:
    """Write ``metrics/headline/<name>.json`` (atomically) from the detail the stage just wrote."""
    path = headline_path(metrics_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, headline(name, detail))
    return path
