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
from autotrader.modeling.gates import decide, evaluate_gates, required_vs_champion
from autotrader.modeling.labels import BAR_RETURN, FWD_RETURN, LABEL_END, label_frame, ternary
from autotrader.modeling.splits import _ns, embargo_start, purged_folds, split_train_valid_test, time_grid
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
    result = bt.run_instrument(frame, costs, hold=2)
    rate = 10e-4 + 0.5 * 4e-4  # fee + half the default spread (no quoted spread)
    assert result.bars["position"].tolist() == [0, 1, 1, 0, 0]
    np.testing.assert_allclose(result.bars["cost"], [0, rate, rate, 0, 0])
    np.testing.assert_allclose(result.bars["net"], [0, 0.01 - rate, 0.02 - rate, 0, 0])
    assert len(result.trades) == 1
    assert result.trades["ret"].iloc[0] == pytest.approx((1 + 0.01 - rate) * (1 + 0.02 - rate) - 1)
    # a quoted spread replaces the default: half of spread/close
    quoted = one_instrument([0.0, 0.01, 0.0], [1, 0, 0], spread=np.array([0.2, 0.2, 0.2]))
    res = bt.run_instrument(quoted, costs, hold=1)
    assert res.bars["cost"].iloc[1] == pytest.approx(2 * 10e-4 + 0.5 * 0.2 / 100 + 0.5 * 0.2 / 101)


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
    result = bt.run(frame, costs, hold=1)
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
    inst = bt.run(frame, CostParams(), hold=20).instruments["binance/X"]
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


def test_every_gate_must_pass() -> None:
    good = {"sharpe": 3.0, "max_drawdown": 0.05, "win_rate": 0.6, "n_trades": 150}
    assert decide(evaluate_gates(good, GateParams()))
    for key, bad in (("sharpe", 2.0), ("max_drawdown", 0.15), ("win_rate", 0.55), ("n_trades", 99)):
        results = evaluate_gates({**good, key: bad}, GateParams())
        assert not decide(results)
        assert [r["name"] for r in results if not r["passed"]] == [key if key != "n_trades" else "trades"]


def test_champion_regression_gate() -> None:
    good = {"sharpe": 3.0, "max_drawdown": 0.05, "win_rate": 0.6, "n_trades": 150}
    gates = GateParams(max_regression=0.1)
    assert decide(evaluate_gates(good, gates, {"version": "1", "sharpe": 3.3}))  # 3.0 ≥ 2.97
    assert not decide(evaluate_gates(good, gates, {"version": "1", "sharpe": 3.4}))  # 3.0 < 3.06
    assert required_vs_champion(-1.0, 0.1) == pytest.approx(-1.1)
    skipped = evaluate_gates(good, gates, {"version": "1", "skipped": "other features"})
    assert decide(skipped) and skipped[-1]["verdict"] == "skipped"
