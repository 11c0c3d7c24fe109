"""Vectorised backtest of the model's signals on the test window, per instrument and for the portfolio.

Holding rule (no look-ahead): each prediction is a bet on the next ``hold`` bars, ``hold`` being the
label horizon ``train.horizon`` — exactly what the model was trained to predict. While flat, the
signal made at the close of bar ``t−1`` opens a position for bar ``t`` (``position_t = signal_{t−1}``
when it is long or short); the position is held for ``hold`` bars, after which the signal of its last
bar may open the next bet at once (same or other direction). A bet still open after the last test
bar is closed at that bar's close.

Fills (``costs.fill``): ``next_open`` (default) — an order decided at the close of bar ``t−1`` fills
at the *open* of bar ``t``, so the gap ``close_{t−1} → open_t`` (a weekend, an overnight session, a
jump) belongs to the position held *before* the change. ``close`` — it fills at the close of bar
``t−1`` (the optimistic same-bar convention). Each bar is split into two legs, the gap
``open_t / close_{t−1} − 1`` and the intrabar move ``close_t / open_t − 1``; under ``next_open`` the
gap leg carries the previous position, under ``close`` both legs carry the new one. A bar without an
``open`` is treated as opening at the previous close (no gap).

Costs: only when the position actually changes. Leaving a position pays ``|old|`` units and
entering one ``|new|`` units of ``costs.fees_bps[broker]`` + half the relative spread ``spread /
close`` of the bar traded at (``costs.default_spread_bps[broker]`` when it has none): a flip pays
twice, a bet rolled into another in the same direction pays nothing, and turnover counts the units
really traded (including closing the last position at the end of the window).

Trades: a trade is one bet (one decision of the model), from its fill to its exit fill; its return
compounds its legs' net returns, entry and exit costs included, so the trades compound exactly to
the equity curve. Rolled bets are separate trades with no cost between them.

Daily returns: per instrument, bars are grouped by their exchange session (``autotrader.calendars``:
UTC day for crypto, the 17:00 New-York FX day, the NYSE session) and annualised with that asset
class's periods per year (365 / 260 / 252). Portfolio: equal capital per instrument, rebalanced every
bar (its bar return is the mean of the instruments' bar returns, 0 for an instrument without a bar),
grouped and annualised on the calendar of what it holds: the session calendar of its widest market
(crypto → UTC days at 365; FX without crypto → the 17:00 New-York day at 260; equities only → NYSE
sessions at 252). A portfolio of one instrument is therefore exactly that instrument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autotrader import calendars
from autotrader.modeling import KEYS
from autotrader.modeling import metrics as m
from autotrader.modeling.labels import BAR_RETURN
from autotrader.params import CostParams

SIGNAL = "signal"


def cost_rates(frame: pd.DataFrame, broker: str, costs: CostParams) -> np.ndarray:
    """Cost of changing one unit of position at each bar (fraction of notional)."""
    fee = costs.fees_bps.get(broker, 0.0) * 1e-4
    fallback = costs.default_spread_bps.get(broker, 0.0) * 1e-4
    close = frame["close"].to_numpy("float64")
    spread = frame["spread"].to_numpy("float64") if "spread" in frame else np.full(len(frame), np.nan)
    relative = spread / close
    relative = np.where(np.isfinite(relative) & (relative >= 0), relative, fallback)
    return fee + 0.5 * relative


def session_dates(broker: str, timestamps: pd.Series) -> pd.DatetimeIndex:
    """The exchange session (as a date, tz-naive) each bar belongs to; UTC date outside the calendar."""
    ts = pd.DatetimeIndex(timestamps)
    utc_day = ts.tz_convert("UTC").tz_localize(None).normalize()
    if len(ts) == 0:
        return utc_day
    sched = calendars.schedule(broker, ts.min() - pd.Timedelta(days=4), ts.max() + pd.Timedelta(days=1))
    if sched.empty:
        return utc_day
    opens = pd.DatetimeIndex(sched["open"]).asi8
    closes = pd.DatetimeIndex(sched["close"]).asi8
    labels = pd.DatetimeIndex(sched.index).tz_localize(None).normalize()
    pos = np.searchsorted(opens, ts.asi8, side="right") - 1
    inside = (pos >= 0) & (ts.asi8 < closes[np.clip(pos, 0, None)] + pd.Timedelta(days=1).value)
    out = np.where(inside, labels[np.clip(pos, 0, None)].asi8, utc_day.asi8)
    return pd.DatetimeIndex(out)


def daily_returns(returns: np.ndarray, days: pd.DatetimeIndex) -> pd.Series:
    """Compound bar returns within each day."""
    growth = pd.Series(np.log1p(returns), index=days)
    return np.expm1(growth.groupby(level=0, sort=True).sum())


@dataclass
class InstrumentResult:
    broker: str
    symbol: str
    bars: pd.DataFrame  # timestamp, signal, position, bar_return, cost, gross, net
    trades: pd.DataFrame  # broker, symbol, entry, exit, direction, bars, ret
    daily: pd.Series
    daily_gross: pd.Series
    periods_per_year: int
    turnover: float  # units of position traded in the window


@dataclass
class BacktestResult:
    instruments: dict[str, InstrumentResult]
    portfolio_bars: pd.Series  # timestamp → net bar return
    portfolio_daily: pd.Series
    portfolio_daily_gross: pd.Series
    portfolio_periods_per_year: int
    trades: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)


def bets(signal: np.ndarray, hold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions and the (start, end) bar of every bet: ``signal_{t−1}`` acted on at ``t``, held ``hold`` bars."""
    signal = np.asarray(signal, dtype="int64")
    n = len(signal)
    hold = max(int(hold), 1)
    position = np.zeros(n, dtype="int64")
    starts: list[int] = []
    ends: list[int] = []
    t = 1
    while t < n:  # path-dependent; steps a whole bet at a time, bar by bar only while flat
        direction = int(signal[t - 1])
        if direction == 0:
            t += 1
            continue
        last = min(t + hold - 1, n - 1)
        position[t : last + 1] = direction
        starts.append(t)
        ends.append(last)
        t = last + 1
    return position, np.asarray(starts, dtype="int64"), np.asarray(ends, dtype="int64")


FILLS: tuple[str, ...] = ("next_open", "close")


def legs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(gap, intrabar) simple returns of each bar: ``open/close_prev − 1`` and ``close/open − 1``.

    ``bar_return`` (close-to-close, computed before rows were dropped) gives the previous close, so
    the first test bar has its gap too. A missing or non-positive open means no gap.
    """
    bar = np.nan_to_num(frame[BAR_RETURN].to_numpy("float64"), nan=0.0)
    close = frame["close"].to_numpy("float64")
    opens = frame["open"].to_numpy("float64") if "open" in frame else np.full(len(frame), np.nan)
    ok = np.isfinite(opens) & (opens > 0) & np.isfinite(close) & (close > 0)
    safe_open = np.where(ok, opens, 1.0)
    gap = np.where(ok, (1.0 + bar) * safe_open / np.where(ok, close, 1.0) - 1.0, 0.0)
    intra = np.where(ok, close / safe_open - 1.0, bar)
    return gap, intra


def leg_costs(position: np.ndarray, rates: np.ndarray, fill: str) -> np.ndarray:
    """Cost of each of the ``2n`` legs: paid only where the position changes (and at the very end).

    Leg ``2t`` is bar ``t``'s gap, leg ``2t+1`` its intrabar move. Under ``next_open`` a change at
    bar ``t`` fills at its open: the exit part is booked on the gap leg, the entry part on the
    intrabar leg, both at bar ``t``'s rate. Under ``close`` it fills at the close of bar ``t−1``: exit
    on leg ``2t−1``, entry on leg ``2t``, at bar ``t−1``'s rate. Whatever is open at the end is
    closed at the last close (last leg).
    """
    n = len(position)
    cost = np.zeros(2 * n)
    previous = np.concatenate([[0], position[:-1]])
    changed = np.flatnonzero(position != previous)
    if fill == "next_open":
        np.add.at(cost, 2 * changed, np.abs(previous[changed]) * rates[changed])
        np.add.at(cost, 2 * changed + 1, np.abs(position[changed]) * rates[changed])
    else:
        changed = changed[changed > 0]  # position[0] is always flat (no signal before the window)
        np.add.at(cost, 2 * changed - 1, np.abs(previous[changed]) * rates[changed - 1])
        np.add.at(cost, 2 * changed, np.abs(position[changed]) * rates[changed - 1])
    if n:
        cost[-1] += abs(position[-1]) * rates[-1]
    return cost


def run_instrument(
    frame: pd.DataFrame, costs: CostParams, hold: int = 1, fill: str | None = None
) -> InstrumentResult:
    """Backtest one instrument's rows (sorted by time) carrying a ``signal`` column."""
    fill = fill or costs.fill
    if fill not in FILLS:
        raise ValueError(f"costs.fill {fill!r} is not one of {', '.join(FILLS)}")
    broker, symbol = str(frame["broker"].iloc[0]), str(frame["symbol"].iloc[0])
    n = len(frame)
    signal = frame[SIGNAL].to_numpy("int64")
    position, starts, ends = bets(signal, hold)
    returns = np.nan_to_num(frame[BAR_RETURN].to_numpy("float64"), nan=0.0)
    rates = cost_rates(frame, broker, costs)
    gap, intra = legs(frame)
    previous = np.concatenate([[0], position[:-1]])
    gap_position = previous if fill == "next_open" else position
    leg_position = np.empty(2 * n)
    leg_position[0::2], leg_position[1::2] = gap_position, position
    leg_return = np.empty(2 * n)
    leg_return[0::2], leg_return[1::2] = gap, intra
    leg_gross = leg_position * leg_return
    leg_cost = leg_costs(position, rates, fill)
    leg_net = leg_gross - leg_cost
    log_net = np.concatenate([[0.0], np.cumsum(np.log1p(leg_net))])
    gross = np.expm1(np.log1p(leg_gross).reshape(n, 2).sum(axis=1))
    net = np.expm1(np.log1p(leg_net).reshape(n, 2).sum(axis=1))
    cost = leg_cost.reshape(n, 2).sum(axis=1)
    # A bet's legs: from its fill to its exit fill (the gap leg of the bar after its last one under
    # next_open, if the window has that bar; the intrabar leg of its last bar under close).
    if fill == "next_open":
        first, last = 2 * starts + 1, np.minimum(2 * ends + 2, 2 * n - 1)
    else:
        first, last = 2 * starts, 2 * ends + 1
    timestamps = frame["timestamp"].reset_index(drop=True)
    trades = pd.DataFrame(
        {
            "broker": broker,
            "symbol": symbol,
            "entry": timestamps.iloc[starts].to_numpy(),
            "exit": timestamps.iloc[ends].to_numpy(),
            "direction": position[starts],
            "bars": ends - starts + 1,
            "ret": np.expm1(log_net[last + 1] - log_net[first]),
        }
    )
    days = session_dates(broker, timestamps)
    bars = pd.DataFrame(
        {
            "timestamp": timestamps,
            "signal": signal,
            "position": position,
            "bar_return": returns,
            "cost": cost,
            "gross": gross,
            "net": net,
        }
    )
    turnover = float(np.abs(np.diff(np.concatenate([[0], position, [0]]))).sum())
    return InstrumentResult(
        broker=broker,
        symbol=symbol,
        bars=bars,
        trades=trades,
        daily=daily_returns(net, days),
        daily_gross=daily_returns(gross, days),
        periods_per_year=calendars.periods_per_year(broker),
        turnover=turnover,
    )


def summarize(
    daily: pd.Series,
    daily_gross: pd.Series,
    bar_returns: np.ndarray,
    trades: pd.DataFrame,
    periods_per_year: int,
    turnover: float,
    exposure: float,
) -> dict[str, Any]:
    """The metrics of one backtest unit (an instrument or the portfolio)."""
    n_days = len(daily)
    return {
        "sharpe": m.sharpe_ratio(daily, periods_per_year),
        "sharpe_gross": m.sharpe_ratio(daily_gross, periods_per_year),
        "max_drawdown": m.max_drawdown(bar_returns),
        "win_rate": m.win_rate(trades["ret"]),
        "n_trades": len(trades),
        "profit_factor": m.profit_factor(trades["ret"]),
        # expectancy: the mean net return of a trade — a high win rate with a negative expectancy is a
        # strategy that wins often and loses more.
        "expectancy": float(trades["ret"].mean()) if len(trades) else 0.0,
        "total_return": float(np.prod(1.0 + np.asarray(bar_returns)) - 1.0),
        "turnover_per_day": turnover / n_days if n_days else 0.0,
        "exposure": exposure,
        "n_days": n_days,
        "periods_per_year": periods_per_year,
        "sharpe_null_bound": m.sharpe_null_bound(n_days, periods_per_year),
    }


def portfolio_calendar(results: dict[str, InstrumentResult]) -> str:
    """The broker whose session calendar the portfolio is grouped and annualised on: its widest market."""
    return max((r.periods_per_year, -i, r.broker) for i, r in enumerate(results.values()))[2]


def run(frame: pd.DataFrame, costs: CostParams, hold: int = 1, fill: str | None = None) -> BacktestResult:
    """Backtest every instrument in ``frame`` (test rows with ``signal``) and their equal-weight portfolio."""
    ordered = frame.sort_values([*KEYS, "timestamp"], kind="stable")
    results: dict[str, InstrumentResult] = {}
    for (broker, symbol), part in ordered.groupby(list(KEYS), sort=True):
        results[f"{broker}/{symbol}"] = run_instrument(part.reset_index(drop=True), costs, hold, fill)
    if not results:
        raise ValueError("nothing to backtest: the frame has no rows")

    n = len(results)
    net = pd.concat(
        {key: r.bars.set_index("timestamp")["net"] for key, r in results.items()}, axis=1
    ).sort_index()
    gross = pd.concat(
        {key: r.bars.set_index("timestamp")["gross"] for key, r in results.items()}, axis=1
    ).sort_index()
    portfolio = net.fillna(0.0).sum(axis=1) / n
    portfolio_gross = gross.fillna(0.0).sum(axis=1) / n
    calendar_broker = portfolio_calendar(results)
    days = session_dates(calendar_broker, pd.Series(portfolio.index))
    ppy = calendars.periods_per_year(calendar_broker)
    non_empty = [r.trades for r in results.values() if len(r.trades)]
    trades = pd.concat(non_empty, ignore_index=True) if non_empty else next(iter(results.values())).trades
    out = BacktestResult(
        instruments=results,
        portfolio_bars=portfolio,
        portfolio_daily=daily_returns(portfolio.to_numpy(), days),
        portfolio_daily_gross=daily_returns(portfolio_gross.to_numpy(), days),
        portfolio_periods_per_year=ppy,
        trades=trades,
    )
    instrument_metrics = {}
    for key, r in results.items():
        instrument_metrics[key] = summarize(
            r.daily,
            r.daily_gross,
            r.bars["net"].to_numpy(),
            r.trades,
            r.periods_per_year,
            r.turnover,
            float((r.bars["position"] != 0).mean()),
        )
    exposure = float(np.mean([v["exposure"] for v in instrument_metrics.values()]))
    out.metrics = {
        "portfolio": summarize(
            out.portfolio_daily,
            out.portfolio_daily_gross,
            portfolio.to_numpy(),
            trades,
            ppy,
            sum(r.turnover for r in results.values()) / n,
            exposure,
        ),
        "instruments": instrument_metrics,
    }
    return out
