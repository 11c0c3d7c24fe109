"""Interactive Brokers through a double at the ``ib_async`` boundary that hands back real ``BarData``.

The double answers ``reqHistoricalData`` like TWS does for ``formatDate=2``: bars opening in
[endDateTime − duration, endDateTime), UTC datetimes, regular trading hours only. Request errors are
raised as ``ib_async.RequestError``, as the real ``IB`` does once ``RaiseRequestErrors`` is set.
"""

from __future__ import annotations

import itertools
import re

import pandas as pd
import pytest
from ib_async import BarData, RequestError, Stock

from autotrader.errors import ConfigError, SourceError
from autotrader.params import Instrument, LiveParams
from autotrader.sources import ibkr as ibkr_module
from autotrader.sources.ibkr import IbkrSource
from autotrader.sources.live import LiveSource
from autotrader.sources.sim import SimulatedMarket

SPY = Instrument(broker="ibkr", symbol="SPY")
START = pd.Timestamp("2026-11-02", tz="UTC")
END = pd.Timestamp("2026-11-14", tz="UTC")  # two trading weeks: more than one "1 W" request
DURATION = re.compile(r"^(\d+) ([SDWMY])$")
UNITS = {
    "S": pd.Timedelta(seconds=1),
    "D": pd.Timedelta(days=1),
    "W": pd.Timedelta(weeks=1),
    "M": pd.Timedelta(days=31),
}


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    """What the exchange printed (the simulator on the XNYS calendar), a week either side of the window."""
    return SimulatedMarket(seed=11).fetch(
        SPY, START - pd.Timedelta(days=7), END + pd.Timedelta(days=7), pd.Timedelta("5min")
    )


class FakeIB:
    """The ``IB`` methods IbkrSource calls; ``errors`` are raised by the next requests, in order."""

    def __init__(
        self, market: pd.DataFrame, connect_failures: int = 0, errors: list[Exception] | None = None
    ) -> None:
        self.market = market
        self.connect_failures = connect_failures
        self.errors = list(errors or [])
        self.RaiseRequestErrors = False
        self.connected: tuple | None = None
        self.requests: list[dict] = []
        self.disconnects = 0

    def connect(self, host: str, port: int, clientId: int, timeout: float, readonly: bool) -> None:
        if self.connect_failures:
            self.connect_failures -= 1
            raise ConnectionRefusedError(111, "Connect call failed")
        self.connected = (host, port, clientId, readonly)

    def disconnect(self) -> None:
        self.disconnects += 1
        self.connected = None

    def reqHistoricalData(
        self, contract, endDateTime, durationStr, barSizeSetting, whatToShow, useRTH, formatDate, timeout
    ):
        assert self.connected is not None, "request before connect"
        self.requests.append(
            {
                "contract": contract,
                "end": endDateTime,
                "duration": durationStr,
                "bar": barSizeSetting,
                "what": whatToShow,
                "rth": useRTH,
                "fmt": formatDate,
            }
        )
        if self.errors:
            raise self.errors.pop(0)
        count, unit = DURATION.match(durationStr).groups()
        end = pd.Timestamp(endDateTime)
        begin = end - int(count) * UNITS[unit]
        ts = self.market["timestamp"]
        rows = self.market[(ts >= begin) & (ts < end) & (self.market["symbol"] == contract.symbol)]
        return [
            BarData(
                date=r.timestamp.to_pydatetime(),
                open=r.open,
                high=r.high,
                low=r.low,
                close=r.close,
                volume=r.volume,
                average=r.close,
                barCount=10,
            )
            for r in rows.itertuples()
        ]


def live(attempts: int = 3) -> LiveParams:
    return LiveParams(
        ibkr_host="127.0.0.1", ibkr_port=4002, ibkr_client_id=17, max_attempts=attempts, backoff_s=0.001
    )


def test_chunks_are_stitched_into_rth_bars(market) -> None:
    fake = FakeIB(market)
    sleeps: list[float] = []
    bars = LiveSource(live(), ib_factory=lambda: fake, sleep=sleeps.append).fetch(
        SPY, START, END, pd.Timedelta("5min")
    )

    expected = market[(market["timestamp"] >= START) & (market["timestamp"] < END)].reset_index(drop=True)
    assert len(bars) == len(expected) == 10 * 78  # ten NYSE sessions of 6.5 h
    assert bars["timestamp"].tolist() == expected["timestamp"].tolist()
    for col in ("open", "high", "low", "close", "volume"):
        assert bars[col].tolist() == expected[col].tolist(), col
    assert bars["spread"].isna().all()
    assert str(bars["timestamp"].dtype) == "datetime64[ns, UTC]"

    assert len(fake.requests) == 2
    first = fake.requests[0]
    assert isinstance(first["contract"], Stock)
    assert (first["contract"].symbol, first["contract"].exchange, first["contract"].currency) == (
        "SPY",
        "SMART",
        "USD",
    )
    assert (first["what"], first["rth"], first["fmt"], first["bar"], first["duration"]) == (
        "TRADES",
        True,
        2,
        "5 mins",
        "1 W",
    )
    assert pd.Timestamp(first["end"]) == END
    assert fake.RaiseRequestErrors is True and fake.disconnects == 1
    assert sleeps == [pytest.approx(ibkr_module.REQUEST_GAP_S, abs=0.05)]  # paced between the two requests


def test_connect_is_retried_then_reported_with_the_address(market) -> None:
    fake = FakeIB(market, connect_failures=2)
    bars = IbkrSource(live(), ib_factory=lambda: fake, sleep=lambda _: None).fetch(
        SPY, START, END, pd.Timedelta("5min")
    )
    assert len(bars) == 780

    never = FakeIB(market, connect_failures=99)
    with pytest.raises(SourceError) as err:
        IbkrSource(live(), ib_factory=lambda: never, sleep=lambda _: None).fetch(
            SPY, START, END, pd.Timedelta("5min")
        )
    message = str(err.value)
    assert "ibkr SPY" in message and "127.0.0.1:4002" in message and "3 attempt" in message
    assert "ConnectionRefusedError" in message


def test_a_pacing_violation_is_retried(market) -> None:
    pacing = RequestError(
        5,
        162,
        "Historical Market Data Service error message:API historical data query cancelled: pacing violation",
    )
    fake = FakeIB(market, errors=[pacing])
    bars = IbkrSource(live(), ib_factory=lambda: fake, sleep=lambda _: None).fetch(
        SPY, START, END, pd.Timedelta("5min")
    )
    assert len(bars) == 780 and len(fake.requests) == 3


def test_no_data_is_an_empty_chunk_not_an_error(market) -> None:
    no_data = RequestError(
        5, 162, "Historical Market Data Service error message:HMDS query returned no data: SPY@SMART Trades"
    )
    fake = FakeIB(market, errors=[no_data])
    bars = IbkrSource(live(), ib_factory=lambda: fake, sleep=lambda _: None).fetch(
        SPY, START, END, pd.Timedelta("5min")
    )
    assert len(bars) == 5 * 78  # the first request (the later week) had no data; the earlier week is there


def test_an_unknown_contract_fails_at_once_and_disconnects(market) -> None:
    unknown = RequestError(5, 200, "No security definition has been found for the request")
    fake = FakeIB(market, errors=[unknown])
    with pytest.raises(SourceError, match=r"ibkr NOPE: .*IB error 200: No security definition"):
        IbkrSource(live(), ib_factory=lambda: fake, sleep=lambda _: None).fetch(
            Instrument(broker="ibkr", symbol="NOPE"), START, END, pd.Timedelta("5min")
        )
    assert len(fake.requests) == 1 and fake.disconnects == 1


def test_pacing_keeps_to_60_requests_in_10_minutes() -> None:
    now = [1000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    source = IbkrSource(live(), ib_factory=None, sleep=sleep, clock=lambda: now[0])
    stamps = []
    for _ in range(61):
        source._pace()
        stamps.append(now[0])
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= ibkr_module.REQUEST_GAP_S - 1e-9
    assert stamps[60] - stamps[0] >= ibkr_module.PACING_WINDOW_S - 1e-9


def test_an_interval_ib_does_not_have_is_a_config_error(market) -> None:
    with pytest.raises(ConfigError, match="7min"):
        IbkrSource(live(), ib_factory=lambda: FakeIB(market)).fetch(SPY, START, END, pd.Timedelta("7min"))
