"""Oanda v20 candles against a local server speaking the documented ``/v3/instruments/{i}/candles`` format."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from autotrader.errors import ConfigError, SourceError
from autotrader.params import Instrument, LiveParams
from autotrader.sources.live import LiveSource
from autotrader.sources.oanda import OandaSource
from autotrader.sources.sim import SimulatedMarket

EUR = Instrument(broker="oanda", symbol="EUR_USD")
PATH = "/v3/instruments/EUR_USD/candles"
TOKEN = "test-token-abc"
# Monday to Thursday: 4 full FX days of M1 candles, more than one 5000-candle request can carry.
START = pd.Timestamp("2026-11-02", tz="UTC")
END = pd.Timestamp("2026-11-06", tz="UTC")


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    """Mid OHLC and spread the fake broker quotes from (the simulator's EUR_USD, a day beyond the window)."""
    return SimulatedMarket(seed=3).fetch(
        EUR, START - pd.Timedelta(hours=6), END + pd.Timedelta(days=1), pd.Timedelta("1min")
    )


def _candle(row: pd.Series, complete: bool = True) -> dict:
    half = row["spread"] / 2
    return {
        "complete": complete,
        "volume": int(row["volume"]),
        "time": row["timestamp"].strftime("%Y-%m-%dT%H:%M:%S.000000000Z"),
        "bid": {k[0]: repr(row[k] - half) for k in ("open", "high", "low", "close")},
        "ask": {k[0]: repr(row[k] + half) for k in ("open", "high", "low", "close")},
    }


class FakeOanda:
    """v20 candles: from/to window (``to`` inclusive, so pages touch), ≤ 5000 candles, Bearer auth, BA prices."""

    def __init__(self, truth: pd.DataFrame, incomplete_after: pd.Timestamp | None = None) -> None:
        self.truth = truth
        self.incomplete_after = incomplete_after
        self.script: list[Response] = []
        self.requests: list[dict[str, str]] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(dict(request.args))
        if self.script:
            return self.script.pop(0)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Response(
                json.dumps({"errorMessage": "Insufficient authorization to perform request."}), status=401
            )
        args = request.args
        if args.get("price") != "BA" or args.get("granularity") != "M1" or "count" in args:
            return Response(json.dumps({"errorMessage": "Invalid value specified for 'price'"}), status=400)
        lo, hi = pd.Timestamp(args["from"]), pd.Timestamp(args["to"])
        if (hi - lo) / pd.Timedelta("1min") > 5000:
            return Response(json.dumps({"errorMessage": "Maximum value for 'count' exceeded"}), status=400)
        ts = self.truth["timestamp"]
        rows = self.truth[(ts >= lo) & (ts <= hi)]
        candles = [
            _candle(r, complete=self.incomplete_after is None or r["timestamp"] < self.incomplete_after)
            for _, r in rows.iterrows()
        ]
        body = {"instrument": "EUR_USD", "granularity": "M1", "candles": candles}
        return Response(json.dumps(body), content_type="application/json")


@pytest.fixture
def token(monkeypatch) -> None:
    monkeypatch.setenv("OANDA_API_TOKEN", TOKEN)


def live(url: str, attempts: int = 3) -> LiveParams:
    return LiveParams(oanda_url=url, max_attempts=attempts, backoff_s=0.001, timeout_s=5)


def serve(httpserver: HTTPServer, fake: FakeOanda) -> str:
    httpserver.expect_request(PATH, method="GET").respond_with_handler(fake)
    return httpserver.url_for("/").rstrip("/")


def test_windows_are_stitched_into_mid_bars_with_spread(httpserver, truth, token) -> None:
    fake = FakeOanda(truth)
    sleeps: list[float] = []
    bars = LiveSource(live(serve(httpserver, fake)), sleep=sleeps.append).fetch(
        EUR, START, END, pd.Timedelta("1min")
    )

    assert len(fake.requests) == 2  # 5760 minutes in two windows of ≤ 5000 candles
    expected = truth[(truth["timestamp"] >= START) & (truth["timestamp"] < END)].reset_index(drop=True)
    assert len(bars) == len(expected) == 5760
    assert bars["timestamp"].is_unique and bars["timestamp"].is_monotonic_increasing
    assert str(bars["timestamp"].dtype) == "datetime64[ns, UTC]"
    for col in ("open", "high", "low", "close", "spread"):
        np.testing.assert_allclose(bars[col], expected[col], rtol=1e-9, err_msg=col)
    assert bars["volume"].tolist() == [float(int(v)) for v in expected["volume"]]
    assert (bars["spread"] > 0).all()
    assert sleeps == []


def test_incomplete_candles_are_dropped(httpserver, truth, token) -> None:
    cut = START + pd.Timedelta(hours=5)
    fake = FakeOanda(truth, incomplete_after=cut)
    bars = OandaSource(live(serve(httpserver, fake))).fetch(
        EUR, START, START + pd.Timedelta(hours=6), pd.Timedelta("1min")
    )
    assert len(bars) == 300 and bars["timestamp"].max() == cut - pd.Timedelta("1min")


def test_missing_token_is_a_config_error_naming_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("OANDA_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="OANDA_API_TOKEN"):
        LiveSource(live("http://127.0.0.1:9")).fetch(EUR, START, END, pd.Timedelta("5min"))


def test_a_refused_token_says_which_variable_to_check(httpserver, truth, monkeypatch) -> None:
    monkeypatch.setenv("OANDA_API_TOKEN", "wrong")
    fake = FakeOanda(truth)
    with pytest.raises(SourceError) as err:
        OandaSource(live(serve(httpserver, fake))).fetch(EUR, START, END, pd.Timedelta("1min"))
    message = str(err.value)
    assert "HTTP 401" in message and "Insufficient authorization" in message and "OANDA_API_TOKEN" in message
    assert "wrong" not in message  # the token itself is never echoed
    assert len(fake.requests) == 1


def test_429_then_success(httpserver, truth, token) -> None:
    fake = FakeOanda(truth)
    fake.script = [Response(json.dumps({"errorMessage": "Rate limit violation"}), status=429)]
    sleeps: list[float] = []
    bars = OandaSource(live(serve(httpserver, fake)), sleep=sleeps.append).fetch(
        EUR, START, START + pd.Timedelta(hours=1), pd.Timedelta("1min")
    )
    assert len(bars) == 60 and len(fake.requests) == 2 and sleeps == [0.001]


def test_429_forever_is_a_clear_error(httpserver, truth, token) -> None:
    fake = FakeOanda(truth)
    fake.script = [
        Response(json.dumps({"errorMessage": "Rate limit violation"}), status=429) for _ in range(5)
    ]
    with pytest.raises(SourceError) as err:
        OandaSource(live(serve(httpserver, fake)), sleep=lambda _: None).fetch(
            EUR, START, END, pd.Timedelta("1min")
        )
    message = str(err.value)
    assert "oanda EUR_USD" in message and PATH in message and "HTTP 429" in message
    assert "Rate limit violation" in message and "3 attempt" in message


def test_503_then_success(httpserver, truth, token) -> None:
    fake = FakeOanda(truth)
    fake.script = [Response("Service Unavailable", status=503), Response("bad gateway", status=502)]
    bars = OandaSource(live(serve(httpserver, fake)), sleep=lambda _: None).fetch(
        EUR, START, START + pd.Timedelta(hours=1), pd.Timedelta("1min")
    )
    assert len(bars) == 60 and len(fake.requests) == 3


def test_truncated_body_is_retried_and_a_persistent_one_is_reported(httpserver, truth, token) -> None:
    fake = FakeOanda(truth)
    fake.script = [
        Response('{"instrument": "EUR_USD", "candles": [{"complete": tr', content_type="application/json")
    ]
    bars = OandaSource(live(serve(httpserver, fake)), sleep=lambda _: None).fetch(
        EUR, START, START + pd.Timedelta(hours=1), pd.Timedelta("1min")
    )
    assert len(bars) == 60

    fake.script = [Response('{"candles": [{"complete": true}]}', content_type="application/json")] * 3
    with pytest.raises(SourceError, match=r"oanda EUR_USD: .*unexpected body shape"):
        OandaSource(live(serve(httpserver, fake)), sleep=lambda _: None).fetch(
            EUR, START, START + pd.Timedelta(hours=1), pd.Timedelta("1min")
        )


def test_an_interval_oanda_does_not_have_is_a_config_error(token) -> None:
    with pytest.raises(ConfigError, match="7min"):
        OandaSource(live("http://127.0.0.1:9")).fetch(EUR, START, END, pd.Timedelta("7min"))
