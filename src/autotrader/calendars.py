"""Market calendars per broker: when bars exist, and how many trading periods make a year.

One place decides that Binance trades 24/7, Oanda FX 24/5 and IBKR equities NYSE sessions, so the
simulator, the completeness checks, the freshness check and the Sharpe annualisation all agree.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import numpy as np
import pandas as pd
from exchange_calendars.exchange_calendar import ExchangeCalendar, HolidayCalendar
from pandas.tseries.holiday import Holiday

FX_CALENDAR = "FX24/5"


class FXCalendar(ExchangeCalendar):
    """Spot FX: the week opens Sunday 17:00 New York and closes Friday 17:00 New York (DST-aware).

    exchange_calendars' own "24/5" runs Monday to Friday midnight UTC, which calls real Sunday-evening
    bars out-of-session and Friday's last hours missing; this matches what FX brokers print.
    """

    name = FX_CALENDAR
    tz = ZoneInfo("America/New_York")
    open_times = ((None, datetime.time(17)),)
    close_times = ((None, datetime.time(17)),)
    weekmask = "1111100"

    @property
    def open_offset(self) -> int:
        return -1

    @property
    def regular_holidays(self) -> HolidayCalendar:
        """Christmas and New Year's Day: interbank liquidity is gone and FX brokers print no bars."""
        return HolidayCalendar(
            [Holiday("Christmas", month=12, day=25), Holiday("New Year's Day", month=1, day=1)]
        )


if FX_CALENDAR not in xcals.get_calendar_names():
    xcals.register_calendar_type(FX_CALENDAR, FXCalendar)


@dataclass(frozen=True)
class BrokerProfile:
    calendar: str  # exchange_calendars name
    asset_class: str
    trading_days_per_year: int  # for annualising daily returns


BROKER_PROFILES: dict[str, BrokerProfile] = {
    "binance": BrokerProfile(calendar="24/7", asset_class="crypto", trading_days_per_year=365),
    "oanda": BrokerProfile(calendar=FX_CALENDAR, asset_class="fx", trading_days_per_year=260),
    "ibkr": BrokerProfile(calendar="XNYS", asset_class="equity", trading_days_per_year=252),
}


def profile(broker: str) -> BrokerProfile:
    try:
        return BROKER_PROFILES[broker]
    except KeyError as exc:
        raise ValueError(f"unknown broker {broker!r}; known: {', '.join(BROKER_PROFILES)}") from exc


@lru_cache(maxsize=8)
def calendar(broker: str) -> xcals.ExchangeCalendar:
    return xcals.get_calendar(profile(broker).calendar, start="2015-01-01")


def schedule(broker: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Sessions (open/close, UTC) that overlap [start, end)."""
    cal = calendar(broker)
    sched = cal.schedule
    mask = (sched["close"] > start) & (sched["open"] < end)
    return sched.loc[mask, ["open", "close"]]


def bar_index(
    broker: str, start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta
) -> pd.DatetimeIndex:
    """Open times of every bar the market should print in [start, end), vectorised over sessions."""
    sched = schedule(broker, start, end)
    if sched.empty:
        return pd.DatetimeIndex([], tz="UTC", name="timestamp")
    opens = sched["open"].to_numpy("datetime64[ns]")
    closes = sched["close"].to_numpy("datetime64[ns]")
    step = np.timedelta64(int(interval.value), "ns")
    counts = ((closes - opens) // step).astype(np.int64)
    starts = np.repeat(opens, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    stamps = starts + offsets * step
    idx = pd.DatetimeIndex(stamps, name="timestamp").tz_localize("UTC")
    return idx[(idx >= start) & (idx < end)]


def expected_bars_per_session(
    broker: str, start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta
) -> pd.Series:
    """Expected bar count per session date (UTC date of the session label), for completeness checks."""
    idx = bar_index(broker, start, end, interval)
    sched = schedule(broker, start, end)
    labels = pd.Series(sched.index, index=sched["open"]).sort_index()
    session = labels.reindex(idx, method="ffill")
    return pd.Series(1, index=session.to_numpy()).groupby(level=0).sum()


def last_expected_bar(broker: str, at: pd.Timestamp, interval: pd.Timedelta) -> pd.Timestamp | None:
    """The open time of the newest bar that should be complete by ``at`` (calendar-aware freshness)."""
    lookback = pd.Timedelta(days=10)
    idx = bar_index(broker, at - lookback, at, interval)
    complete = idx[idx + interval <= at]
    return complete[-1] if len(complete) else None


def periods_per_year(broker: str) -> int:
    """Trading days a year for this broker's asset class: 365 crypto, 260 FX, 252 NYSE."""
    return profile(broker).trading_days_per_year
