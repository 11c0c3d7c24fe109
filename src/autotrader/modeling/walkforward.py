"""Walk-forward out-of-sample predictions over ``train.oos_windows`` consecutive test windows.

One 20-day window gives an annualised Sharpe with a standard error of about ±4.3: too noisy to tell
skill from luck. So the test span is the last ``oos_windows × test_days`` days, cut into consecutive
windows. Before each window the chosen configuration is refitted on every labelled row before it
(purged and embargoed against the window's start, weighted by label uniqueness) — what the weekly
retraining would have shipped then — and predicts that window only. Selection (CV) ran once, on
rows before the first window, so no window influences which configuration is tested.

The last window's model is the shipped model (``train`` fits it the same way); the earlier windows'
models are refitted here and thrown away. The stitched signal is backtested as one continuous
strategy (a bet opened before a refit is held to its end), and the gates judge the pooled returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autotrader.errors import ModelError
from autotrader.modeling import CLASSES
from autotrader.modeling.labels import LABEL
from autotrader.modeling.models import thread_limit
from autotrader.modeling.train import fit_weighted, proba_full, rows_before
from autotrader.params import TrainParams


@dataclass
class Window:
    start: pd.Timestamp
    end: pd.Timestamp

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass
class OutOfSample:
    """The OOS rows (all windows, time order per instrument) with the stitched signal and probabilities."""

    rows: pd.DataFrame
    signal: np.ndarray
    proba: np.ndarray
    windows: list[Window]
    fits: list[dict[str, Any]] = field(default_factory=list)


def windows(test_start: pd.Timestamp, end: pd.Timestamp, count: int) -> list[Window]:
    """``count`` consecutive windows of equal length covering [test_start, end)."""
    step = (end - test_start) / count
    return [Window(test_start + k * step, test_start + (k + 1) * step) for k in range(count)]


def window_of(timestamps: pd.Series, spans: list[Window]) -> np.ndarray:
    """Index of the window each timestamp falls in (−1 outside every window)."""
    ts = pd.DatetimeIndex(timestamps)
    out = np.full(len(ts), -1, dtype="int64")
    for k, w in enumerate(spans):
        out[(ts >= w.start) & (ts < w.end)] = k
    return out


def predict_out_of_sample(
    history: pd.DataFrame,
    test: pd.DataFrame,
    features: list[str],
    train: TrainParams,
    chosen: str,
    spans: list[Window],
    last_model: Any | None = None,
) -> OutOfSample:
    """Refit ``chosen`` before each window and predict it; ``last_model`` (the shipped one) for the last.

    ``history``: labelled rows before the first window (train + valid); ``test``: the OOS rows.
    """
    where = window_of(test["timestamp"], spans)
    signal = np.zeros(len(test), dtype="int64")
    proba = np.zeros((len(test), len(CLASSES)))
    fits: list[dict[str, Any]] = []
    everything = pd.concat([history, test], ignore_index=True)
    for k, span in enumerate(spans):
        mask = where == k
        if not mask.any():
            fits.append({**span.as_dict(), "rows_fitted": 0, "rows_tested": 0, "model": "none"})
            continue
        if k == len(spans) - 1 and last_model is not None:
            model, fitted, source = last_model, None, "shipped"
        else:
            rows = rows_before(everything, span.start, train.embargo)
            if rows.empty or rows[LABEL].nunique() < 2:
                raise ModelError(
                    f"walk-forward window {k + 1} ({span.start.date()}…): no rows with two classes before it; "
                    "raise train.lookback_days or lower train.oos_windows × train.test_days"
                )
            with thread_limit():
                model = fit_weighted(chosen, train, rows, features)
            fitted, source = len(rows), "refitted"
        with thread_limit():
            p = proba_full(model, test.loc[mask, features])
        proba[mask] = p
        signal[mask] = np.asarray(CLASSES, dtype="int64")[p.argmax(axis=1)]
        fits.append(
            {**span.as_dict(), "rows_fitted": fitted, "rows_tested": int(mask.sum()), "model": source}
        )
    return OutOfSample(rows=test, signal=signal, proba=proba, windows=spans, fits=fits)
