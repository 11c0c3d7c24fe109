"""Binance spot klines against a local server speaking the documented ``GET /api/v3/klines`` format."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from autotrader.errors import ConfigError, SourceError
from autotrader.params import Instrument, LiveParams
from autotrader.sources.binance import KLINES_PATH, WEIGHT_HEADER, BinanceSource
from autotrader.sources.live import LiveSource, last_closed_bar_end

BTC = Instrument(broker="binance", symbol="BTCUSDT")
START = pd.Timestamp("2026-11-02", tz="UTC")
END = pd.Timestamp("2026-11-04", tz="UTC")
MINUTE_MS = 60_000


def make_klines(start: pd.Timestamp, end: pd.Timestamp, step_ms: int = MINUTE_MS) -> list[list]:
    """Klines in Binance's documented 12-field layout, prices as strings, times in epoch ms."""
    out = []
    t0 = int(start.value // 1_000_000)
    for i in range((int(end.value // 1_000_000) - t0) // step_ms):
        open_ms = t0 + i * step_ms
        price = 60_000 + (i % 97) * 1.25 - (i % 13) * 0.5
        out.append(
            [
                open_ms,
                f"{price:.2f}",
                f"{price + 5:.2f}",
                f"{price - 4:.2f}",
                f"{price + 1.5:.2f}",
                f"{1 + (i % 7) * 0.125:.8f}",
                open_ms + step_ms - 1,
                "123.4",
                17,
                "0.5",
                "30000.0",
                "0",
            ]
        )
    return out


class FakeBinance:
    """Serves klines like /api/v3/klines: startTime/endTime inclusive, at most ``limit`` (≤ 1000) rows.

    ``overlap`` re-sends the kline before ``startTime`` on every page (a boundary duplicate a careless
    client would keep); ``script`` is a list of canned responses served before the real ones.
    """

    def __init__(self, klines: list[list], overlap: bool = False, weight: int = 0) -> None:
        self.klines = klines
        self.overlap = overlap
        self.weight = weight
        self.script: list[Response] = []
        self.requests: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(dict(request.args))
        self.headers.append(dict(request.headers))
        if self.script:
            return self.script.pop(0)
        args = request.args
        limit = int(args.get("limit", 500))
        if limit > 1000:
            return Response(json.dumps({"code": -1100, "msg": "limit > 1000"}), status=400)
        if args.get("symbol") != "BTCUSDT":
            return Response(json.dumps({"code": -1121, "msg": "Invalid symbol."}), status=400)
        lo, hi = int(args["startTime"]), int(args["endTime"])
        rows = [k for k in self.klines if lo <= k[0] <= hi]
        if self.overlap:
            before = [k for k in self.klines if k[0] < lo]
            rows = before[-1:] + rows
        self.weight += 2
        return Response(
            json.dumps(rows[:limit]),
            content_type="application/json",
            headers={WEIGHT_HEADER: str(self.weight)},
        )


def live_params(url: str, attempts: int = 3) -> LiveParams:
    return LiveParams(binance_url=url, max_attempts=attempts, backoff_s=0.001, timeout_s=5)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def serve(httpserver: HTTPServer) -> Callable[[FakeBinance], str]:
    def attach(fake: FakeBinance) -> str:
        httpserver.expect_request(KLINES_PATH, method="GET").respond_with_handler(fake)
        return httpserver.url_for("/").rstrip("/")

    return attach


def test_pages_are_stitched_in_order_without_duplicates(serve, sleeps) -> None:
    klines = make_klines(START - pd.Timedelta(hours=1), END + pd.Timedelta(hours=1))
    fake = FakeBinance(klines, overlap=True)
    source = BinanceSource(live_params(serve(fake)), sleep=sleeps.append)

    bars = source.fetch(BTC, START, END, pd.Timedelta("1min"))

    assert len(fake.requests) == 3  # 2880 klines, 1000 a page
    assert all(r["limit"] == "1000" and r["interval"] == "1m" for r in fake.requests)
    assert fake.requests[0]["startTime"] == str(START.value // 1_000_000)
    assert fake.requests[0]["endTime"] == str(END.value // 1_000_000 - 1)
    expected = [k for k in klines if START.value // 1_000_000 <= k[0] < END.value // 1_000_000]
    assert len(bars) == len(expected) == 2880
    assert bars["timestamp"].is_unique and bars["timestamp"].is_monotonic_increasing
    assert str(bars["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert bars["timestamp"].iloc[0] == START
    assert bars["timestamp"].iloc[-1] == END - pd.Timedelta("1min")
    assert bars["close"].tolist() == [float(k[4]) for k in expected]
    assert bars["volume"].tolist() == [float(k[5]) for k in expected]
    assert bars["spread"].isna().all()
    assert set(bars["broker"]) == {"binance"} and set(bars["symbol"]) == {"BTCUSDT"}
    assert sleeps == []


def test_live_source_dispatches_binance_and_sends_the_api_key_from_the_environment(
    serve, monkeypatch
) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", "k-123")
    fake = FakeBinance(make_klines(START, START + pd.Timedelta(hours=2), step_ms=5 * MINUTE_MS))
    bars = LiveSource(live_params(serve(fake))).fetch(
        BTC, START, START + pd.Timedelta(hours=1), pd.Timedelta("5min")
    )
    assert len(bars) == 12
    assert fake.requests[0]["interval"] == "5m"
    assert fake.headers[0].get("X-Mbx-Apikey") == "k-123"


def test_without_an_api_key_no_key_header_is_sent(serve, monkeypatch) -> None:
    monkeypatch.delenv("BINANCE_API_KEY", raising=False)
    fake = FakeBinance(make_klines(START, START + pd.Timedelta(hours=1)))
    BinanceSource(live_params(serve(fake))).fetch(
        BTC, START, START + pd.Timedelta(hours=1), pd.Timedelta("1min")
    )
    assert "X-Mbx-Apikey" not in fake.headers[0]


def test_429_then_success_waits_as_retry_after_says(serve, sleeps) -> None:
    fake = FakeBinance(make_klines(START, START + pd.Timedelta(hours=1)))
    fake.script = [
        Response('{"code":-1003,"msg":"Too many requests"}', status=429, headers={"Retry-After": "7"})
    ]
    source = BinanceSource(live_params(serve(fake)), sleep=sleeps.append)

    bars = source.fetch(BTC, START, START + pd.Timedelta(hours=1), pd.Timedelta("1min"))

    assert len(bars) == 60
    assert len(fake.requests) == 2
    assert sleeps == [7.0]


def test_429_forever_ends_in_a_clear_error(serve, sleeps) -> None:
    fake = FakeBinance([])
    fake.script = [Response('{"code":-1003,"msg":"Way too many requests"}', status=429) for _ in range(10)]
    source = BinanceSource(live_params(serve(fake), attempts=4), sleep=sleeps.append)

    with pytest.raises(SourceError) as err:
        source.fetch(BTC, START, END, pd.Timedelta("1min"))

    message = str(err.value)
    assert "binance" in message and "BTCUSDT" in message and KLINES_PATH in message
    assert "HTTP 429" in message and "4 attempt" in message and "Way too many requests" in message
    assert len(fake.requests) == 4
    assert sleeps == pytest.approx([0.001, 0.002, 0.004])  # exponential backoff from data.live.backoff_s


def test_a_ban_longer_than_we_would_wait_is_reported_at_once(serve, sleeps) -> None:
    fake = FakeBinance([])
    fake.script = [Response('{"code":-1003,"msg":"IP banned"}', status=418, headers={"Retry-After": "3600"})]
    with pytest.raises(SourceError, match=r"418.*3600 s"):
        BinanceSource(live_params(serve(fake)), sleep=sleeps.append).fetch(
            BTC, START, END, pd.Timedelta("1min")
        )
    assert sleeps == [] and len(fake.requests) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_then_success(serve, sleeps, status) -> None:
    fake = FakeBinance(make_klines(START, START + pd.Timedelta(hours=1)))
    fake.script = [Response("upstream down", status=status), Response("", status=status)]
    bars = BinanceSource(live_params(serve(fake)), sleep=sleeps.append).fetch(
        BTC, START, START + pd.Timedelta(hours=1), pd.Timedelta("1min")
    )
    assert len(bars) == 60 and len(fake.requests) == 3
    assert len(sleeps) == 2


def test_truncated_json_is_retried(serve, sleeps) -> None:
    klines = make_klines(START, START + pd.Timedelta(hours=1))
    fake = FakeBinance(klines)
    body = json.dumps(klines)
    fake.script = [
        Response(body[: len(body) // 2], content_type="application/json"),
        Response('[[1799000000000, "1.0"]]', content_type="application/json"),  # valid JSON, wrong shape
    ]
    bars = BinanceSource(live_params(serve(fake)), sleep=sleeps.append).fetch(
        BTC, START, START + pd.Timedelta(hours=1), pd.Timedelta("1min")
    )
    assert len(bars) == 60 and len(fake.requests) == 3


def test_garbled_json_forever_names_the_broker(serve, sleeps) -> None:
    fake = FakeBinance([])
    fake.script = [Response("[[1,2,", content_type="application/json") for _ in range(3)]
    with pytest.raises(SourceError) as err:
        BinanceSource(live_params(serve(fake)), sleep=sleeps.append).fetch(
            BTC, START, END, pd.Timedelta("1min")
        )
    assert "binance" in str(err.value) and "not valid JSON" in str(err.value)


def test_a_bad_symbol_fails_at_once_with_binance_s_message(serve, sleeps) -> None:
    fake = FakeBinance(make_klines(START, END))
    with pytest.raises(
        SourceError, match=r"binance NOPE: GET /api/v3/klines was refused with HTTP 400: Invalid symbol"
    ):
        BinanceSource(live_params(serve(fake)), sleep=sleeps.append).fetch(
            Instrument(broker="binance", symbol="NOPE"), START, END, pd.Timedelta("1min")
        )
    assert len(fake.requests) == 1 and sleeps == []


def test_near_the_weight_budget_it_waits_for_the_next_minute(serve, sleeps) -> None:
    fake = FakeBinance(make_klines(START, START + pd.Timedelta(hours=1)), weight=5800)
    source = BinanceSource(live_params(serve(fake)), sleep=sleeps.append)
    source.fetch(BTC, START, START + pd.Timedelta(hours=1), pd.Timedelta("1min"))
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 61
    assert source.waited_for_weight_s == sleeps[0]


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    source = BinanceSource(live_params(f"http://127.0.0.1:{port}"), sleep=sleeps.append)
    with pytest.raises(
        SourceError,
        match=r"binance BTCUSDT: GET /api/v3/klines failed after 3 attempt\(s\); last status connection error",
    ):
        source.fetch(BTC, START, END, pd.Timedelta("1min"))
    assert len(sleeps) == 2


def test_an_interval_binance_does_not_have_is_a_config_error() -> None:
    source = BinanceSource(live_params("http://127.0.0.1:9"))
    with pytest.raises(ConfigError, match="7min"):
        source.fetch(BTC, START, END, pd.Timedelta("7min"))


def test_last_closed_bar_end_is_the_open_of_the_forming_bar() -> None:
    now = datetime(2026, 11, 19, 10, 7, 31, tzinfo=UTC)
    assert last_closed_bar_end(pd.Timedelta("5min"), now) == pd.Timestamp("2026-11-19 10:05", tz="UTC")
    assert last_closed_bar_end(pd.Timedelta("1h"), now) == pd.Timestamp("2026-11-19 10:00", tz="UTC")


def test_a_window_reaching_past_now_stops_at_the_last_closed_bar(serve) -> None:
    hour = pd.Timedelta("1h")
    before = last_closed_bar_end(hour)
    fake = FakeBinance(make_klines(before - 3 * hour, before + 3 * hour, step_ms=3_600_000))
    source = LiveSource(live_params(serve(fake)))

    bars = source.fetch(BTC, before - 2 * hour, before + 2 * hour, hour)
    after = last_closed_bar_end(hour)

    assert len(fake.requests) == 1
    assert before.value // 1_000_000 - 1 <= int(fake.requests[0]["endTime"]) < after.value // 1_000_000
    assert len(bars) >= 2 and (bars["timestamp"] < after).all()
    assert source.fetch(
        BTC, after + 24 * hour, after + 48 * hour, hour
    ).empty  # all in the future: no request
    assert len(fake.requests) == 1
