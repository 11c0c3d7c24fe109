"""Ternary labels from forward returns: long / flat / short, net of a cost threshold.

The label at bar ``t`` is the sign of ``log(close[t+h] / close[t])`` per instrument (``h`` bars ahead
in that instrument's own bar sequence, so a session gap counts as no bars), and flat when the move is
smaller than ``cost_threshold_bps``: a move that would not pay for the round trip is not worth a bet.
Rows whose label window runs past the last bar have no label and are dropped, never filled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autotrader.modeling import KEYS

LABEL = "label"
FWD_RETURN = "fwd_return"
LABEL_END = "label_end"
BAR_RETURN = "bar_return"


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values([*KEYS, "timestamp"], kind="stable").reset_index(drop=True)


def forward_log_return(frame: pd.DataFrame, horizon: int) -> pd.Series:
    """``log(close[t+h]/close[t])`` within each instrument; NaN where ``t+h`` is past the last bar.

    ``frame`` must be sorted by instrument then time (as ``label_frame`` does).
    """
    if horizon < 1:
        raise ValueError(f"horizon must be ≥ 1 bar, got {horizon}")
    log_close = np.log(frame["close"].astype("float64"))
    future = log_close.groupby([frame[k] for k in KEYS], sort=False).shift(-horizon)
    return future - log_close


def ternary(fwd: pd.Series | np.ndarray, threshold_bps: float) -> np.ndarray:
    """1 above ``+threshold``, -1 below ``-threshold``, 0 in between (threshold in basis points of log return)."""
    values = np.asarray(fwd, dtype="float64")
    threshold = threshold_bps * 1e-4
    out = np.zeros(len(values), dtype="int64")
    out[values > threshold] = 1
    out[values < -threshold] = -1
    return out


def label_frame(frame: pd.DataFrame, horizon: int, threshold_bps: float) -> pd.DataFrame:
    """Add ``fwd_return``, ``label``, ``label_end`` (timestamp of bar ``t+h``) and ``bar_return``.

    ``bar_return`` is the simple close-to-close return of bar ``t`` (from the previous bar of the same
    instrument): what a position held through bar ``t`` earns. It is computed before any rows are
    dropped, so the first bar of a later split still has it. Rows without a full label window are
    dropped.
    """
    out = _ordered(frame)
    groups = [out[k] for k in KEYS]
    out[FWD_RETURN] = forward_log_return(out, horizon)
    out[LABEL_END] = out["timestamp"].groupby(groups, sort=False).shift(-horizon)
    out[BAR_RETURN] = out["close"].groupby(groups, sort=False).pct_change(fill_method=None)
    out = out[out[FWD_RETURN].notna()].reset_index(drop=True)
    out[LABEL] = ternary(out[FWD_RETURN], threshold_bps)
    return out
