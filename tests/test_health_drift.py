"""Drift through Evidently: thresholds calibrated to the window, windows in the broker's bars, shifts found."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autotrader.health import assess, inject
from autotrader.health.drift import (
    null_quantile,
    prepare_columns,
    report_scores,
    scores_from_snapshot,
    stattest_scores,
)
from autotrader.health.windows import bars_per_day, instrument_windows, reference_quantiles
from autotrader.params import HealthParams, Instrument
from autotrader.sources.sim import SimulatedMarket

pytestmark = pytest.mark.xdist_group("health")  # one worker imports Evidently once for all health tests

AT = pd.Timestamp("2026-03-12", tz="UTC")  # a Thursday
FIVE = pd.Timedelta("5min")
BTC = Instrument(broker="binance", symbol="BTCUSDT")
SPY = Instrument(broker="ibkr", symbol="SPY")
HEALTH = HealthParams()


def bars(instrument: Instrument, seed: int = 3, days: int = 28) -> pd.DataFrame:
    market = SimulatedMarket(seed=seed, epoch=AT - pd.Timedelta(days=days), regime_switching=False)
    return market.fetch(instrument, AT - pd.Timedelta(days=days), AT, FIVE)


# ----------------------------------------------------------------------------------------- windows


def test_a_trading_day_is_counted_in_the_brokers_bars() -> None:
    assert bars_per_day("binance", FIVE, AT) == 288
    assert bars_per_day("oanda", FIVE, AT) == 288
    assert bars_per_day("ibkr", FIVE, AT) == 78  # 09:30–16:00 New York
    assert bars_per_day("binance", pd.Timedelta("1h"), AT) == 24


def test_feature_windows_grow_with_the_features_memory() -> None:
    frame = bars(BTC, days=60)
    w = instrument_windows("binance/BTCUSDT", "binance", frame["timestamp"].iloc[0], AT, FIVE, 1, 14)
    ref, cur = w.spans()
    assert (cur.bars, ref.bars, cur.stride) == (288, 14 * 288, 1)
    assert cur.end == AT and ref.end == cur.start
    ref, cur = w.spans(memory=48, memories_per_window=20)  # vol_48: 20 lookbacks, one value per lookback
    assert (cur.bars, cur.stride, ref.bars) == (960, 48, 14 * 960)
    assert w.spans(memory=335, memories_per_window=100) is None  # 2 × 33,500 bars: more than 60 days hold


def test_reference_quantiles_are_uniform_on_the_reference_and_blind_to_units() -> None:
    rng = np.random.default_rng(0)
    ref = rng.lognormal(size=1000)
    q = reference_quantiles(ref, ref)
    assert q.min() > 0 and q.max() < 1 and abs(q.mean() - 0.5) < 1e-9
    cur = rng.lognormal(size=50)
    np.testing.assert_array_equal(reference_quantiles(ref, cur), reference_quantiles(ref * 1e4, cur * 1e4))
    np.testing.assert_array_equal(
        reference_quantiles(ref, cur), reference_quantiles(np.log(ref), np.log(cur))
    )
    assert reference_quantiles(np.array([1.0, 2.0, 2.0, 3.0]), np.array([2.0]))[0] == 0.5  # ties: mid-rank


# ----------------------------------------------------------------------------------------- thresholds


def test_thresholds_are_higher_for_small_windows() -> None:
    btc = null_quantile(4032, 288, 0.01)
    spy = null_quantile(1092, 78, 0.01)
    assert 0 < btc < spy
    assert null_quantile(4032, 288, 0.01) == btc  # seeded and cached: same sizes, same threshold


def test_the_calibrated_threshold_holds_its_false_alarm_rate() -> None:
    """Fresh uniform samples (independent of the calibration's) cross the α = 5 % threshold about 5 % of the time."""
    threshold = null_quantile(600, 80, 0.05)
    rng = np.random.default_rng(99)
    n = 400
    ref = {f"c{i}": rng.uniform(size=600) for i in range(n)}
    cur = {f"c{i}": rng.uniform(size=80) for i in range(n)}
    scores = stattest_scores(ref, cur, dict.fromkeys(ref, threshold), "psi")
    rate = np.mean([drifted for _, drifted in scores.values()])
    assert 0.02 <= rate <= 0.09, rate  # binomial(400, 0.05): 99.9 % of draws fall in this band


def test_the_stattest_path_returns_what_an_evidently_report_returns() -> None:
    """The bench's fast path (Evidently's registered stattest) and a Report of ValueDrift agree exactly."""
    frame = bars(BTC)
    frame = inject.spread(frame, AT - pd.Timedelta(days=1))
    _, reference, current = prepare_columns(frame, {}, AT, FIVE, HEALTH, with_features=False)
    thresholds = dict.fromkeys(reference, 0.2)
    fast = stattest_scores(reference, current, thresholds, "psi")
    full, snapshot = report_scores(reference, current, thresholds, "psi")
    assert (
        set(fast)
        == set(full)
        == {f"binance/BTCUSDT:{s}" for s in ("abs_ret", "log_range", "rel_spread", "volume")}
    )
    for column in fast:
        assert fast[column] == full[column], column
    assert scores_from_snapshot(snapshot.dict()) == full
    assert full["binance/BTCUSDT:rel_spread"][1] and not full["binance/BTCUSDT:volume"][1]


# ----------------------------------------------------------------------------------------- verdicts


def test_an_unchanged_day_is_ok_for_a_24h_and_a_session_market() -> None:
    # One seed: each signal crosses its threshold on an unchanged day with probability alpha = 0.1 %
    # (bench/health_power.py measures the rate over hundreds of runs).
    frame = pd.concat([bars(BTC, seed=6), bars(SPY, seed=6)], ignore_index=True)
    report = assess(frame, AT, FIVE, HEALTH)
    assert report.status == "ok", report.as_metrics()["instruments"]
    sizes = {(c.instrument, c.current["values"]) for c in report.drift.columns}
    assert sizes == {("binance/BTCUSDT", 288), ("ibkr/SPY", 78)}


@pytest.mark.parametrize(
    ("shift", "expect"),
    [
        ("volatility ×2", "drift: "),
        ("spread ×3", "rel_spread"),
        ("price scale ×100", "price jump"),
        ("frozen feed", "abs_ret"),
        ("volume ×0.1", "volume"),
        ("one-hour gap", "gap of 12 bars"),
    ],
)
def test_each_injected_shift_is_named_in_the_verdict(shift: str, expect: str) -> None:
    frame = bars(SPY, seed=8)
    day = frame["timestamp"][frame["timestamp"] >= AT - pd.Timedelta(days=1)]
    since = day.iloc[10] if shift == "one-hour gap" else day.iloc[0]
    report = assess(inject.SHIFTS[shift](frame, since), AT, FIVE, HEALTH)
    verdict = report.verdict("ibkr/SPY")
    assert expect in verdict, verdict
    tag = {"drift: ": "log_range", "price jump": "jump", "gap of 12 bars": "gap"}.get(expect, expect)
    assert tag in report.reasons("ibkr/SPY"), report.reasons("ibkr/SPY")
    assert assess(frame, AT, FIVE, HEALTH).verdict("ibkr/SPY") == "ok"


def test_the_no_regime_market_changes_only_the_regimes() -> None:
    """``regime_switching=False`` (the bench's null market): same streams, one volatility throughout."""
    start = AT - pd.Timedelta(days=20)
    default = SimulatedMarket(seed=4, epoch=start).fetch(BTC, start, AT, FIVE)
    explicit = SimulatedMarket(seed=4, epoch=start, regime_switching=True).fetch(BTC, start, AT, FIVE)
    calm = SimulatedMarket(seed=4, epoch=start, regime_switching=False).fetch(BTC, start, AT, FIVE)
    assert default.equals(explicit)
    assert calm["volume"].equals(
        default["volume"]
    )  # volume does not read the regime: its stream is untouched

    def daily_sigma(bars: pd.DataFrame) -> pd.Series:
        ret = np.log(bars["close"]).diff()
        return ret.groupby(bars["timestamp"].dt.date).std()

    assert daily_sigma(calm).max() / daily_sigma(calm).min() < 1.3
    assert daily_sigma(default).max() / daily_sigma(default).min() > 1.5
