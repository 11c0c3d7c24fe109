"""Broker calendars: the simulator, completeness checks, freshness and annualisation share these facts."""

from __future__ import annotations

import pandas as pd

from autotrader import calendars

FIVE = pd.Timedelta("5min")


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_crypto_prints_every_interval() -> None:
    idx = calendars.bar_index("binance", ts("2026-11-21"), ts("2026-11-22"), FIVE)  # a Saturday
    assert len(idx) == 288 and idx[0] == ts("2026-11-21") and idx[-1] == ts("2026-11-21 23:55")


def test_fx_week_runs_sunday_to_friday_five_pm_new_york() -> None:
    idx = calendars.bar_index("oanda", ts("2026-11-20"), ts("2026-11-24"), pd.Timedelta("1h"))
    saturday = idx[idx.dayofweek == 5]
    assert len(saturday) == 0
    assert idx[idx.dayofweek == 4][-1] == ts("2026-11-20 21:00")  # Friday 16:00-17:00 New York (EST)
    assert idx[idx.dayofweek == 6][0] == ts("2026-11-22 22:00")  # Sunday 17:00 New York
    summer = calendars.bar_index("oanda", ts("2026-07-17"), ts("2026-07-20"), pd.Timedelta("1h"))
    assert summer[summer.dayofweek == 6][0] == ts("2026-07-19 21:00")  # EDT shifts the open by an hour


def test_nyse_sessions_skip_nights_weekends_and_holidays() -> None:
    idx = calendars.bar_index("ibkr", ts("2026-11-25"), ts("2026-11-28"), FIVE)
    days = sorted({t.date().isoformat() for t in idx})
    assert days == ["2026-11-25", "2026-11-27"]  # Thanksgiving closed
    day = idx[idx.date == pd.Timestamp("2026-11-25").date()]
    assert day[0] == ts("2026-11-25 14:30") and day[-1] == ts("2026-11-25 20:55") and len(day) == 78
    half = idx[idx.date == pd.Timestamp("2026-11-27").date()]
    assert half[-1] == ts("2026-11-27 17:55")  # the day after Thanksgiving closes at 13:00 New York


def test_expected_bars_per_session_matches_the_index() -> None:
    counts = calendars.expected_bars_per_session("ibkr", ts("2026-11-23"), ts("2026-11-28"), FIVE)
    assert counts.sum() == len(calendars.bar_index("ibkr", ts("2026-11-23"), ts("2026-11-28"), FIVE))
    assert counts.max() == 78


def test_last_expected_bar_is_calendar_aware() -> None:
    saturday_noon = ts("2026-11-21 12:00")
    assert calendars.last_expected_bar("oanda", saturday_noon, FIVE) == ts("2026-11-20 21:55")
    assert calendars.last_expected_bar("ibkr", ts("2026-11-24 03:00"), FIVE) == ts("2026-11-23 20:55")
    assert calendars.last_expected_bar("binance", saturday_noon, FIVE) == ts("2026-11-21 11:55")


def test_annualisation_differs_by_asset_class() -> None:
    assert calendars.periods_per_year("binance") == 365
    assert calendars.periods_per_year("oanda") == 260
    assert calendars.periods_per_year("ibkr") == 252


def test_fx_is_closed_on_christmas_and_new_year() -> None:
    idx = calendars.bar_index("oanda", ts("2017-12-24"), ts("2018-01-03"), pd.Timedelta("1h"))
    sessions = calendars.expected_bars_per_session(
        "oanda", ts("2017-12-24"), ts("2018-01-03"), pd.Timedelta("1h")
    )
    assert (
        pd.Timestamp("2017-12-25") not in sessions.index and pd.Timestamp("2018-01-01") not in sessions.index
    )
    assert not ((idx > ts("2017-12-24 22:00")) & (idx < ts("2017-12-25 22:00"))).any()


def test_error_messages_keep_square_brackets(capsys) -> None:
    from autotrader.console import run_guarded
    from autotrader.errors import ValidationFailed

    def fail() -> None:
        raise ValidationFailed("timestamp dtype datetime64[ns, UTC+05:00] is not UTC")

    assert run_guarded(fail) == 1
    assert "datetime64[ns, UTC+05:00]" in capsys.readouterr().err
