"""The simulated market: seeded, on each broker's calendar, and with signal only when asked for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autotrader.params import Instrument
from autotrader.sources.sim import SimulatedMarket

BTC = Instrument(broker="binance", symbol="BTCUSDT")
EUR = Instrument(broker="oanda", symbol="EUR_USD")
SPY = Instrument(broker="ibkr", symbol="SPY")
FIVE = pd.Timedelta("5min")


def window(start: str, end: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    return pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")


def test_same_seed_same_bars_other_seed_other_bars() -> None:
    start, end = window("2026-11-10", "2026-11-13")
    a = SimulatedMarket(seed=7).fetch(BTC, start, end, FIVE)
    b = SimulatedMarket(seed=7).fetch(BTC, start, end, FIVE)
    c = SimulatedMarket(seed=8).fetch(BTC, start, end, FIVE)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == len(c) == 3 * 288
    assert not np.allclose(a["close"], c["close"])
    assert str(a["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert a["spread"].gt(0).all() and a["volume"].gt(0).all()
    assert (a["high"] >= a[["open", "close"]].max(axis=1)).all() and (
        a["low"] <= a[["open", "close"]].min(axis=1)
    ).all()


def test_fx_has_no_saturday_bars_and_follows_the_new_york_week() -> None:
    start, end = window("2026-11-06", "2026-11-10")  # Friday to Monday
    bars = SimulatedMarket().fetch(EUR, start, end, FIVE)
    ny = bars["timestamp"].dt.tz_convert("America/New_York")
    assert not (bars["timestamp"].dt.dayofweek == 5).any()
    friday = ny[ny.dt.dayofweek == 4]
    sunday = ny[ny.dt.dayofweek == 6]
    assert friday.max() == pd.Timestamp("2026-11-06 16:55", tz="America/New_York")  # closes 17:00 NY
    assert sunday.min() == pd.Timestamp("2026-11-08 17:00", tz="America/New_York")  # opens 17:00 NY


def test_spy_bars_only_in_nyse_sessions_and_not_on_holidays() -> None:
    start, end = window("2026-11-23", "2026-12-01")  # Thanksgiving week
    bars = SimulatedMarket().fetch(SPY, start, end, FIVE)
    ny = bars["timestamp"].dt.tz_convert("America/New_York")
    days = set(ny.dt.date.astype(str))
    assert "2026-11-26" not in days  # Thanksgiving: closed
    assert days == {"2026-11-23", "2026-11-24", "2026-11-25", "2026-11-27", "2026-11-30"}
    minutes = ny.dt.hour * 60 + ny.dt.minute
    assert minutes.min() == 9 * 60 + 30 and minutes.max() == 15 * 60 + 55
    assert (
        ny[ny.dt.date.astype(str) == "2026-11-27"].max().strftime("%H:%M") == "12:55"
    )  # half day, 13:00 close
    assert len(bars) == 4 * 78 + 42


def _momentum(bars: pd.DataFrame, k: int = 12, vol_window: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Past and next k-bar log returns on non-overlapping blocks, scaled by the trailing realised vol.

    Scaling by past-only volatility removes the regime switches (which move the size of returns, never
    their sign), so the correlation measures direction alone.
    """
    r = np.diff(np.log(bars["close"].to_numpy()))
    cum = np.concatenate([[0.0], np.cumsum(r)])
    vol = pd.Series(r).rolling(vol_window).std().to_numpy()
    at = np.arange(vol_window, len(r) - k, k)
    past = (cum[at + 1] - cum[at + 1 - k]) / vol[at]
    future = (cum[at + 1 + k] - cum[at + 1]) / vol[at]
    return past, future


def _pooled_correlation(strength: float) -> tuple[float, int]:
    start, end = window("2025-11-20", "2026-11-20")
    pasts, futures = [], []
    for seed in (1, 2, 3):
        bars = SimulatedMarket(seed=seed, signal_strength=strength).fetch(BTC, start, end, FIVE)
        past, future = _momentum(bars)
        pasts.append(past)
        futures.append(future)
    past, future = np.concatenate(pasts), np.concatenate(futures)
    return float(np.corrcoef(past, future)[0, 1]), len(past)


@pytest.mark.xdist_group("sim_signal")
def test_no_signal_market_has_no_momentum() -> None:
    corr, n = _pooled_correlation(0.0)
    assert n > 20_000
    assert abs(corr) < 3 / np.sqrt(n)  # within three standard errors of zero


@pytest.mark.xdist_group("sim_signal")
def test_signal_market_shows_positive_momentum() -> None:
    corr, n = _pooled_correlation(1.0)
    assert corr > 5 / np.sqrt(n)  # five standard errors above zero


def test_a_bar_does_not_depend_on_the_window_asked_for() -> None:
    """Moving data.end appends days: the overlap of two windows is byte-identical."""
    market = SimulatedMarket(seed=3, signal_strength=1.0)
    btc = Instrument(broker="binance", symbol="BTCUSDT")
    five = pd.Timedelta("5min")
    early = market.fetch(
        btc, pd.Timestamp("2026-03-01", tz="UTC"), pd.Timestamp("2026-03-10", tz="UTC"), five
    )
    late = market.fetch(btc, pd.Timestamp("2026-03-05", tz="UTC"), pd.Timestamp("2026-03-12", tz="UTC"), five)
    overlap = early[early["timestamp"] >= pd.Timestamp("2026-03-05", tz="UTC")].reset_index(drop=True)
    pd.testing.assert_frame_equal(overlap, late.iloc[: len(overlap)].reset_index(drop=True))
    assert late["timestamp"].iloc[-1] == pd.Timestamp("2026-03-11 23:55", tz="UTC")


def test_the_realistic_preset_is_a_named_strength_and_params_accept_it() -> None:
    from autotrader.params import SimParams
    from autotrader.sources.sim import PRESETS, resolve_strength

    assert resolve_strength("realistic") == PRESETS["realistic"] and resolve_strength(2) == 2.0
    assert SimParams(signal_strength="realistic").signal_strength == "realistic"
    inst = Instrument(broker="binance", symbol="BTCUSDT")
    start, end, step = (
        pd.Timestamp("2026-02-01", tz="UTC"),
        pd.Timestamp("2026-02-02", tz="UTC"),
        pd.Timedelta("5min"),
    )
    named = SimulatedMarket(seed=3, signal_strength="realistic").fetch(inst, start, end, step)
    number = SimulatedMarket(seed=3, signal_strength=PRESETS["realistic"]).fetch(inst, start, end, step)
    pd.testing.assert_frame_equal(named, number)
    with pytest.raises(ValueError, match="unknown signal_strength preset 'heroic'"):
        resolve_strength("heroic")


def _digest(frame: pd.DataFrame) -> str:
    """SHA-256 over the timestamps and the six float columns, byte for byte."""
    import hashlib

    h = hashlib.sha256()
    h.update(frame["timestamp"].to_numpy("datetime64[ns]").view(np.int64).tobytes())
    for column in ("open", "high", "low", "close", "volume", "spread"):
        h.update(np.ascontiguousarray(frame[column].to_numpy(np.float64)).tobytes())
    return h.hexdigest()


# Pinned on the simulator as of commit 2e522b6 (before any speed work): one 1-minute day, seed 7,
# strength 4, epoch 2026-01-01. A change here means every stored raw day would change too.
PINNED_DAY = {
    ("binance", "BTCUSDT", True): "7949583788fced97337ff056c1cd34ca74e1e63a5b0a7f50b0258aa926916a7d",
    ("binance", "BTCUSDT", False): "50fa5c2c078ab58db3dff0dc25c0aa5c5bc1b7785bd72a7f6bc06627b60d9114",
    ("oanda", "EUR_USD", True): "9e8ed6b93df114061daef7a73b22a7c51e91c55a63d08b2d8a456b4799a74f2f",
    ("oanda", "EUR_USD", False): "dfe49638500b6a67ea3c85239848eeb5220cd6bca1c57507b31e530460503044",
    ("ibkr", "SPY", True): "fe079fdb1590ad5a554076a225acf8afcf87e1690e24403e8fd17cf43fbb1585",
    ("ibkr", "SPY", False): "6bfad11b86050ca780170bd73760d054115ba369fd17296e54f595c3a572b74d",
}


@pytest.mark.parametrize(("broker", "symbol", "regimes"), sorted(PINNED_DAY))
def test_one_day_is_bit_identical_to_the_pinned_hash(broker: str, symbol: str, regimes: bool) -> None:
    start, end = window("2026-11-19", "2026-11-20")
    market = SimulatedMarket(seed=7, signal_strength=4.0, regime_switching=regimes)
    bars = market.fetch(Instrument(broker=broker, symbol=symbol), start, end, pd.Timedelta("1min"))
    assert len(bars) == (390 if broker == "ibkr" else 1440)
    assert _digest(bars) == PINNED_DAY[(broker, symbol, regimes)]
