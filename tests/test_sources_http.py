"""The broker HTTP client's deadlines against a local server that stalls or trickles (loopback only).

httpx's timeout is per read: a broker that trickles its answer a byte at a time never trips it. The
client gives each attempt a total deadline (``data.live.deadline_s``); these tests serve answers that
would take minutes (or never finish) and check that extract gives up at the deadline with an error
that says so, on every attempt.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pandas as pd
import pytest

from autotrader.errors import SourceError
from autotrader.params import Instrument, LiveParams
from autotrader.sources.binance import BinanceSource
from autotrader.sources.http import JsonClient

GIVE_UP_S = 60  # a call still running after this is a hang: the test fails instead of waiting forever


class StallingBroker:
    """A loopback HTTP server that answers every request with ``head``, then trickles ``body`` one
    byte every ``interval`` s (or sends nothing more when ``interval`` is None) until the client hangs up.
    Bounded: each connection stops after ``max_seconds``."""

    def __init__(
        self, head: bytes, body: bytes = b"", interval: float | None = 0.05, max_seconds: float = 90
    ):
        self.head, self.body, self.interval, self.max_seconds = head, body, interval, max_seconds
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> StallingBroker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        started = time.monotonic()
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)  # the request (small, one read on loopback)
            conn.sendall(self.head)
            for byte in self.body:
                if (
                    self.interval is None
                    or self._stop.is_set()
                    or time.monotonic() - started > self.max_seconds
                ):
                    break
                conn.sendall(bytes([byte]))
                time.sleep(self.interval)
            while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
                time.sleep(0.05)  # hold the connection open: the answer never completes


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
def trickling() -> Iterator[StallingBroker]:
    body = b"[" + b" " * 100_000 + b"]"  # 100 kB a byte every 50 ms: ~80 minutes
    with StallingBroker(_json_head(len(body)), body, interval=0.05) as broker:
        yield broker


def test_a_trickled_body_is_cut_at_the_deadline_on_every_attempt(trickling: StallingBroker) -> None:
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


def test_the_live_source_passes_its_deadline_param(trickling: StallingBroker) -> None:
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
    with StallingBroker(_json_head(100), b"", interval=None) as broker:
        client = JsonClient(
            "oanda", broker.url, timeout_s=0.5, deadline_s=30.0, max_attempts=2, backoff_s=0.001
        )
        with client:
            exc, _ = _timed(lambda: client.get_json("/v3/x", {}, symbol="EUR_USD", parse=dict))
    assert isinstance(exc, SourceError) and "last status timeout" in str(exc), exc


def test_a_quick_answer_is_unaffected_by_the_deadline() -> None:
    body = b'{"candles": []}'
    with StallingBroker(_json_head(len(body)), body, interval=0.0) as broker:
        client = JsonClient("oanda", broker.url, timeout_s=5.0, deadline_s=2.0, max_attempts=1, backoff_s=0.0)
        with client:
            assert client.get_json("/v3/x", {}, symbol="EUR_USD", parse=dict) == {"candles": []}
