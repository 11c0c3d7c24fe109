"""The broker HTTP client's deadlines against a local server that stalls or trickles (loopback only).

httpx's timeout is per read: a broker that trickles its answer a byte at a time never trips it. The
client gives each attempt a total deadline (``data.live.deadline_s``); these tests serve answers that
would take minutes (or never finish) and check that extract gives up at the deadline with an error
that says so, on every attempt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pandas as pd
import pytest

from autotrader.errors import SourceError
from autotrader.params import Instrument, LiveParams
from autotrader.sources.binance import BinanceSource
from autotrader.sources.http import JsonClient
from tests.stalling import StallingServer

GIVE_UP_S = 60  # a call still running after this is a hang: the test fails instead of waiting forever


def _timed(call) -> tuple[BaseException | None, float]:
    """Run ``call`` on a thread; (the exception it raised, seconds). Fails the test on a hang."""
    out: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            call()
        except BaseException as exc:  # handed back to the test
            out["exc"] = exc
        out["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GIVE_UP_S)
    assert not thread.is_alive(), f"still waiting after {GIVE_UP_S} s: no deadline fired"
    return out.get("exc"), float(out["seconds"])  # type: ignore[arg-type]


def _json_head(length: int) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()


@pytest.fixture
def trickling() -> Iterator[StallingServer]:
    body = b"[" + b" " * 100_000 + b"]"  # 100 kB a byte every 50 ms: ~80 minutes
    with StallingServer(_json_head(len(body)), body, interval=0.05) as broker:
        yield broker


def test_a_trickled_body_is_cut_at_the_deadline_on_every_attempt(trickling: StallingServer) -> None:
    client = JsonClient(
        "binance", trickling.url, timeout_s=5.0, deadline_s=1.0, max_attempts=2, backoff_s=0.001
    )
    with client:
        exc, seconds = _timed(lambda: client.get_json("/api/v3/klines", {}, symbol="BTCUSDT", parse=list))
    assert isinstance(exc, SourceError), exc
    message = str(exc)
    assert "failed after 2 attempt(s)" in message and "last status deadline" in message, message
    assert "deadline 1 s" in message and "data.live.deadline_s" in message, message
    assert trickling.connections == 2
    assert seconds >= 2 * 1.0  # each attempt ran to its deadline, not less


def test_the_live_source_passes_its_deadline_param(trickling: StallingServer) -> None:
    live = LiveParams(binance_url=trickling.url, timeout_s=5.0, deadline_s=0.5, max_attempts=1, backoff_s=0.0)
    source = BinanceSource(live)
    start = pd.Timestamp("2026-11-02", tz="UTC")
    exc, _ = _timed(
        lambda: source.fetch(
            Instrument(broker="binance", symbol="BTCUSDT"),
            start,
            start + pd.Timedelta(hours=1),
            pd.Timedelta(minutes=1),
        )
    )
    assert isinstance(exc, SourceError) and "binance BTCUSDT" in str(exc) and "deadline 0.5 s" in str(exc), (
        exc
    )


def test_a_broker_that_sends_headers_then_nothing_fails_on_the_read_timeout() -> None:
    with StallingServer(_json_head(100), b"", interval=None) as broker:
        client = JsonClient(
            "oanda", broker.url, timeout_s=0.5, deadline_s=30.0, max_attempts=2, backoff_s=0.001
        )
        with client:
            exc, _ = _timed(lambda: client.get_json("/v3/x", {}, symbol="EUR_USD", parse=dict))
    assert isinstance(exc, SourceError) and "last status timeout" in str(exc), exc


def test_a_quick_answer_is_unaffected_by_the_deadline() -> None:
    body = b'{"candles": []}'
    with StallingServer(_json_head(len(body)), body, interval=0.0) as broker:
        client = JsonClient("oanda", broker.url, timeout_s=5.0, deadline_s=2.0, max_attempts=1, backoff_s=0.0)
        with client:
            assert client.get_json("/v3/x", {}, symbol="EUR_USD", parse=dict) == {"candles": []}


def test_trickled_headers_are_cut_at_the_deadline_too() -> None:
    """The status line and headers a byte every 50 ms (5 kB of them: minutes): the watchdog closes the
    connection at the deadline; the next attempt gets a fresh client and is cut the same way."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"x" * 5000 + b"\r\n"
    with StallingServer(b"", head, interval=0.05) as broker:
        client = JsonClient(
            "oanda", broker.url, timeout_s=5.0, deadline_s=1.0, max_attempts=2, backoff_s=0.001
        )
        with client:
            exc, seconds = _timed(lambda: client.get_json("/v3/x", {}, symbol="EUR_USD", parse=dict))
    assert isinstance(exc, SourceError) and "last status deadline" in str(exc), exc
    assert broker.connections == 2 and seconds >= 2 * 1.0
