"""Feature drift: PSI of each feature between a reference window and the latest window, per instrument.

Drift is measured per instrument, never on the pooled store: instruments trade on different calendars
(a weekend window holds crypto only) and at different scales (BTC's 5-minute σ is eight times
EUR/USD's), so a pooled distribution would "drift" whenever the mix of instruments in a window
changes. Each (instrument, feature) pair becomes one column of a single Evidently report (``ValueDrift``
with method ``psi`` through ``DataDriftPreset``); Evidently's PSI decides, and its HTML is the
report a person opens. ``psi`` below is our own, quantile-binned PSI in a pure function: it is tested
against hand-computed values and reported beside Evidently's as a cross-check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

COLUMN_SEP = ":"
MIN_ROWS = 30  # fewer non-missing values than this in either window: too few for a distribution
PSI_EPS = 1e-4  # floor for an empty bin's share, so that ln(p/q) stays finite
SAMPLE_SEED = 0


# ----------------------------------------------------------------------------------------- pure PSI


def psi_from_shares(reference: np.ndarray, current: np.ndarray, eps: float = PSI_EPS) -> float:
    """PSI = Σ (c_i − r_i) · ln(c_i / r_i) over bins, with empty bins floored at ``eps``."""
    ref = np.maximum(np.asarray(reference, dtype=float), eps)
    cur = np.maximum(np.asarray(current, dtype=float), eps)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (deciles by default), duplicates removed.

    Only inner edges: the outer bins are open (−∞, e_1) and [e_k, ∞), so current values outside the
    reference's range still land in a bin instead of being dropped.
    """
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    return np.unique(np.quantile(reference, qs))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin that the inner ``edges`` define (len(edges) + 1 bins)."""
    idx = np.searchsorted(edges, values, side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of ``current`` against ``reference`` on the reference's quantile bins; NaN/inf ignored."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref) == 0 or len(cur) == 0:
        return math.nan
    edges = quantile_edges(ref, bins)
    return psi_from_shares(bin_shares(ref, edges), bin_shares(cur, edges))


# ----------------------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    """Reference [reference_start, current_start) and current [current_start, end), UTC."""

    reference_start: pd.Timestamp
    current_start: pd.Timestamp
    end: pd.Timestamp

    @classmethod
    def ending_at(cls, end: pd.Timestamp, reference_days: int, current_days: int) -> Windows:
        current_start = end - pd.Timedelta(days=current_days)
        return cls(current_start - pd.Timedelta(days=reference_days), current_start, end)

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {
            "reference": {"start": self.reference_start.isoformat(), "end": self.current_start.isoformat()},
            "current": {"start": self.current_start.isoformat(), "end": self.end.isoformat()},
        }


def sample(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    """At most ``max_rows`` rows, drawn with a fixed seed (same data → same sample → same report)."""
    if len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=SAMPLE_SEED).sort_index()


def column_name(instrument: str, feature: str) -> str:
    return f"{instrument}{COLUMN_SEP}{feature}"


def wide_windows(
    features: pd.DataFrame,
    feature_names: list[str],
    windows: Windows,
    max_rows: int,
    min_rows: int = MIN_ROWS,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, Any]]]:
    """One column per (instrument, feature), NaN-padded, for the reference and the current window.

    Returns (reference, current, per-instrument notes): row counts, and the features left out
    because a window has fewer than ``min_rows`` values of them (an instrument whose market was
    closed for the whole current window, a feature the broker cannot supply).
    """
    ref_cols: dict[str, pd.Series] = {}
    cur_cols: dict[str, pd.Series] = {}
    notes: dict[str, dict[str, Any]] = {}
    ts = features["timestamp"]
    in_ref = (ts >= windows.reference_start) & (ts < windows.current_start)
    in_cur = (ts >= windows.current_start) & (ts < windows.end)
    for (broker, symbol), rows in features.groupby(["broker", "symbol"], sort=True):
        key = f"{broker}/{symbol}"
        ref = sample(rows.loc[in_ref.loc[rows.index], feature_names], max_rows)
        cur = sample(rows.loc[in_cur.loc[rows.index], feature_names], max_rows)
        skipped: dict[str, str] = {}
        for name in feature_names:
            r = ref[name].replace([np.inf, -np.inf], np.nan).dropna()
            c = cur[name].replace([np.inf, -np.inf], np.nan).dropna()
            if len(r) < min_rows or len(c) < min_rows:
                skipped[name] = f"too few values (reference {len(r)}, current {len(c)}; need {min_rows})"
                continue
            ref_cols[column_name(key, name)] = r.reset_index(drop=True)
            cur_cols[column_name(key, name)] = c.reset_index(drop=True)
        notes[key] = {"rows": {"reference": len(ref), "current": len(cur)}, "skipped": skipped}
    return pd.DataFrame(ref_cols), pd.DataFrame(cur_cols), notes


# ----------------------------------------------------------------------------------------- Evidently


def evidently_psi(
    reference: pd.DataFrame, current: pd.DataFrame, threshold: float
) -> tuple[dict[str, float], Any]:
    """Run Evidently's DataDriftPreset with PSI on every column; return PSI per column and the snapshot."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(reference.columns)
    definition = DataDefinition(numerical_columns=columns)
    report = Report(
        [DataDriftPreset(columns=columns, method="psi", threshold=threshold)], include_tests=False
    )
    snapshot = report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    return psi_by_column(snapshot.dict()), snapshot


def psi_by_column(result: dict[str, Any]) -> dict[str, float]:
    """PSI per column from an Evidently 0.7 result (``snapshot.dict()``): its ``ValueDrift`` metrics.

    Each looks like ``{"config": {"type": "evidently:metric_v2:ValueDrift", "column": …,
    "method": "psi", …}, "value": <psi>}``.
    """
    out: dict[str, float] = {}
    for metric in result.get("metrics", []):
        config = metric.get("config", {})
        if str(config.get("type", "")).endswith(":ValueDrift") and config.get("method") == "psi":
            out[config["column"]] = float(metric["value"])
    return out


# ----------------------------------------------------------------------------------------- result


@dataclass
class DriftResult:
    threshold: float
    windows: Windows
    evidently: dict[str, dict[str, float]] = field(default_factory=dict)  # instrument → feature → PSI
    quantile: dict[str, dict[str, float]] = field(default_factory=dict)  # our own PSI, cross-check
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot: Any = None  # Evidently snapshot, for the HTML; None when no column could be compared

    def above(self, instrument: str) -> list[str]:
        """Features of ``instrument`` whose PSI reaches the threshold, worst first."""
        scores = self.evidently.get(instrument, {})
        hits = [f for f, v in scores.items() if v >= self.threshold]
        return sorted(hits, key=lambda f: -scores[f])

    def instrument_summary(self, instrument: str) -> dict[str, Any]:
        scores = self.evidently.get(instrument, {})
        worst = max(scores, key=lambda f: scores[f]) if scores else None
        note = self.notes.get(instrument, {"rows": {"reference": 0, "current": 0}, "skipped": {}})
        return {
            "max_psi": round(scores[worst], 6) if worst else None,
            "max_psi_feature": worst,
            "features_above_threshold": self.above(instrument),
            "features_compared": len(scores),
            "rows": note["rows"],
            "skipped": note["skipped"],
        }

    def psi_table(self) -> dict[str, Any]:
        """``reports/drift/psi.json``: every number, per instrument and feature."""
        return {
            "method": "psi",
            "threshold": self.threshold,
            "windows": self.windows.as_dict(),
            "instruments": {
                inst: {
                    feature: {
                        "psi": round(value, 6),
                        "psi_quantile": round(self.quantile.get(inst, {}).get(feature, math.nan), 6),
                        "drift": value >= self.threshold,
                    }
                    for feature, value in sorted(scores.items())
                }
                for inst, scores in sorted(self.evidently.items())
            },
            "skipped": {inst: n["skipped"] for inst, n in sorted(self.notes.items()) if n["skipped"]},
        }


def compute_drift(
    features: pd.DataFrame,
    feature_names: list[str],
    windows: Windows,
    threshold: float,
    max_rows: int,
    min_rows: int = MIN_ROWS,
) -> DriftResult:
    """PSI per instrument and feature between the two windows of ``features`` (rows from the store)."""
    reference, current, notes = wide_windows(features, feature_names, windows, max_rows, min_rows)
    result = DriftResult(threshold=threshold, windows=windows, notes=notes)
    if reference.shape[1] == 0:
        return result
    scores, result.snapshot = evidently_psi(reference, current, threshold)
    for column, value in scores.items():
        inst, feature = column.rsplit(COLUMN_SEP, 1)
        result.evidently.setdefault(inst, {})[feature] = value
        result.quantile.setdefault(inst, {})[feature] = psi(
            reference[column].to_numpy(), current[column].to_numpy()
        )
    return result
