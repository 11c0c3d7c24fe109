"""PSI by hand and through Evidently: a volatility shift is drift, an unchanged feature is not."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from autotrader.health.drift import (
    Windows,
    bin_shares,
    compute_drift,
    psi,
    psi_by_column,
    psi_from_shares,
    quantile_edges,
    sample,
)

pytestmark = pytest.mark.xdist_group("health")  # one worker imports Evidently once for all health tests

END = pd.Timestamp("2026-11-20", tz="UTC")
WINDOWS = Windows.ending_at(END, reference_days=4, current_days=1)
FEATURES = ["vol", "rsi", "ret"]


# ----------------------------------------------------------------------------------------- pure PSI


def test_psi_of_shares_matches_hand_computation() -> None:
    # (0.5-0.25)·ln(0.5/0.25) + 0 + (0.25-0.5)·ln(0.25/0.5) = 0.5·ln 2
    assert psi_from_shares(np.array([0.25, 0.25, 0.5]), np.array([0.5, 0.25, 0.25])) == pytest.approx(
        0.34657359, abs=1e-8
    )
    # An empty reference bin is floored at 1e-4: 2·(-0.1)·ln(0.8) + (0.2-0.0001)·ln(0.2/0.0001)
    assert psi_from_shares(np.array([0.5, 0.5, 0.0]), np.array([0.4, 0.4, 0.2])) == pytest.approx(
        1.56404911, abs=1e-8
    )
    assert psi_from_shares(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == 0.0


def test_quantile_bins_and_psi_match_hand_computation() -> None:
    reference = np.arange(1.0, 11.0)  # 1 … 10
    edges = quantile_edges(reference, bins=5)
    np.testing.assert_allclose(edges, [2.8, 4.6, 6.4, 8.2])
    np.testing.assert_allclose(bin_shares(reference, edges), [0.2] * 5)
    current = np.array([1.0] * 5 + [10.0] * 5)
    np.testing.assert_allclose(bin_shares(current, edges), [0.5, 0, 0, 0, 0.5])
    # 2·(0.3·ln 2.5) + 3·((0.0001-0.2)·ln(0.0001/0.2))
    assert psi(reference, current, bins=5) == pytest.approx(5.10803565, abs=1e-7)
    # Values beyond the reference's range fall into the open outer bins, not out of the count.
    np.testing.assert_allclose(bin_shares(np.array([-100.0, 100.0]), edges), [0.5, 0, 0, 0, 0.5])


def test_psi_of_a_sample_with_itself_is_zero_and_ignores_missing_values() -> None:
    values = np.random.default_rng(1).lognormal(size=500)
    assert psi(values, values) == 0.0
    assert psi(values, np.r_[values, np.nan, np.inf]) == 0.0
    assert math.isnan(psi(values, np.array([np.nan])))


def test_sample_is_bounded_and_repeatable() -> None:
    frame = pd.DataFrame({"x": np.arange(1000)})
    a, b = sample(frame, 100), sample(frame, 100)
    assert len(a) == 100 and a.equals(b) and a.index.is_monotonic_increasing
    assert sample(frame, 5000) is frame


def test_evidently_result_parsing_reads_value_drift_metrics() -> None:
    result = {
        "metrics": [
            {"config": {"type": "evidently:metric_v2:DriftedColumnsCount"}, "value": {"count": 1.0}},
            {
                "config": {"type": "evidently:metric_v2:ValueDrift", "column": "a:x", "method": "psi"},
                "value": 0.5,
            },
            {
                "config": {"type": "evidently:metric_v2:ValueDrift", "column": "a:y", "method": "ks"},
                "value": 0.01,
            },
        ]
    }
    assert psi_by_column(result) == {"a:x": 0.5}


# ----------------------------------------------------------------------------------------- Evidently


def _window_frame(
    start: pd.Timestamp, end: pd.Timestamp, broker: str, symbol: str, values: dict
) -> pd.DataFrame:
    stamps = pd.date_range(start, end, freq="5min", inclusive="left")
    return pd.DataFrame({"timestamp": stamps, "broker": broker, "symbol": symbol, **values})


def _features(rng: np.random.Generator, n: int, vol_scale: float = 1.0) -> dict[str, np.ndarray]:
    return {
        "vol": vol_scale * rng.lognormal(-7.0, 0.4, n),  # a volatility: scales with the market
        "rsi": rng.uniform(0, 100, n),  # scale-free oscillator
        "ret": rng.standard_t(5, n) * 1e-3,
    }


@pytest.fixture(scope="module")
def shifted() -> pd.DataFrame:
    """Two instruments; in the current day BTCUSDT's volatility triples, EURUSD stays as it was."""
    rng = np.random.default_rng(42)
    parts = []
    n_ref = int((WINDOWS.current_start - WINDOWS.reference_start) / pd.Timedelta("5min"))
    n_cur = int((WINDOWS.end - WINDOWS.current_start) / pd.Timedelta("5min"))
    for broker, symbol, scale in (("binance", "BTCUSDT", 3.0), ("oanda", "EUR_USD", 1.0)):
        parts.append(
            _window_frame(
                WINDOWS.reference_start, WINDOWS.current_start, broker, symbol, _features(rng, n_ref)
            )
        )
        parts.append(
            _window_frame(WINDOWS.current_start, WINDOWS.end, broker, symbol, _features(rng, n_cur, scale))
        )
    return pd.concat(parts, ignore_index=True)


def test_tripled_volatility_drifts_and_unaffected_features_do_not(shifted: pd.DataFrame) -> None:
    result = compute_drift(shifted, FEATURES, WINDOWS, threshold=0.2, max_rows=20_000)
    btc, eur = result.evidently["binance/BTCUSDT"], result.evidently["oanda/EUR_USD"]
    assert btc["vol"] > 0.2, btc
    assert btc["rsi"] < 0.2 and btc["ret"] < 0.2, btc
    assert max(eur.values()) < 0.2, eur
    assert result.above("binance/BTCUSDT") == ["vol"] and result.above("oanda/EUR_USD") == []
    # Our own quantile-binned PSI agrees on what drifted.
    assert result.quantile["binance/BTCUSDT"]["vol"] > 0.2
    assert max(v for k, v in result.quantile["binance/BTCUSDT"].items() if k != "vol") < 0.2
    summary = result.instrument_summary("binance/BTCUSDT")
    assert summary["max_psi_feature"] == "vol" and summary["features_above_threshold"] == ["vol"]
    assert summary["rows"] == {"reference": 4 * 288, "current": 288}
    table = result.psi_table()
    assert table["instruments"]["binance/BTCUSDT"]["vol"]["drift"] is True
    assert table["windows"]["current"]["start"] == "2026-11-19T00:00:00+00:00"
    assert result.snapshot is not None


def test_identical_windows_have_no_drift() -> None:
    rng = np.random.default_rng(7)
    day = _features(rng, 288)
    reference = {k: np.tile(v, 4) for k, v in day.items()}  # the same values, four times over
    frame = pd.concat(
        [
            _window_frame(WINDOWS.reference_start, WINDOWS.current_start, "binance", "BTCUSDT", reference),
            _window_frame(WINDOWS.current_start, WINDOWS.end, "binance", "BTCUSDT", day),
        ],
        ignore_index=True,
    )
    result = compute_drift(frame, FEATURES, WINDOWS, threshold=0.2, max_rows=20_000)
    for feature in FEATURES:
        assert result.evidently["binance/BTCUSDT"][feature] == pytest.approx(0.0, abs=1e-9)
        assert result.quantile["binance/BTCUSDT"][feature] == pytest.approx(0.0, abs=1e-9)
    assert result.above("binance/BTCUSDT") == []


def test_a_closed_market_or_a_missing_feature_is_skipped_not_drift() -> None:
    rng = np.random.default_rng(3)
    n_ref = 4 * 288
    values = _features(rng, n_ref)
    values["ret"] = np.full(n_ref, np.nan)  # a feature this broker cannot supply
    frame = pd.concat(
        [
            _window_frame(WINDOWS.reference_start, WINDOWS.current_start, "ibkr", "SPY", values),
            _window_frame(WINDOWS.current_start, WINDOWS.end, "binance", "BTCUSDT", _features(rng, 288)),
        ],
        ignore_index=True,
    )
    result = compute_drift(frame, FEATURES, WINDOWS, threshold=0.2, max_rows=20_000)
    # SPY has no current rows at all, BTCUSDT no reference rows: nothing to compare, nothing drifted.
    assert result.evidently == {} and result.snapshot is None
    assert set(result.notes["ibkr/SPY"]["skipped"]) == set(FEATURES)
    assert "current 0" in result.notes["ibkr/SPY"]["skipped"]["vol"]
    assert result.instrument_summary("ibkr/SPY")["max_psi"] is None
