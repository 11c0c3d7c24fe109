"""Sample weights by label uniqueness (López de Prado, AFML ch. 4): overlapping labels count once.

A row at bar ``t`` is labelled with the return over bars ``t+1 … t+h`` (its label window ends at
``label_end``, the timestamp of bar ``t+h``). With a 36-bar horizon, 36 consecutive rows share most
of their window: they are about one observation, not 36. The *concurrency* ``c_u`` of a bar ``u`` is
the number of label windows (of the same instrument) that contain it; a row's *average uniqueness*
is the mean of ``1 / c_u`` over its window. Weighting rows by it makes a fit, and a score, count
independent observations instead of rows.

Concurrency is counted per instrument (another instrument's label is a different bet) on the bars
the frame knows about: the union of its row timestamps and label ends. Weights are returned
normalised to mean 1, so the total weight equals the number of rows and estimators' regularisation
keeps its scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from autotrader.modeling import KEYS
from autotrader.modeling.labels import LABEL_END
from autotrader.modeling.splits import _ns


def average_uniqueness(frame: pd.DataFrame) -> np.ndarray:
    """Average uniqueness (in (0, 1]) of every row's label window, in the frame's row order."""
    out = np.ones(len(frame))
    if frame.empty:
        return out
    ts_all = _ns(frame["timestamp"])
    end_all = _ns(frame[LABEL_END])
    for _, rows in frame.groupby(list(KEYS), sort=False).indices.items():
        ts, end = ts_all[rows], end_all[rows]
        grid = np.unique(np.concatenate([ts, end]))
        first = np.searchsorted(grid, ts, side="right")  # the bar after t
        last = np.searchsorted(grid, end, side="left")  # bar t+h, inclusive
        valid = last >= first
        delta = np.zeros(len(grid) + 1)
        np.add.at(delta, first[valid], 1.0)
        np.add.at(delta, last[valid] + 1, -1.0)
        concurrency = np.cumsum(delta)[:-1]
        inverse = np.where(concurrency > 0, 1.0 / np.maximum(concurrency, 1.0), 0.0)
        prefix = np.concatenate([[0.0], np.cumsum(inverse)])
        span = np.maximum(last - first + 1, 1)
        unique = (prefix[last + 1] - prefix[first]) / span
        out[rows] = np.where(valid, unique, 1.0)
    return out


def uniqueness_weights(frame: pd.DataFrame) -> np.ndarray:
    """``average_uniqueness`` normalised to mean 1 (sum = number of rows)."""
    unique = average_uniqueness(frame)
    mean = unique.mean() if len(unique) else 1.0
    return unique / mean if mean > 0 else np.ones(len(unique))
