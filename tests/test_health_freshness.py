"""Freshness is counted in bars the market should have printed, so closed markets are not stale."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from autotrader import rawstore
from autotrader.health.freshness import assess, check_freshness, lag_in_bars, newest_bar
from tests.test_archive import write_sim_raw

FIVE = pd.Timedelta("5min")


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_fx_on_saturday_noon_with_fridays_close_bar_is_fresh() -> None:
    # FX closes Friday 17:00 New York = 22:00 UTC in November; the last 5-minute bar opens 21:55.
    fresh = assess("oanda", "EUR_USD", ts("2026-11-20 21:55"), ts("2026-11-21 12:00"), FIVE, 3)
    assert fresh.last_expected_bar == ts("2026-11-20 21:55")
    assert fresh.lag_bars == 0 and not fresh.stale
    assert ts("2026-11-21 12:00") - fresh.newest_bar > pd.Timedelta(hours=14)  # old by the clock


def test_nyse_at_three_utc_with_the_previous_sessions_last_bar_is_fresh() -> None:
    # NYSE closes 16:00 New York = 21:00 UTC; at 03:00 UTC the newest possible bar is 20:55.
    fresh = assess("ibkr", "SPY", ts("2026-11-19 20:55"), ts("2026-11-20 03:00"), FIVE, 3)
    assert fresh.last_expected_bar == ts("2026-11-19 20:55")
    assert fresh.lag_bars == 0 and not fresh.stale
    # Over a weekend too: Monday 03:00 UTC, Friday's last bar present.
    monday = assess("ibkr", "SPY", ts("2026-11-20 20:55"), ts("2026-11-23 03:00"), FIVE, 3)
    assert monday.lag_bars == 0 and not monday.stale


def test_crypto_missing_the_last_two_hours_is_stale() -> None:
    stale = assess("binance", "BTCUSDT", ts("2026-11-19 21:55"), ts("2026-11-20 00:00"), FIVE, 3)
    assert stale.last_expected_bar == ts("2026-11-19 23:55")
    assert stale.lag_bars == 24 and stale.stale
    reason = stale.reason()
    assert "binance/BTCUSDT" in reason and "24 bar(s)" in reason and "health.max_staleness_bars" in reason


def test_the_threshold_is_inclusive_and_counts_only_open_market_bars() -> None:
    at = ts("2026-11-21 12:00")  # Saturday: FX closed since Friday 22:00 UTC
    # Friday's last three bars are missing: 3 bars behind, however long the weekend is.
    assert lag_in_bars("oanda", ts("2026-11-20 21:40"), ts("2026-11-20 21:55"), FIVE) == 3
    assert not assess("oanda", "EUR_USD", ts("2026-11-20 21:40"), at, FIVE, 3).stale
    assert assess("oanda", "EUR_USD", ts("2026-11-20 21:40"), at, FIVE, 2).stale
    # A whole NYSE session missing (Thursday's close at Monday 03:00): 78 bars behind, stale.
    behind = assess("ibkr", "SPY", ts("2026-11-19 20:55"), ts("2026-11-23 03:00"), FIVE, 3)
    assert behind.lag_bars == 78 and behind.stale


def test_an_instrument_without_bars_is_stale_and_says_so() -> None:
    missing = assess("binance", "ETHUSDT", None, ts("2026-11-20"), FIVE, 3)
    assert missing.stale and missing.lag_bars is None
    assert missing.reason() == "binance/ETHUSDT: no bars in the raw store"
    assert missing.as_dict()["newest_bar"] is None


def test_freshness_reads_the_newest_bar_from_the_raw_store(tmp_path: Path) -> None:
    raw = write_sim_raw(tmp_path / "raw", days=2)
    expected = rawstore.read_instrument(raw, "oanda", "EUR_USD")["timestamp"].max()
    assert newest_bar(raw, "oanda", "EUR_USD", ts("2026-11-20")) == expected
    # A logical date inside the window ignores later bars.
    assert newest_bar(raw, "binance", "BTCUSDT", ts("2026-11-19 12:00")) == ts("2026-11-19 11:55")

    results = check_freshness(
        raw, [("binance", "BTCUSDT"), ("oanda", "EUR_USD"), ("ibkr", "SPY")], ts("2026-11-20"), FIVE, 3
    )
    assert [(r.key, r.stale) for r in results] == [
        ("binance/BTCUSDT", False),
        ("oanda/EUR_USD", False),
        ("ibkr/SPY", True),
    ]
    late = check_freshness(raw, [("binance", "BTCUSDT")], ts("2026-11-20 02:00"), FIVE, 3)[0]
    assert late.stale and late.lag_bars == 24


@pytest.mark.parametrize("broker", ["binance", "oanda", "ibkr"])
def test_a_complete_sim_history_is_fresh_at_its_end(broker: str, tmp_path: Path) -> None:
    from autotrader.params import Instrument
    from autotrader.sources.sim import SimulatedMarket

    symbol = {"binance": "BTCUSDT", "oanda": "GBP_USD", "ibkr": "QQQ"}[broker]
    end = ts("2026-11-21 12:00")
    bars = SimulatedMarket().fetch(
        Instrument(broker=broker, symbol=symbol), end - pd.Timedelta(days=3), end, FIVE
    )
    rawstore.write_extract(tmp_path / "raw", [(broker, symbol, bars)])
    (result,) = check_freshness(tmp_path / "raw", [(broker, symbol)], end, FIVE, 0)
    assert result.lag_bars == 0 and not result.stale
