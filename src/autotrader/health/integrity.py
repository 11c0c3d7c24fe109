"""Integrity of the latest trading day: holes in the bars and price jumps no market makes.

Two defects a distribution test cannot see, by design:

* **A gap** (an hour of bars missing mid-day). It removes bars; what is left looks like any other
  day. Counted like staleness — expected bars on the broker's calendar — but inside the window:
  the longest run of expected bars missing *before* the newest bar (a missing tail is staleness).
* **A price-scale change** (×100 from a unit or split error). Every feature is scale-free
  (docs/features.md), so after the first bar nothing differs; the one bar that straddles the change
  moves ln 100 ≈ 4.6, thousands of robust σ. A bar whose |log return| exceeds ``max_jump_sigma``
  robust σ of the reference window is a jump (σ = 1.4826·MAD, which the jumps themselves do not
  inflate). The threshold is validation's ``spike_sigma`` scale: real crashes stay below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Integrity:
    instrument: str
    longest_gap_bars: int
    max_gap_bars: int
    gap_at: pd.Timestamp | None
    jump_sigma: float  # the largest |return| of the window in robust σ of the reference (NaN: unknown)
    max_jump_sigma: float
    jump_at: pd.Timestamp | None

    @property
    def gap(self) -> bool:
        return self.longest_gap_bars > self.max_gap_bars

    @property
    def jump(self) -> bool:
        return bool(np.isfinite(self.jump_sigma) and self.jump_sigma > self.max_jump_sigma)

    def problems(self) -> list[str]:
        out = []
        if self.gap:
            out.append(
                f"{self.instrument}: gap — {self.longest_gap_bars} expected bar(s) missing from "
                f"{self.gap_at.isoformat() if self.gap_at is not None else '?'} "
                f"(max {self.max_gap_bars}, rule health.max_gap_bars)"
            )
        if self.jump:
            out.append(
                f"{self.instrument}: price jump — a {self.jump_sigma:.0f}σ bar at "
                f"{self.jump_at.isoformat() if self.jump_at is not None else '?'} "
                f"(max {self.max_jump_sigma:g}σ, rule health.max_jump_sigma; a unit or split error?)"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "longest_gap_bars": self.longest_gap_bars,
            "gap_at": self.gap_at.isoformat() if self.gap_at is not None else None,
            "gap": self.gap,
            "jump_sigma": round(float(self.jump_sigma), 2) if np.isfinite(self.jump_sigma) else None,
            "jump_at": self.jump_at.isoformat() if self.jump_at is not None else None,
            "jump": self.jump,
        }


def longest_gap(expected: pd.DatetimeIndex, present: pd.Series) -> tuple[int, pd.Timestamp | None]:
    """Longest run of ``expected`` stamps absent from ``present`` and followed by a present bar."""
    if len(expected) == 0 or len(present) == 0:
        return 0, None
    newest = present.max()
    exp = expected[expected <= newest]
    missing = ~exp.isin(pd.DatetimeIndex(present))
    if not missing.any():
        return 0, None
    edges = np.diff(np.r_[0, missing.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    i = int(np.argmax(ends - starts))
    return int(ends[i] - starts[i]), exp[starts[i]]


def robust_sigma(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def check_integrity(
    instrument: str,
    rows: pd.DataFrame,
    expected: pd.DatetimeIndex,
    reference_start: pd.Timestamp,
    current_start: pd.Timestamp,
    max_gap_bars: int,
    max_jump_sigma: float,
) -> Integrity:
    """Gaps and jumps in [current_start, …) of one instrument's rows (time order), σ from the reference."""
    stamps = rows["timestamp"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.diff(np.log(rows["close"].to_numpy(dtype=float)), prepend=np.nan)
    in_ref = ((stamps >= reference_start) & (stamps < current_start)).to_numpy()
    in_cur = (stamps >= current_start).to_numpy()
    gap, gap_at = longest_gap(expected[expected >= current_start], stamps[in_cur])
    sigma = robust_sigma(ret[in_ref])
    jump, jump_at = float("nan"), None
    cur = np.abs(ret[in_cur])
    if sigma > 0 and np.isfinite(cur).any():
        i = int(np.nanargmax(cur))
        jump, jump_at = float(cur[i] / sigma), stamps[in_cur].iloc[i]
    return Integrity(instrument, gap, max_gap_bars, gap_at, jump, max_jump_sigma, jump_at)
