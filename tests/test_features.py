"""Feature math: definitions, causality, window-locality, scale-freeness and values against references."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from autotrader.features import (
    FEATURE_DTYPE,
    WARMUP_BARS,
    compute_features,
    feature_names,
    feature_specs,
    fingerprint,
    warmup_bars,
)
from autotrader.features.windows import (
    lag,
    rolling_rank,
    rolling_std,
    rolling_sum,
    rolling_weighted_sum,
    truncated_ema_weights,
)
from autotrader.params import FeatureParams, Instrument
from autotrader.schema import BAR_COLUMNS
from autotrader.sources.sim import SimulatedMarket

PARAMS = FeatureParams()
START = pd.Timestamp("2026-03-02", tz="UTC")  # a Monday


def sim_bars(broker: str, symbol: str, days: int = 6, interval: str = "5min", seed: int = 3) -> pd.DataFrame:
    market = SimulatedMarket(seed=seed, signal_strength=1.0)
    return market.fetch(
        Instrument(broker=broker, symbol=symbol),
        START,
        START + pd.Timedelta(days=days),
        pd.Timedelta(interval),
    )


@pytest.fixture(scope="module")
def fx_bars() -> pd.DataFrame:
    return sim_bars("oanda", "EUR_USD")


@pytest.fixture(scope="module")
def fx_features(fx_bars: pd.DataFrame) -> pd.DataFrame:
    return compute_features(fx_bars, PARAMS)


def feature_matrix(frame: pd.DataFrame) -> np.ndarray:
    return frame[feature_names(PARAMS)].to_numpy()


# ----------------------------------------------------------------------------- definitions


def test_columns_are_bars_then_every_declared_feature_as_float64(fx_bars, fx_features):
    names = feature_names(PARAMS)
    assert list(fx_features.columns) == [*BAR_COLUMNS, *names]
    assert all(str(fx_features[n].dtype) == FEATURE_DTYPE for n in names)
    pd.testing.assert_frame_equal(fx_features[list(BAR_COLUMNS)], fx_bars.reset_index(drop=True))
    families = {s.family for s in feature_specs(PARAMS)}
    assert families == {"technical", "microstructure", "regime"}
    assert not np.isinf(feature_matrix(fx_features)).any()


def test_each_feature_is_first_defined_exactly_at_its_declared_lookback(fx_features):
    for spec in feature_specs(PARAMS):
        column = fx_features[spec.name]
        assert column.iloc[: spec.lookback].isna().all(), spec.name
        assert column.iloc[spec.lookback :].notna().all(), spec.name
    assert warmup_bars(PARAMS) == max(s.lookback for s in feature_specs(PARAMS)) == WARMUP_BARS


def test_warmup_follows_params():
    longer = FeatureParams(regime_window=500)
    assert warmup_bars(longer) == warmup_bars(PARAMS) + 500 - PARAMS.regime_window
    assert fingerprint(longer, "5min") != fingerprint(PARAMS, "5min")
    assert fingerprint(PARAMS, "1min") != fingerprint(PARAMS, "5min")
    assert fingerprint(PARAMS, "5min") == fingerprint(FeatureParams(), "5min")


def test_duplicate_feature_names_are_refused():
    with pytest.raises(ValueError, match="share the name"):
        feature_specs(FeatureParams(return_horizons=(1, 1)))


def test_unsorted_or_mixed_input_is_refused(fx_bars):
    with pytest.raises(ValueError, match="increasing"):
        compute_features(fx_bars.iloc[::-1], PARAMS)
    with pytest.raises(ValueError, match="increasing"):
        compute_features(pd.concat([fx_bars.iloc[:10], fx_bars.iloc[9:20]]), PARAMS)
    other = sim_bars("oanda", "GBP_USD", days=1)
    with pytest.raises(ValueError, match="one instrument"):
        compute_features(pd.concat([fx_bars.iloc[:5], other.iloc[5:10]]), PARAMS)


# ----------------------------------------------------------------------------- causality


def _perturb_future(bars: pd.DataFrame, k: int, rng: np.random.Generator, how: str) -> pd.DataFrame:
    """Change bars strictly after row k in one of several ways, keeping rows ≤ k byte-identical."""
    out = bars.copy()
    future = slice(k + 1, None)
    n_future = len(out) - k - 1
    if how == "prices":
        factor = np.exp(rng.normal(0, 0.05, n_future))
        for col in ("open", "high", "low", "close"):
            out.loc[out.index[future], col] = out[col].to_numpy()[future] * factor
    elif how == "volume":
        out.loc[out.index[future], "volume"] = rng.uniform(0, 1e6, n_future)
    elif how == "spread":
        spread = rng.uniform(0, 0.01, n_future)
        spread[rng.random(n_future) < 0.3] = np.nan
        out.loc[out.index[future], "spread"] = spread
    elif how == "truncate":
        out = out.iloc[: k + 1]
    elif how == "drop":  # remove some future bars (a gap appears after k)
        keep = np.ones(len(out), dtype=bool)
        keep[k + 1 :] = rng.random(n_future) < 0.5
        out = out.iloc[keep]
    elif how == "append":
        extra = out.iloc[-50:].copy()
        extra["timestamp"] = extra["timestamp"] + (out["timestamp"].iloc[-1] - extra["timestamp"].iloc[0])
        extra["timestamp"] += pd.Timedelta("5min")
        extra["close"] *= 1.5
        out = pd.concat([out, extra])
    return out.reset_index(drop=True)


@pytest.mark.parametrize("how", ["prices", "volume", "spread", "truncate", "drop", "append"])
def test_changing_the_future_never_changes_the_past(fx_bars, fx_features, how):
    rng = np.random.default_rng(zlib.crc32(how.encode()))  # stable across processes
    base = feature_matrix(fx_features)
    for k in rng.integers(0, len(fx_bars) - 2, size=6):
        changed = compute_features(_perturb_future(fx_bars, int(k), rng, how), PARAMS)
        assert np.array_equal(feature_matrix(changed)[: k + 1], base[: k + 1], equal_nan=True), (how, k)


def test_perturbing_the_future_does_change_the_future(fx_bars, fx_features):
    """Guard against a vacuous causality test: the perturbation really moves later features."""
    k = len(fx_bars) // 2
    changed = compute_features(_perturb_future(fx_bars, k, np.random.default_rng(0), "prices"), PARAMS)
    assert not np.array_equal(feature_matrix(changed)[k + 1 :], feature_matrix(fx_features)[k + 1 :])


def test_rows_depend_on_warmup_bars_of_history_only_bit_for_bit(fx_bars, fx_features):
    """What the store relies on: a row computed from just ``warmup`` earlier bars equals the full run."""
    warmup = warmup_bars(PARAMS)
    base = feature_matrix(fx_features)
    rng = np.random.default_rng(11)
    for k in rng.integers(warmup, len(fx_bars), size=8):
        tail = compute_features(fx_bars.iloc[k - warmup :].reset_index(drop=True), PARAMS)
        assert np.array_equal(feature_matrix(tail)[warmup:], base[k:], equal_nan=True), k
    # One bar less history than the warm-up is not enough for the slowest feature.
    k = warmup + 10
    short = compute_features(fx_bars.iloc[k - warmup + 1 :].reset_index(drop=True), PARAMS)
    assert np.isnan(short["vol_rank"].iloc[warmup - 1])
    assert not np.isnan(fx_features["vol_rank"].iloc[k])


# ----------------------------------------------------------------------------- scale and values


def test_features_are_scale_free_in_price_and_volume(fx_bars, fx_features):
    scaled = fx_bars.copy()
    for col in ("open", "high", "low", "close", "spread"):
        scaled[col] = scaled[col] * 50_000.0
    scaled["volume"] = scaled["volume"] * 3.0
    again = compute_features(scaled, PARAMS)
    volume_level = {f"volume_z_{PARAMS.volume_z_window}"}  # z of log(1+v): shift-invariant only for v ≫ 1
    for name in feature_names(PARAMS):
        if name in volume_level:
            continue
        np.testing.assert_allclose(again[name], fx_features[name], rtol=1e-7, atol=1e-12, err_msg=name)


def test_values_match_textbook_references(fx_bars, fx_features):
    f, close = fx_features, fx_bars["close"]
    log_close = np.log(close)
    for h in PARAMS.return_horizons:
        np.testing.assert_allclose(f[f"ret_{h}"], log_close.diff(h), rtol=1e-9, atol=1e-15)
    ret_1 = log_close.diff()
    for w in PARAMS.vol_windows:
        np.testing.assert_allclose(f[f"vol_{w}"], ret_1.rolling(w).std(), rtol=1e-8)
    w = PARAMS.bollinger_window
    mid, sd = close.rolling(w).mean(), close.rolling(w).std(ddof=0)
    np.testing.assert_allclose(f[f"bb_pctb_{w}"], (close - (mid - 2 * sd)) / (4 * sd), rtol=1e-6)
    change = close.diff()
    gain = change.clip(lower=0).rolling(PARAMS.rsi_window).mean()
    loss = (-change).clip(lower=0).rolling(PARAMS.rsi_window).mean()
    np.testing.assert_allclose(f[f"rsi_{PARAMS.rsi_window}"], 100 * gain / (gain + loss), rtol=1e-8)
    rsi = f[f"rsi_{PARAMS.rsi_window}"].dropna()
    assert rsi.between(0, 100).all()
    np.testing.assert_array_equal(f["rel_spread"], fx_bars["spread"] / close)
    hl = np.log(fx_bars["high"] / fx_bars["low"])
    w = PARAMS.parkinson_window
    np.testing.assert_allclose(
        f[f"parkinson_{w}"], np.sqrt((hl**2).rolling(w).mean() / (4 * np.log(2))), rtol=1e-9
    )
    # MACD with truncated EMAs stays within a hair of the infinite-memory textbook MACD.
    m = PARAMS.macd
    line = (close.ewm(span=m.fast, adjust=False).mean() - close.ewm(span=m.slow, adjust=False).mean()) / close
    valid = f["macd_line"].notna()
    assert np.abs(f["macd_line"][valid] - line[valid]).max() < 0.05 * np.abs(line[valid]).max()
    np.testing.assert_allclose(f["macd_hist"], f["macd_line"] - f["macd_signal"], rtol=0, atol=1e-15)
    sv = f[f"signed_volume_{PARAMS.signed_volume_window}"].dropna()
    assert sv.between(-1, 1).all() and sv.std() > 0


def test_regimes_take_only_their_labels_and_follow_volatility(fx_features):
    regime = fx_features["vol_regime"].dropna()
    assert set(regime.unique()) == {0.0, 1.0, 2.0}
    trend = fx_features["trend_regime"].dropna()
    assert set(trend.unique()) <= {-1.0, 0.0, 1.0} and len(set(trend.unique())) >= 2
    vol = fx_features[f"vol_{max(PARAMS.vol_windows)}"]
    valid = fx_features["vol_rank"].notna()
    assert (
        vol[valid & (fx_features["vol_regime"] == 2)].mean()
        > vol[valid & (fx_features["vol_regime"] == 0)].mean()
    )
    rank = vol.rolling(PARAMS.regime_window).rank()  # pandas reference (counts the bar itself)
    np.testing.assert_allclose(
        fx_features["vol_rank"][valid], ((rank - 1) / (PARAMS.regime_window - 1))[valid], rtol=1e-12
    )


def test_missing_spread_gives_nan_relative_spread_only():
    bars = sim_bars("binance", "BTCUSDT", days=3)
    bars["spread"] = np.nan  # Binance klines carry no spread
    features = compute_features(bars, PARAMS)
    assert features["rel_spread"].isna().all()
    others = [n for n in feature_names(PARAMS) if n != "rel_spread"]
    assert features[others].iloc[warmup_bars(PARAMS) :].notna().all().all()


# ----------------------------------------------------------------------------- window helpers


@pytest.mark.parametrize("w", [1, 2, 5, 13, 96])
def test_window_helpers_match_pandas_and_are_start_independent(w):
    rng = np.random.default_rng(w)
    x = np.cumsum(rng.normal(size=800)) + 100.0
    s = pd.Series(x)
    np.testing.assert_allclose(rolling_sum(x, w), s.rolling(w).sum(), rtol=1e-12)
    if w > 1:
        exact_std = np.lib.stride_tricks.sliding_window_view(x, w).std(axis=1, ddof=1)  # per window
        np.testing.assert_allclose(rolling_std(x, w)[w - 1 :], exact_std, rtol=1e-9)
        np.testing.assert_allclose(rolling_rank(x, w), (s.rolling(w).rank() - 1) / (w - 1), rtol=1e-12)
    weights = truncated_ema_weights(w, 4)
    assert weights.sum() == pytest.approx(1.0)
    for span, fn in (
        (w, lambda a: rolling_sum(a, w)),
        (w, lambda a: rolling_std(a, w)),
        (w, lambda a: rolling_rank(a, w)),
        (len(weights), lambda a: rolling_weighted_sum(a, weights)),
    ):
        full = fn(x)
        for start in (1, 37, 250):  # once the window is full, the start of the series does not matter
            assert np.array_equal(fn(x[start:])[span - 1 :], full[start + span - 1 :], equal_nan=True)


def test_windows_propagate_nan_and_lag_refuses_the_future():
    x = np.arange(20, dtype=float)
    x[7] = np.nan
    out = rolling_sum(x, 3)
    assert np.isnan(out[:2]).all() and np.isnan(out[7:10]).all() and out[10] == 8 + 9 + 10
    with pytest.raises(ValueError, match="future"):
        lag(x, -1)
