"""The last-row feature path (``compute_last_row``) equals the full path bit for bit.

The bars-in server computes only the newest bar's features (``autotrader.features.lastrow``); the
feature store computes every row (``compute_feature_arrays``). Every feature of the row must have
the same bits as the store's row — compared as int64 bit patterns (NaN made one pattern), stricter
than ``np.array_equal`` (which calls -0.0 and 0.0 equal) — for every bar of long series: the
simulated market (24/7, 24/5 and exchange-session instruments), the real hourly EURUSD file,
hand-built edge cases (flat prices, zero and constant volume, no spread), non-default params and the
alpha158 family. The window primitives are checked the same way against ``windows``. Any drift in
the last-row arithmetic (a sum in another order, a different tail) fails here.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotrader.features import compute_feature_arrays, compute_last_row, feature_names, warmup_bars
from autotrader.features.lastrow import last_row_rank, last_row_std, last_row_sum, last_row_weighted_sum
from autotrader.features.spec import BarArrays
from autotrader.features.windows import (
    rolling_rank,
    rolling_std,
    rolling_sum,
    rolling_weighted_sum,
    truncated_ema_weights,
)
from autotrader.params import FeatureParams, FileSpec, Instrument
from autotrader.sources.files import read_table, to_bars
from autotrader.sources.sim import SimulatedMarket

PARAMS = FeatureParams()
START = pd.Timestamp("2026-03-02", tz="UTC")  # a Monday


def bits(values: np.ndarray) -> np.ndarray:
    """float64 → bit patterns, every NaN one pattern: equal bits ⇔ the same number (or both NaN)."""
    values = np.where(np.isnan(values), np.nan, np.asarray(values, dtype=np.float64))
    return values.view(np.int64)


def sim_bars(broker: str, symbol: str, days: int, seed: int = 3) -> pd.DataFrame:
    market = SimulatedMarket(seed=seed, signal_strength=1.0)
    return market.fetch(
        Instrument(broker=broker, symbol=symbol), START, START + pd.Timedelta(days=days), pd.Timedelta("5min")
    ).reset_index(drop=True)


def eurusd_bars() -> pd.DataFrame:
    """The real hourly EURUSD file (shipped with ``backtesting``), read by the files source."""
    path = Path(str(importlib.resources.files("backtesting") / "test" / "EURUSD.csv"))
    spec = FileSpec(path=str(path), broker="oanda", symbol="EUR_USD", timezone="UTC")
    return to_bars(read_table(path), spec, path).sort_values("timestamp").reset_index(drop=True)


def assert_every_row_equal(bars: pd.DataFrame, params: FeatureParams, step: int = 1) -> int:
    """For every ``step``-th bar t with a full warm-up: the last-row path over bars ≤ t == the full row t.

    Alternates the exact window (warm-up + 1 bars, as the server passes) with the whole history up
    to t (the last-row path must read only its tail). Returns how many rows were compared.
    """
    full = compute_feature_arrays(bars, params)
    names = feature_names(params)
    matrix = np.column_stack([full[n] for n in names])
    arrays = BarArrays.from_frame(bars)
    columns = (arrays.open, arrays.high, arrays.low, arrays.close, arrays.volume, arrays.spread)
    need = warmup_bars(params) + 1
    compared = 0
    for t in range(need - 1, len(bars), step):
        start = t + 1 - need if compared % 2 == 0 else 0
        window = BarArrays(*(c[start : t + 1] for c in columns))
        row = compute_last_row(window, params)
        assert list(row) == names
        online = np.array(list(row.values()))
        differ = [n for n, a, b in zip(names, bits(online), bits(matrix[t]), strict=True) if a != b]
        assert not differ, (
            f"{bars['symbol'].iloc[0]} row {t} ({bars['timestamp'].iloc[t]}): last-row ≠ full path for "
            + ", ".join(f"{n} ({row[n]!r} vs {full[n][t]!r})" for n in differ)
        )
        compared += 1
    return compared


@pytest.mark.parametrize(
    ("broker", "symbol", "days"),
    [("binance", "BTCUSDT", 8), ("oanda", "EUR_USD", 12), ("ibkr", "SPY", 14), ("binance", "ETHUSDT", 5)],
)
def test_every_row_of_the_simulated_market_equals_the_full_path(broker: str, symbol: str, days: int) -> None:
    bars = sim_bars(broker, symbol, days)
    compared = assert_every_row_equal(bars, PARAMS)
    assert compared >= len(bars) - warmup_bars(PARAMS) > 200


def test_every_row_of_the_real_eurusd_file_equals_the_full_path() -> None:
    bars = eurusd_bars()
    assert len(bars) == 5000
    compared = assert_every_row_equal(bars, PARAMS)
    assert compared == len(bars) - warmup_bars(PARAMS)


def test_edge_cases_flat_prices_zero_and_constant_volume_and_no_spread_equal_the_full_path() -> None:
    """Branches the market rarely takes: σ = 0 (%B 0.5, RSI 50), zero volume (Amihud NaN, signed
    volume 0), constant volume (volume z 0), a tie-heavy regime rank, a spread that comes and goes."""
    rng = np.random.default_rng(11)
    n = 1400
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    close[300:700] = close[299]  # flat for 400 bars: every window statistic meets its zero branch
    close[900:960] = np.round(close[900:960], 1)  # coarse ticks: many equal values and returns
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 2e-4, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 2e-4, n)))
    high[300:700] = low[300:700] = close[300:700]
    volume = rng.integers(0, 50, n).astype(float)
    volume[500:560] = 0.0
    volume[800:1000] = 7.0
    spread = np.where(rng.random(n) < 0.3, np.nan, close * 1e-4)
    bars = pd.DataFrame(
        {
            "timestamp": pd.date_range(START, periods=n, freq="5min"),
            "broker": "binance",
            "symbol": "EDGE",
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "spread": spread,
        }
    )
    full = compute_feature_arrays(bars, PARAMS)
    assert (full["bb_pctb_20"][400:600] == 0.5).all() and np.isnan(full["amihud_48"][560]).any()
    assert_every_row_equal(bars, PARAMS)


@pytest.mark.parametrize(
    "overrides",
    [
        {"return_horizons": (1, 2, 7), "rsi_window": 9, "bollinger_window": 33, "atr_window": 5},
        {"vol_windows": (7, 31), "regime_window": 101, "trend_window": 57, "volume_z_window": 13},
        {"macd": {"fast": 5, "slow": 35, "signal": 4}, "amihud_window": 3, "parkinson_window": 64},
        {"signed_volume_window": 1, "regime_window": 2, "trend_window": 3, "vol_windows": (2,)},
    ],
)
def test_other_feature_params_equal_the_full_path(overrides: dict) -> None:
    params = FeatureParams.model_validate({**PARAMS.model_dump(), **overrides})
    assert_every_row_equal(sim_bars("oanda", "GBP_USD", 6, seed=5), params, step=3)


def test_a_family_without_a_last_row_path_is_computed_over_the_window() -> None:
    params = FeatureParams(families=("core", "alpha158"))
    assert_every_row_equal(sim_bars("binance", "BTCUSDT", 3), params, step=17)


def test_too_few_bars_are_refused() -> None:
    bars = BarArrays.from_frame(sim_bars("binance", "BTCUSDT", 2).head(warmup_bars(PARAMS)))
    with pytest.raises(ValueError, match=f"{warmup_bars(PARAMS)} bar.*need {warmup_bars(PARAMS) + 1}"):
        compute_last_row(bars, PARAMS)


@pytest.mark.parametrize("w", [1, 2, 3, 12, 20, 48, 96, 101, 288])
@pytest.mark.parametrize("rows", [1, 5, 40])
def test_window_primitives_equal_the_store_windows_bit_for_bit(w: int, rows: int) -> None:
    rng = np.random.default_rng(w * 100 + rows)
    x = np.exp(rng.normal(0, 3, 700)) * rng.choice([1, -1], 700)  # wide range: rounding shows
    x[rng.random(700) < 0.01] = np.nan
    assert np.array_equal(bits(last_row_sum(x, w, rows)), bits(rolling_sum(x, w)[-rows:]))
    if w > 1:
        assert np.array_equal(bits(last_row_std(x, w, rows, ddof=1)), bits(rolling_std(x, w, 1)[-rows:]))
    assert np.array_equal(bits(last_row_std(x, w, rows, ddof=0)), bits(rolling_std(x, w, 0)[-rows:]))
    weights = truncated_ema_weights(max(1, w // 4), 4)  # about w weights
    assert np.array_equal(
        bits(last_row_weighted_sum(x, weights, rows)), bits(rolling_weighted_sum(x, weights)[-rows:])
    )
    if w > 1:
        ties = np.round(rng.normal(0, 1, 700), 1)  # many ties: the average-rank rule matters
        for series in (ties, x):
            for end in range(len(series) - rows, len(series)):
                assert (
                    bits(np.array([last_row_rank(series[: end + 1], w)]))[0]
                    == bits(rolling_rank(series[: end + 1], w)[-1:])[0]
                )
