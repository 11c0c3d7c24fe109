"""Gaps inside the latest day and price jumps: counted in expected bars and robust σ."""

from __future__ import annotations

import numpy as np
import pandas as pd

from autotrader.health.integrity import check_integrity, longest_gap, robust_sigma


def _stamps(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2026-03-10", periods=n, freq="5min", tz="UTC")


def test_longest_gap_counts_missing_bars_before_the_newest() -> None:
    expected = _stamps(20)
    present = pd.Series(expected.delete([3, 4, 5, 10, 18, 19]))
    n, at = longest_gap(expected, present)
    assert (n, at) == (3, expected[3])  # 18–19 are a missing tail: staleness, not a gap
    assert longest_gap(expected, pd.Series(expected)) == (0, None)


def test_robust_sigma_ignores_a_few_huge_values() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(scale=2.0, size=5000)
    assert abs(robust_sigma(x) - 2.0) < 0.1
    assert abs(robust_sigma(np.r_[x, [1e6] * 5]) - 2.0) < 0.1


def _rows(close: np.ndarray, stamps: pd.DatetimeIndex) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": stamps, "close": close})


def test_a_unit_change_is_a_jump_and_ordinary_bars_are_not() -> None:
    stamps = _stamps(400)
    rng = np.random.default_rng(2)
    close = 100 * np.exp(np.cumsum(rng.normal(scale=1e-3, size=400)))
    start = stamps[300]
    calm = check_integrity("x/Y", _rows(close, stamps), stamps, stamps[0], start, 3, 25.0)
    assert not calm.jump and not calm.gap and calm.jump_sigma < 6
    scaled = close.copy()
    scaled[350:] *= 100
    hit = check_integrity("x/Y", _rows(scaled, stamps), stamps, stamps[0], start, 3, 25.0)
    assert hit.jump and hit.jump_at == stamps[350] and hit.jump_sigma > 1000
    assert "price jump" in hit.problems()[0] and "health.max_jump_sigma" in hit.problems()[0]


def test_a_hole_longer_than_the_rule_is_a_gap() -> None:
    stamps = _stamps(400)
    close = np.linspace(100, 101, 400)
    keep = np.ones(400, bool)
    keep[320:332] = False  # one hour at 5 minutes
    rows = _rows(close[keep], stamps[keep])
    hit = check_integrity("x/Y", rows, stamps, stamps[0], stamps[300], 3, 25.0)
    assert hit.gap and hit.longest_gap_bars == 12 and hit.gap_at == stamps[320]
    assert "health.max_gap_bars" in hit.problems()[0]
    keep[320:332] = True
    keep[320:323] = False  # three bars: within max_gap_bars
    ok = check_integrity("x/Y", _rows(close[keep], stamps[keep]), stamps, stamps[0], stamps[300], 3, 25.0)
    assert not ok.gap and ok.longest_gap_bars == 3
