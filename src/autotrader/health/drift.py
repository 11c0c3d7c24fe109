"""Feature drift: Evidently's PSI per instrument and column, with thresholds calibrated to the window size.

One source of numbers: every PSI is computed by Evidently (``ValueDrift(method="psi")``, or the
same registered stattest called directly when no HTML report is wanted — a test holds the two
equal), and ``psi.json`` holds exactly what it returned. There is no PSI of our own.

Why a threshold per column: the PSI of two samples from the *same* distribution is not zero. On
Evidently's bins it is about (bins − 1)·(1/n_current + 1/n_reference), plus a jump of ≈ r·ln(r/10⁻⁴)
whenever a bin holding a share r of the reference happens to be empty in a small current window. A
fixed 0.2 is therefore noise for SPY's 78-bar trading day and a blunt instrument for BTC's 288.
So each column's threshold is the larger of ``health.psi_threshold`` and the ``1 − alpha`` quantile
of Evidently's PSI between two independent uniform samples of the column's sizes — exactly its null
distribution, because columns are compared on the reference's quantile scale (see
``windows.reference_quantiles``) and the signals' values are (nearly) independent. That quantile is
found by simulation with Evidently's own stattest, seeded, and cached per size pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

COLUMN_SEP = ":"
MIN_ROWS = 30  # fewer values than this in either window: too few for a distribution
CALIBRATION_SEED = 20261120


def column_name(instrument: str, name: str) -> str:
    return f"{instrument}{COLUMN_SEP}{name}"


# ----------------------------------------------------------------------------------------- Evidently


def _stattest(method: str) -> Any:
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    probe = pd.Series([0.0, 1.0])
    return get_stattest(probe, probe, ColumnType.Numerical, method)


def stattest_scores(
    reference: dict[str, np.ndarray],
    current: dict[str, np.ndarray],
    thresholds: dict[str, float],
    method: str,
) -> dict[str, tuple[float, bool]]:
    """Evidently's drift score and verdict per column, through its registered stattest (no report).

    The same function ``ValueDrift`` calls; used where no HTML is wanted (the bench, thousands of
    runs). ``tests/test_health_drift.py`` checks it returns what a ``Report`` returns.
    """
    from evidently.legacy.core import ColumnType

    test = _stattest(method)
    out: dict[str, tuple[float, bool]] = {}
    for column, ref in reference.items():
        result = test(pd.Series(ref), pd.Series(current[column]), ColumnType.Numerical, thresholds[column])
        out[column] = (float(result.drift_score), bool(result.drifted))
    return out


def report_scores(
    reference: dict[str, np.ndarray],
    current: dict[str, np.ndarray],
    thresholds: dict[str, float],
    method: str,
) -> tuple[dict[str, tuple[float, bool]], Any]:
    """Evidently's ``Report`` of one ``ValueDrift`` per column: (score, drifted) per column and the snapshot."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = list(reference)
    definition = DataDefinition(numerical_columns=columns)
    ref = pd.DataFrame({c: pd.Series(v) for c, v in reference.items()})
    cur = pd.DataFrame({c: pd.Series(v) for c, v in current.items()})
    report = Report([ValueDrift(column=c, method=method, threshold=thresholds[c]) for c in columns])
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    return scores_from_snapshot(snapshot.dict()), snapshot


def scores_from_snapshot(result: dict[str, Any]) -> dict[str, tuple[float, bool]]:
    """(score, drifted) per column from an Evidently 0.7 result (``snapshot.dict()``): its ``ValueDrift`` metrics.

    Each looks like ``{"config": {"type": "evidently:metric_v2:ValueDrift", "column": …, "method": "psi",
    "threshold": t}, "value": <psi>}``; ValueDrift's rule for a divergence is ``value ≥ threshold``.
    """
    out: dict[str, tuple[float, bool]] = {}
    for metric in result.get("metrics", []):
        config = metric.get("config", {})
        if str(config.get("type", "")).endswith(":ValueDrift"):
            value = float(metric["value"])
            out[config["column"]] = (value, value >= float(config["threshold"]))
    return out


@lru_cache(maxsize=512)
def null_quantile(n_reference: int, n_current: int, alpha: float, method: str = "psi") -> float:
    """The ``1 − alpha`` quantile of Evidently's score between two independent uniform samples of these sizes.

    ``ceil(20 / alpha)`` draws (about 20 beyond the quantile), seeded: the same sizes always give
    the same threshold.
    """
    from evidently.legacy.core import ColumnType

    test = _stattest(method)
    draws = math.ceil(20 / alpha)
    rng = np.random.default_rng([CALIBRATION_SEED, n_reference, n_current])
    scores = np.empty(draws)
    ref = pd.Series(rng.uniform(size=n_reference))
    for i in range(draws):
        if i % 50 == 0:  # a fresh reference now and then: the quantile is over both samples' noise
            ref = pd.Series(rng.uniform(size=n_reference))
        cur = pd.Series(rng.uniform(size=n_current))
        scores[i] = test(ref, cur, ColumnType.Numerical, 1.0).drift_score
    return float(np.quantile(scores, 1 - alpha))


# ----------------------------------------------------------------------------------------- result


@dataclass
class Column:
    """One compared (instrument, column): sizes, windows and what Evidently said."""

    instrument: str
    name: str
    kind: str  # signal | feature
    memory: int
    reference: dict[str, Any]
    current: dict[str, Any]
    threshold: float
    median_quantile: float = math.nan  # where the current window's median sits in the reference (0…1)
    psi: float = math.nan
    drift: bool = False

    @property
    def ratio(self) -> float:
        return self.psi / self.threshold if self.threshold > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "psi": round(self.psi, 6),
            "threshold": round(self.threshold, 6),
            "drift": self.drift,
            "memory_bars": self.memory,
            "current_median_quantile": round(self.median_quantile, 4),
            "reference": self.reference,
            "current": self.current,
        }


@dataclass
class DriftResult:
    """Every compared column per instrument, and what was skipped and why."""

    method: str
    floor: float
    alpha: float
    columns: list[Column] = field(default_factory=list)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    snapshot: Any = None  # the Evidently snapshot, when a report was asked for

    def of(self, instrument: str, kind: str | None = None) -> list[Column]:
        return [c for c in self.columns if c.instrument == instrument and (kind is None or c.kind == kind)]

    @property
    def instruments(self) -> list[str]:
        return sorted({c.instrument for c in self.columns} | set(self.skipped))

    def drifted(self, instrument: str) -> list[Column]:
        """The instrument's signals above their thresholds, worst first: these make it "drifted"."""
        hits = [c for c in self.of(instrument, "signal") if c.drift]
        return sorted(hits, key=lambda c: -c.ratio)

    def top_features(self, instrument: str, n: int) -> list[Column]:
        """Drill-down: the ``n`` store features closest to (or beyond) their thresholds."""
        feats = [c for c in self.of(instrument, "feature") if math.isfinite(c.ratio)]
        return sorted(feats, key=lambda c: -c.ratio)[:n]

    def psi_table(self) -> dict[str, Any]:
        """``reports/drift/psi.json``: what Evidently reported for every column, with its windows and threshold."""
        return {
            "method": self.method,
            "engine": "evidently ValueDrift",
            "threshold_floor": self.floor,
            "alpha": self.alpha,
            "instruments": {
                inst: {
                    c.name: c.as_dict()
                    for c in sorted(self.of(inst), key=lambda c: (c.kind != "signal", c.name))
                }
                for inst in self.instruments
                if self.of(inst)
            },
            "skipped": {inst: why for inst, why in sorted(self.skipped.items()) if why},
        }


# ----------------------------------------------------------------------------------------- compute


def _cap(values: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """At most ``max_rows`` values, drawn with a fixed seed (same data → same sample → same report)."""
    if len(values) <= max_rows:
        return values
    keep = np.sort(np.random.default_rng(seed).choice(len(values), size=max_rows, replace=False))
    return values[keep]


def prepare_columns(
    frame: pd.DataFrame,
    feature_memory: dict[str, int],
    at: pd.Timestamp,
    interval: pd.Timedelta,
    health: Any,
    with_features: bool = True,
) -> tuple[DriftResult, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The windows of every (instrument, column), on the reference's quantile scale, ready for Evidently.

    ``frame``: store rows (bar columns, and the feature columns named in ``feature_memory``) of any
    number of instruments, ending before ``at``. ``health``: the ``health`` params. Returns the result
    skeleton (columns with windows and thresholds) and the reference/current values by column name —
    exactly the data Evidently is given.
    """
    from autotrader.health.windows import SIGNALS, instrument_windows, reference_quantiles, signal_frame, take

    result = DriftResult(method=health.method, floor=health.psi_threshold, alpha=health.alpha)
    reference: dict[str, np.ndarray] = {}
    current: dict[str, np.ndarray] = {}
    for (broker, symbol), rows in frame.groupby(["broker", "symbol"], sort=True):
        key = f"{broker}/{symbol}"
        rows = rows.sort_values("timestamp")
        stamps = rows["timestamp"]
        windows = instrument_windows(
            key, str(broker), stamps.iloc[0], at, interval, health.current_days, health.reference_days
        )
        skipped: dict[str, str] = {}
        result.skipped[key] = skipped
        values = signal_frame(rows)
        todo = [(name, "signal", 1, 1, health.alpha) for name in SIGNALS]
        if with_features:
            todo += [
                (name, "feature", max(1, int(m)), health.memories_per_window, health.drilldown_alpha)
                for name, m in feature_memory.items()
            ]
        for name, kind, memory, memories, alpha in todo:
            spans = windows.spans(memory, memories)
            if spans is None:
                skipped[name] = (
                    f"history too short: needs {2 * max(windows.current_bars, memories * memory)} expected bars "
                    f"before {at.isoformat()}, the store has {len(windows.expected)}"
                )
                continue
            series = values[name] if kind == "signal" else rows[name]
            ref = _cap(take(series, stamps, spans[0]), health.max_rows, seed=len(reference))
            cur = _cap(take(series, stamps, spans[1]), health.max_rows, seed=len(reference) + 1)
            if len(ref) < MIN_ROWS or len(cur) < MIN_ROWS:
                skipped[name] = f"too few values (reference {len(ref)}, current {len(cur)}; need {MIN_ROWS})"
                continue
            column = column_name(key, name)
            reference[column] = reference_quantiles(ref, ref)
            current[column] = reference_quantiles(ref, cur)
            threshold = max(health.psi_threshold, null_quantile(len(ref), len(cur), alpha, health.method))
            result.columns.append(
                Column(
                    key,
                    name,
                    kind,
                    memory,
                    {**spans[0].as_dict(), "values": len(ref)},
                    {**spans[1].as_dict(), "values": len(cur)},
                    threshold,
                    float(np.median(current[column])),
                )
            )
    return result, reference, current


def compute_drift(
    frame: pd.DataFrame,
    feature_memory: dict[str, int],
    at: pd.Timestamp,
    interval: pd.Timedelta,
    health: Any,
    *,
    report: bool = True,
    with_features: bool = True,
) -> DriftResult:
    """Evidently's PSI for every signal (and, with ``with_features``, store feature) of every instrument.

    ``report=True`` runs an Evidently ``Report`` (its snapshot renders ``reports/drift/index.html``);
    ``False`` calls the same stattest without building the report's figures.
    """
    result, reference, current = prepare_columns(frame, feature_memory, at, interval, health, with_features)
    if not result.columns:
        return result
    thresholds = {column_name(c.instrument, c.name): c.threshold for c in result.columns}
    if report:
        scores, result.snapshot = report_scores(reference, current, thresholds, health.method)
    else:
        scores = stattest_scores(reference, current, thresholds, health.method)
    for c in result.columns:
        c.psi, c.drift = scores[column_name(c.instrument, c.name)]
    return result
