"""Labels, purged/embargoed splits, the backtest and its statistics — pure functions, small frames.

The backtest statistics are cross-checked against ``empyrical`` (an independent implementation) on
the same returns; trades are re-segmented here from the positions, independently of the backtest.
"""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import pytest

from autotrader.errors import ModelError
from autotrader.modeling import backtest as bt
from autotrader.modeling import metrics as m
from autotrader.modeling.gates import decide, evaluate_gates, failures, required_vs_champion, verdict
from autotrader.modeling.labels import BAR_RETURN, FWD_RETURN, LABEL_END, label_frame, ternary
from autotrader.modeling.splits import _ns, embargo_start, purged_folds, split_train_valid_test, time_grid
from autotrader.modeling.weights import average_uniqueness, uniqueness_weights
from autotrader.params import CostParams, GateParams

T0 = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday


def bars(symbols: dict[str, str], n: int, step: str = "5min", seed: int = 0) -> pd.DataFrame:
    """Random-walk closes for each (symbol → broker) on one shared clock."""
    rng = np.random.default_rng(seed)
    frames = []
    for symbol, broker in symbols.items():
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": pd.date_range(T0, periods=n, freq=step),
                    "broker": broker,
                    "symbol": symbol,
                    "close": close,
                    "spread": close * 1e-4,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------- labels


def test_label_is_the_forward_log_return_of_its_own_instrument() -> None:
    frame = bars({"A": "binance", "B": "binance"}, n=50)
    out = label_frame(frame, horizon=5, threshold_bps=10)
    for symbol, part in frame.groupby("symbol"):
        close = part["close"].to_numpy()
        got = out[out["symbol"] == symbol]
        assert len(got) == len(part) - 5  # rows without a full label window are dropped
        np.testing.assert_allclose(got[FWD_RETURN], np.log(close[5:] / close[:-5]))
        assert (got[LABEL_END].to_numpy() == part["timestamp"].to_numpy()[5:]).all()
        np.testing.assert_allclose(got[BAR_RETURN].to_numpy()[1:], close[1:-5] / close[:-6] - 1)


def test_ternary_threshold_in_basis_points() -> None:
    fwd = np.array([0.0012, 0.0009, -0.0009, -0.0011, 0.0])
    assert ternary(fwd, 10).tolist() == [1, 0, 0, -1, 0]
    assert ternary(fwd, 0).tolist() == [1, 1, -1, -1, 0]


# ----------------------------------------------------------------------------------------- splits


def test_train_valid_test_are_purged_and_embargoed() -> None:
    frame = label_frame(bars({"A": "binance", "B": "oanda"}, n=12 * 24 * 10), horizon=12, threshold_bps=5)
    start, end = T0, T0 + pd.Timedelta(days=10)
    parts, bounds = split_train_valid_test(
        frame, start=start, end=end, test_days=3, validation_fraction=0.25, embargo=6
    )
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    grid = time_grid(frame["timestamp"])
    assert test["timestamp"].min() == bounds.test_start == end - pd.Timedelta(days=3)
    assert (valid["timestamp"] >= bounds.valid_start).all() and (valid["timestamp"] < bounds.test_start).all()
    for earlier, later_start in ((train, bounds.valid_start), (valid, bounds.test_start)):
        boundary = int(_ns(pd.DatetimeIndex([later_start]))[0])
        cutoff = embargo_start(grid, boundary, 6)
        # purge: no label window reaches the later split; embargo: nor the 6 bars before it
        assert _ns(earlier[LABEL_END]).max() < cutoff
        assert cutoff == grid[np.searchsorted(grid, boundary) - 6]
    # both instruments cut at the same instant (grouped by timestamp)
    assert set(test.groupby("symbol")["timestamp"].min()) == {bounds.test_start}
    assert len(train) + len(valid) + len(test) < len(frame)  # the gaps are really dropped


def test_test_window_longer_than_the_data_is_an_error() -> None:
    frame = label_frame(bars({"A": "binance"}, n=300), horizon=3, threshold_bps=5)
    with pytest.raises(ModelError, match="test_days"):
        split_train_valid_test(
            frame, start=T0, end=T0 + pd.Timedelta(days=1), test_days=2, validation_fraction=0.2, embargo=0
        )


@pytest.mark.parametrize("walk_forward", [True, False])
def test_cv_folds_never_train_on_an_overlapping_label_window(walk_forward: bool) -> None:
    frame = label_frame(bars({"A": "binance", "B": "binance"}, n=2000), horizon=10, threshold_bps=5)
    embargo = 7
    folds = purged_folds(
        frame["timestamp"], frame[LABEL_END], n_folds=4, embargo=embargo, walk_forward=walk_forward
    )
    assert len(folds) == 4
    ts, end = _ns(frame["timestamp"]), _ns(frame[LABEL_END])
    grid = time_grid(ts)
    step = grid[1] - grid[0]
    for fold in folds:
        lo, hi = ts[fold.valid].min(), ts[fold.valid].max()
        t_train, e_train = ts[fold.train], end[fold.train]
        # no training label window [t, t+h] overlaps the validation span [lo, max label end of the fold]
        overlaps = (t_train <= end[fold.valid].max()) & (e_train >= lo)
        assert not overlaps.any()
        assert not np.isin(fold.train, fold.valid).any()
        if walk_forward:
            assert t_train.max() < lo and e_train.max() < lo - (embargo - 1) * step
        else:
            after = t_train[t_train > hi]
            if len(after):  # embargo: the first `embargo` bars after the fold are not trained on
                assert after.min() > hi + embargo * step


def test_walk_forward_folds_expand_in_time() -> None:
    frame = label_frame(bars({"A": "binance"}, n=1200), horizon=5, threshold_bps=5)
    folds = purged_folds(frame["timestamp"], frame[LABEL_END], n_folds=3, embargo=2)
    starts = [f.valid_start for f in folds]
    assert starts == sorted(starts)
    assert [len(f.train) for f in folds] == sorted(len(f.train) for f in folds)


# ----------------------------------------------------------------------------------------- backtest


def one_instrument(
    returns: list[float], signal: list[int], broker: str = "binance", spread=None
) -> pd.DataFrame:
    n = len(returns)
    close = 100 * np.cumprod(1 + np.asarray(returns))
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(T0, periods=n, freq="5min"),
            "broker": broker,
            "symbol": "X",
            "close": close,
            "spread": np.full(n, np.nan) if spread is None else spread,
            BAR_RETURN: returns,
            bt.SIGNAL: signal,
        }
    )


def test_bets_follow_the_previous_bar_and_last_the_holding_period() -> None:
    signal = np.array([1, 0, 0, 0, -1, -1, 0, 0, 0, 0])
    position, starts, ends = bt.bets(signal, hold=3)
    assert position.tolist() == [0, 1, 1, 1, 0, -1, -1, -1, 0, 0]
    assert starts.tolist() == [1, 5] and ends.tolist() == [3, 7]
    # a bet in the same direction right after the last one is a new trade
    position, starts, ends = bt.bets(np.ones(7, dtype=int), hold=3)
    assert position.tolist() == [0, 1, 1, 1, 1, 1, 1] and starts.tolist() == [1, 4]


def test_no_look_ahead_a_signal_only_moves_later_positions() -> None:
    rng = np.random.default_rng(3)
    signal = rng.integers(-1, 2, 200)
    base, _, _ = bt.bets(signal, hold=4)
    for t in (10, 57, 150):
        changed = signal.copy()
        changed[t] = -changed[t] if changed[t] else 1
        other, _, _ = bt.bets(changed, hold=4)
        assert (other[: t + 1] == base[: t + 1]).all()


def test_costs_and_trade_returns_by_hand() -> None:
    costs = CostParams(fees_bps={"binance": 10.0, "oanda": 0, "ibkr": 0}, default_spread_bps={"binance": 4.0})
    frame = one_instrument([0.0, 0.01, 0.02, -0.01, 0.0], [1, 0, 0, 0, 0])
    result = bt.run_instrument(frame, costs, hold=2, fill="close")  # same-bar close fills
    rate = 10e-4 + 0.5 * 4e-4  # fee + half the default spread (no quoted spread)
    assert result.bars["position"].tolist() == [0, 1, 1, 0, 0]
    np.testing.assert_allclose(result.bars["cost"], [0, rate, rate, 0, 0])
    # the entry cost is paid at the fill (the close of bar 0), before bar 1's move; the exit after bar 2's
    np.testing.assert_allclose(result.bars["net"], [0, (1 - rate) * 1.01 - 1, 0.02 - rate, 0, 0])
    assert len(result.trades) == 1
    assert result.trades["ret"].iloc[0] == pytest.approx((1 - rate) * 1.01 * (1 + 0.02 - rate) - 1)
    # a quoted spread replaces the default: half of spread/close
    quoted = one_instrument([0.0, 0.01, 0.0], [1, 0, 0], spread=np.array([0.2, 0.2, 0.2]))
    res = bt.run_instrument(quoted, costs, hold=1, fill="close")
    assert res.bars["cost"].iloc[1] == pytest.approx(2 * 10e-4 + 0.5 * 0.2 / 100 + 0.5 * 0.2 / 101)


def with_opens(closes: list[float], opens: list[float], signal: list[int]) -> pd.DataFrame:
    close = np.asarray(closes)
    frame = one_instrument(list(np.concatenate([[0.0], close[1:] / close[:-1] - 1])), signal)
    return frame.assign(close=close, open=np.asarray(opens))


def test_next_open_fills_by_hand() -> None:
    # Signal long at the close of bar 0, held 2 bars (1 and 2). Next-open: filled at bar 1's open (102),
    # out at bar 3's open (103). Same-bar close: in at bar 0's close (100), out at bar 2's close (103).
    frame = with_opens([100, 101, 103, 102, 104], [100, 102, 102.5, 103, 101], [1, 0, 0, 0, 0])
    free = CostParams(fees_bps={"binance": 0.0}, default_spread_bps={"binance": 0.0})
    nxt = bt.run_instrument(frame, free, hold=2)  # next_open is the default
    assert nxt.trades["ret"].iloc[0] == pytest.approx(103 / 102 - 1, rel=1e-12)
    # bar 1 earns only from its open; bar 3 only its gap (102 → 103), the position being closed at its open
    np.testing.assert_allclose(
        nxt.bars["gross"], [0, 101 / 102 - 1, 103 / 101 - 1, 103 / 103 - 1, 0], atol=1e-15
    )
    np.testing.assert_allclose(nxt.bars["gross"].iloc[3], 0.0, atol=1e-15)  # 103/103: opens where it closed
    close = bt.run_instrument(frame, free, hold=2, fill="close")
    assert close.trades["ret"].iloc[0] == pytest.approx(103 / 100 - 1, rel=1e-12)
    # with costs: entry and exit each pay the rate of the bar they fill at
    costs = CostParams(fees_bps={"binance": 10.0}, default_spread_bps={"binance": 0.0})
    r = 10e-4
    paid = bt.run_instrument(frame, costs, hold=2)
    np.testing.assert_allclose(paid.bars["cost"], [0, r, 0, r, 0])
    expected = (101 / 102 - r) * (102.5 / 101) * (103 / 102.5) * (1 - r) - 1
    assert paid.trades["ret"].iloc[0] == pytest.approx(expected, rel=1e-12)
    # and the trade compounds exactly to the equity curve
    assert np.prod(1 + paid.bars["net"]) - 1 == pytest.approx(expected, rel=1e-12)


def test_costs_are_paid_only_when_the_position_changes() -> None:
    costs = CostParams(fees_bps={"binance": 10.0}, default_spread_bps={"binance": 0.0})
    r = 10e-4
    # long, rolled into another long bet after 3 bars: one entry (bar 1) and one exit (the end) only
    rolled = bt.run_instrument(one_instrument([0.0] * 7, [1] * 7), costs, hold=3)
    assert rolled.bars["position"].tolist() == [0, 1, 1, 1, 1, 1, 1]
    assert len(rolled.trades) == 2  # two bets (two decisions) ...
    np.testing.assert_allclose(rolled.bars["cost"], [0, r, 0, 0, 0, 0, r])  # ... but no cost between them
    assert rolled.turnover == 2.0
    # a flip pays twice (out of the long, into the short) and counts 2 units of turnover
    flip = bt.run_instrument(one_instrument([0.0] * 7, [1, 0, 0, -1, 0, 0, 0]), costs, hold=3)
    assert flip.bars["position"].tolist() == [0, 1, 1, 1, -1, -1, -1]
    np.testing.assert_allclose(flip.bars["cost"], [0, r, 0, 0, 2 * r, 0, r])
    assert flip.turnover == 4.0
    assert flip.trades["ret"].tolist() == pytest.approx([(1 - r) * (1 - r) - 1, (1 - r) * (1 - r) - 1])


def test_an_fx_only_portfolio_is_its_single_instrument() -> None:
    rng = np.random.default_rng(4)
    n = 288 * 9  # nine days of 5-minute bars from Monday 00:00 UTC: several 17:00 New-York sessions
    fx = one_instrument(list(rng.normal(0, 0.001, n)), list(rng.integers(-1, 2, n)), broker="oanda")
    result = bt.run(fx, CostParams(), hold=6)
    inst = result.metrics["instruments"]["oanda/X"]
    assert result.portfolio_periods_per_year == 260
    pd.testing.assert_series_equal(result.portfolio_daily, result.instruments["oanda/X"].daily)
    assert result.metrics["portfolio"]["sharpe"] == pytest.approx(inst["sharpe"], rel=1e-12)


def test_fx_and_equity_bars_are_grouped_by_their_session() -> None:
    # Sunday 22:00 UTC in January is the FX Monday session (17:00 New York); Friday's US equity bar is Friday.
    fx = bt.session_dates(
        "oanda", pd.Series(pd.to_datetime(["2026-01-04 22:05", "2026-01-05 21:55"], utc=True))
    )
    assert list(fx.strftime("%Y-%m-%d")) == ["2026-01-05", "2026-01-05"]
    eq = bt.session_dates("ibkr", pd.Series(pd.to_datetime(["2026-01-09 15:00"], utc=True)))
    assert list(eq.strftime("%Y-%m-%d")) == ["2026-01-09"]


def trades_from_positions(position: np.ndarray, net: np.ndarray) -> list[np.ndarray]:
    """Independent segmentation: a trade is a run of equal non-zero positions, split every `hold` bars."""
    out, current = [], []
    for p, r, prev in zip(position, net, np.concatenate([[0], position[:-1]]), strict=True):
        if current and (p != prev or p == 0):
            out.append(np.array(current))
            current = []
        if p != 0:
            current.append(r)
    if current:
        out.append(np.array(current))
    return out


def test_statistics_agree_with_empyrical() -> None:
    rng = np.random.default_rng(11)
    n = 288 * 12
    frame = one_instrument(list(rng.normal(0.0002, 0.003, n)), list(rng.integers(-1, 2, n)))
    costs = CostParams()
    result = bt.run(frame, costs, hold=1, fill="close")  # bar-aligned trades, as segmented below
    inst = result.instruments["binance/X"]
    metrics = result.metrics["instruments"]["binance/X"]
    ppy = 365
    assert metrics["sharpe"] == pytest.approx(empyrical.sharpe_ratio(inst.daily, annualization=ppy), rel=1e-9)
    assert metrics["max_drawdown"] == pytest.approx(
        -empyrical.max_drawdown(inst.bars["net"].to_numpy()), rel=1e-9
    )
    # hold=1: every bet is one bar, so each non-flat bar is a trade
    segments = [np.array([r]) for p, r in zip(inst.bars["position"], inst.bars["net"], strict=True) if p != 0]
    wins = [empyrical.cum_returns_final(seg) > 0 for seg in segments]
    assert metrics["win_rate"] == pytest.approx(np.mean(wins))
    assert metrics["n_trades"] == len(segments)
    # and the portfolio of one instrument is that instrument
    assert result.metrics["portfolio"]["max_drawdown"] == pytest.approx(metrics["max_drawdown"])


def test_win_rate_of_multi_bar_trades_agrees_with_empyrical() -> None:
    rng = np.random.default_rng(5)
    n = 2000
    signal = np.repeat(rng.choice([-1, 0, 1], n // 20), 20)
    frame = one_instrument(list(rng.normal(0, 0.002, n)), list(signal))
    inst = bt.run(frame, CostParams(), hold=20, fill="close").instruments["binance/X"]
    # bets of 20 bars on a signal constant over 20-bar blocks: runs split into 20-bar trades
    segments = []
    for seg in trades_from_positions(inst.bars["position"].to_numpy(), inst.bars["net"].to_numpy()):
        segments += [seg[i : i + 20] for i in range(0, len(seg), 20)]
    wins = np.array([empyrical.cum_returns_final(s) > 0 for s in segments])
    assert len(inst.trades) == len(segments)
    assert m.win_rate(inst.trades["ret"]) == pytest.approx(wins.mean())
    np.testing.assert_allclose(
        np.sort(inst.trades["ret"]), np.sort([empyrical.cum_returns_final(s) for s in segments])
    )


def test_portfolio_is_the_equal_weight_mean_and_annualised_by_its_widest_calendar() -> None:
    rng = np.random.default_rng(2)
    a = one_instrument(list(rng.normal(0, 0.002, 600)), list(rng.integers(-1, 2, 600)))
    b = one_instrument(list(rng.normal(0, 0.001, 600)), list(rng.integers(-1, 2, 600)), broker="oanda")
    b["symbol"] = "Y"
    result = bt.run(pd.concat([a, b]), CostParams(), hold=3)
    both = pd.concat(
        [result.instruments[k].bars.set_index("timestamp")["net"] for k in ("binance/X", "oanda/Y")], axis=1
    )
    np.testing.assert_allclose(result.portfolio_bars.to_numpy(), both.fillna(0).mean(axis=1).to_numpy())
    assert result.portfolio_periods_per_year == 365
    assert result.metrics["instruments"]["oanda/Y"]["periods_per_year"] == 260


# ----------------------------------------------------------------------------------------- metrics


def test_sharpe_of_constant_returns_is_zero_not_infinite() -> None:
    assert m.sharpe_ratio(np.zeros(30), 365) == 0.0
    assert m.sharpe_ratio(np.full(30, 0.001), 365) == 0.0


def test_deflated_sharpe_falls_with_more_trials_and_matches_the_formula() -> None:
    rng = np.random.default_rng(8)
    daily = rng.normal(0.002, 0.01, 250)
    one, many = m.deflated_sharpe_ratio(daily, 1), m.deflated_sharpe_ratio(daily, 100)
    assert many["dsr"] < one["dsr"]
    # with one trial the DSR is the probabilistic Sharpe ratio against 0
    sr = daily.mean() / daily.std(ddof=1)
    from scipy import stats

    skew, kurt = stats.skew(daily, bias=False), stats.kurtosis(daily, fisher=False, bias=False)
    psr = stats.norm.cdf(sr * math.sqrt(249) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))
    assert one["dsr"] == pytest.approx(psr)


def test_deflated_sharpe_with_n_trials_by_hand() -> None:
    # E[max SR] of N = 10 unskilled trials with unit variance (Bailey & López de Prado, eq. 2):
    # (1 − γ)·Φ⁻¹(1 − 1/10) + γ·Φ⁻¹(1 − 1/(10e)) = 0.42278·1.28155 + 0.57722·1.78924 = 1.57460
    assert m.expected_max_sharpe(10, 1.0) == pytest.approx(1.57460, abs=1e-5)
    assert m.expected_max_sharpe(10, 0.04) == pytest.approx(0.2 * 1.57460, abs=1e-5)
    assert m.expected_max_sharpe(1, 1.0) == 0.0
    # a fixed 60-day sample → DSR by the formula, term by term
    daily = np.tile([0.03, -0.01, 0.03, -0.01, 0.02, 0.0], 10)  # T = 60
    t = len(daily)
    sr = daily.mean() / daily.std(ddof=1)
    from scipy import stats

    kurt = stats.kurtosis(daily, fisher=False, bias=False)
    skew = stats.skew(daily, bias=False)
    sr0 = math.sqrt(1 / (t - 1)) * 1.57460  # N = 10
    expected = stats.norm.cdf(
        (sr - sr0) * math.sqrt(t - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    )
    got = m.deflated_sharpe_ratio(daily, 10)
    assert got["n_trials"] == 10 and got["sr0"] == pytest.approx(sr0, abs=1e-5)
    assert got["dsr"] == pytest.approx(expected, abs=1e-5)
    # more trials, a higher bar: 100 trials deflate it further than 10
    assert m.deflated_sharpe_ratio(daily, 100)["dsr"] < got["dsr"]


def test_stationary_bootstrap_indices_are_wrapped_blocks() -> None:
    idx = m.stationary_bootstrap_indices(50, 200, 5.0, np.random.default_rng(0))
    assert idx.shape == (200, 50) and idx.min() >= 0 and idx.max() < 50
    steps = (np.diff(idx, axis=1) % 50) == 1  # continuing a block = the next index (wrapping)
    # a new block starts with probability 1/5; a fresh start may happen to continue, hence ≥
    assert steps.mean() == pytest.approx(0.8, abs=0.03)
    assert (m.stationary_bootstrap_indices(50, 20, 1.0, np.random.default_rng(0)) >= 0).all()


@pytest.mark.slow
def test_bootstrap_sharpe_interval_covers_the_true_sharpe_of_a_known_process() -> None:
    """AR(1) daily returns with a known Sharpe: the 90 % interval covers it about 90 % of the time.

    Known finite-sample behaviour (measured): with 250 days the stationary bootstrap covers ≈ 0.84,
    the i.i.d. bootstrap (block length 1), blind to the autocorrelation, ≈ 0.74.
    """
    from scipy.signal import lfilter

    phi, mu, t, reps = 0.3, 0.1, 250, 200
    true = mu * math.sqrt(1 - phi**2)  # mean / marginal std of a unit-innovation AR(1)
    rng = np.random.default_rng(1)
    block_hits = iid_hits = 0
    for r in range(reps):
        x = lfilter([1.0], [1.0, -phi], rng.normal(0, 1, t + 50))[50:] + mu
        ci = m.sharpe_confidence_interval(x, 1, level=0.9, samples=600, seed=r)
        block_hits += ci["low"] <= true <= ci["high"]
        iid = m.sharpe_confidence_interval(x, 1, level=0.9, samples=600, seed=r, mean_block=1)
        iid_hits += iid["low"] <= true <= iid["high"]
    coverage, iid_coverage = block_hits / reps, iid_hits / reps
    assert 0.78 <= coverage <= 0.96, (
        coverage
    )  # 90 % nominal, ±3 binomial s.e. and the known small undercoverage
    assert coverage > iid_coverage + 0.03, (coverage, iid_coverage)


def test_uniqueness_weights_by_hand() -> None:
    # Instrument A: 3 rows, horizon 2, on bars 0..4 → label windows {1,2}, {2,3}, {3,4}.
    # Concurrency: bar 1: 1, bar 2: 2, bar 3: 2, bar 4: 1 → uniqueness (1 + ½)/2, (½ + ½)/2, (½ + 1)/2.
    # Instrument B: one row alone (window {1,2}) → 1: another instrument's label is not an overlap.
    stamps = pd.date_range(T0, periods=5, freq="5min")
    frame = pd.DataFrame(
        {
            "timestamp": [stamps[0], stamps[1], stamps[2], stamps[0]],
            "broker": "binance",
            "symbol": ["A", "A", "A", "B"],
            LABEL_END: [stamps[2], stamps[3], stamps[4], stamps[2]],
        }
    )
    np.testing.assert_allclose(average_uniqueness(frame), [0.75, 0.5, 0.75, 1.0])
    weights = uniqueness_weights(frame)
    np.testing.assert_allclose(weights, np.array([0.75, 0.5, 0.75, 1.0]) / 0.75)
    assert weights.sum() == pytest.approx(len(frame))
    # labels that do not overlap (horizon 1) are each fully unique
    single = frame.assign(**{LABEL_END: [stamps[1], stamps[2], stamps[3], stamps[1]]})
    np.testing.assert_allclose(average_uniqueness(single), 1.0)


def test_uniqueness_of_long_overlapping_labels_is_about_one_over_horizon() -> None:
    frame = label_frame(bars({"A": "binance"}, n=2000), horizon=36, threshold_bps=5)
    unique = average_uniqueness(frame)
    # interior rows overlap 36 labels on each of their 36 bars
    assert np.median(unique) == pytest.approx(1 / 36, rel=1e-9)


def test_information_coefficient_and_profit_factor() -> None:
    score = np.arange(10.0)
    ic, rank_ic = m.information_coefficient(score, score**3)
    assert rank_ic == pytest.approx(1.0) and 0.9 < ic < 1.0
    assert m.profit_factor(np.array([0.02, -0.01, 0.01])) == pytest.approx(3.0)
    assert m.profit_factor(np.array([0.02])) is None


def test_null_sharpe_bound_shrinks_with_a_longer_window() -> None:
    assert m.sharpe_null_bound(10, 365) == pytest.approx(4 * math.sqrt(36.5))
    assert m.sharpe_null_bound(40, 365) < m.sharpe_null_bound(10, 365)


# ----------------------------------------------------------------------------------------- gates


GOOD = {
    "sharpe": 3.0,
    "max_drawdown": 0.05,
    "win_rate": 0.6,
    "n_trades": 150,
    "profit_factor": 1.4,
    "expectancy": 0.001,
}
DSR = {"dsr": 0.97, "n_trials": 6.0}
ROOMY = {"rows": 9000, "horizon": 36, "max_bets": 250}


def test_every_gate_must_pass() -> None:
    assert decide(evaluate_gates(GOOD, GateParams(), dsr=DSR, capacity=ROOMY))
    assert verdict(evaluate_gates(GOOD, GateParams(), dsr=DSR, capacity=ROOMY)) == "pass"
    for key, bad in (("sharpe", 2.0), ("max_drawdown", 0.15), ("win_rate", 0.55), ("n_trades", 99)):
        results = evaluate_gates({**GOOD, key: bad}, GateParams(), dsr=DSR, capacity=ROOMY)
        assert not decide(results) and verdict(results) == "fail"
        assert [r["name"] for r in results if not r["passed"]] == [key if key != "n_trades" else "trades"]
    # the deflated Sharpe is a gate: 0.94 < 0.95 fails, and without a DSR there is no promotion
    low = evaluate_gates(GOOD, GateParams(), dsr={"dsr": 0.94, "n_trials": 40.0}, capacity=ROOMY)
    assert [r["name"] for r in low if not r["passed"]] == ["dsr"]
    assert "best of 40 unskilled trials" in low[-1]["detail"]
    assert not decide(evaluate_gates(GOOD, GateParams(), capacity=ROOMY))


def test_a_window_too_short_for_min_trades_is_insufficient_evidence_with_the_arithmetic() -> None:
    # the hourly EURUSD case: 942 test rows / 36-bar bets = 26 bets at most < 100
    tight = {"rows": 942, "horizon": 36, "max_bets": 942 // 36}
    results = evaluate_gates({**GOOD, "n_trades": 24}, GateParams(), dsr=DSR, capacity=tight)
    trades = next(r for r in results if r["name"] == "trades")
    assert trades["verdict"] == "insufficient_evidence" and not trades["passed"]
    assert (
        "942 test rows / 36-bar bets = at most 26" in trades["detail"]
        and "min_trades 100" in trades["detail"]
    )
    assert verdict(results) == "insufficient_evidence" and not decide(results)
    assert any("insufficient evidence" in f for f in failures(results))
    # with room for 100 bets, 24 trades is a plain fail
    assert verdict(evaluate_gates({**GOOD, "n_trades": 24}, GateParams(), dsr=DSR, capacity=ROOMY)) == "fail"


def test_win_rate_is_reported_with_profit_factor_and_expectancy() -> None:
    # wins 60 % of its trades and still loses money: the gate passes, the detail says what it is
    losing = {**GOOD, "profit_factor": 0.8, "expectancy": -0.0004}
    win = next(r for r in evaluate_gates(losing, GateParams(), dsr=DSR) if r["name"] == "win_rate")
    assert win["passed"] and win["profit_factor"] == 0.8 and win["expectancy"] == -0.0004
    assert "profit factor 0.80" in win["detail"] and "expectancy -0.04%" in win["detail"]
    assert "loses more than it wins" in win["detail"]


def test_champion_regression_gate() -> None:
    gates = GateParams(max_regression=0.1)
    kw = {"dsr": DSR, "capacity": ROOMY}
    assert decide(evaluate_gates(GOOD, gates, {"version": "1", "sharpe": 3.3}, **kw))  # 3.0 ≥ 2.97
    assert not decide(evaluate_gates(GOOD, gates, {"version": "1", "sharpe": 3.4}, **kw))  # 3.0 < 3.06
    # compared on the same (last) window: the candidate's Sharpe there, not the pooled one
    same = {"version": "1", "sharpe": 3.3, "candidate_sharpe": 2.9}
    assert not decide(evaluate_gates(GOOD, gates, same, **kw))  # 2.9 < 2.97
    assert required_vs_champion(-1.0, 0.1) == pytest.approx(-1.1)
    skipped = evaluate_gates(GOOD, gates, {"version": "1", "skipped": "other features"}, **kw)
    assert decide(skipped) and skipped[-1]["verdict"] == "skipped"
