"""One retrying JSON-over-HTTP client for the broker connectors (Binance, Oanda).

Brokers fail in a handful of ways that a retry fixes: rate limits (429, Binance's 418 ban), server
errors (5xx), timeouts, dropped connections and half-sent bodies. Those are retried with exponential
backoff (``data.live.max_attempts``, ``data.live.backoff_s``) through ``tenacity``; a ``Retry-After``
header is honoured. Everything else (a bad symbol, a refused token) is the caller's mistake and fails
at once.

Each attempt has a total deadline (``data.live.deadline_s``) besides httpx's timeout, which is
per read: a broker trickling its body a byte at a time never trips a per-read timeout and would
keep extract waiting for as long as it liked. The body is read in chunks, and an attempt still
incomplete at its deadline is abandoned (a retryable timeout); a watchdog closes the connection
at the deadline, so a broker trickling its headers is cut off too. Either way the error is a
``SourceError`` naming broker, symbol, URL path and the last status, and never a header (tokens
live there).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from autotrader.errors import SourceError

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 418, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
# A server asking us to wait longer than this (an IP ban, a long outage) is reported, not slept through.
MAX_RETRY_AFTER_S = 120.0


class _Retryable(Exception):
    """A failure worth another try; ``retry_after`` is the server's own wait in seconds, if it gave one."""

    def __init__(self, status: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def _detail(response: httpx.Response, error_keys: tuple[str, ...]) -> str:
    """The broker's own words for an error, from its JSON body when it has one."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return text[:200] or response.reason_phrase
    if isinstance(body, Mapping):
        for key in error_keys:
            if key in body:
                return str(body[key])
    return json.dumps(body)[:200]


class JsonClient:
    """GET JSON from one broker's REST API with retries; one instance per connector."""

    def __init__(
        self,
        broker: str,
        base_url: str,
        *,
        timeout_s: float,
        max_attempts: int,
        backoff_s: float,
        headers: Mapping[str, str] | None = None,
        error_keys: tuple[str, ...] = ("msg", "message", "errorMessage", "error"),
        sleep: Callable[[float], None] = time.sleep,
        deadline_s: float | None = None,
    ) -> None:
        self.broker = broker
        # No deadline given: the old per-read timeout times the reads of a modest answer.
        self.deadline_s = deadline_s if deadline_s is not None else 6 * timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.error_keys = error_keys
        self.sleep = sleep
        self._client_args: dict[str, Any] = {
            "base_url": base_url.rstrip("/"),
            "timeout": min(timeout_s, self.deadline_s),
            "headers": dict(headers or {}),
        }
        self._client = httpx.Client(**self._client_args)
        self._backoff = wait_exponential(multiplier=backoff_s, max=MAX_BACKOFF_S)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> JsonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff, or the server's Retry-After when that is longer."""
        backoff = self._backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return max(backoff, exc.retry_after)
        return backoff

    def _once(
        self,
        path: str,
        params: Mapping[str, Any],
        parse: Callable[[Any], T],
        on_response: Callable[[httpx.Response], None] | None,
        symbol: str,
    ) -> T:
        try:
            response = self._get_within_deadline(path, params)
        except httpx.TimeoutException as exc:
            raise _Retryable("timeout", f"no answer within the timeout ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retryable("connection error", f"{type(exc).__name__}: {exc}") from exc
        if on_response is not None:
            on_response(response)
        status = response.status_code
        if status in RETRY_STATUSES:
            retry_after = _retry_after(response)
            detail = _detail(response, self.error_keys)
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                raise SourceError(
                    f"{self.broker} {symbol}: GET {path} answered HTTP {status} and asks to wait "
                    f"{retry_after:.0f} s (Retry-After), longer than {MAX_RETRY_AFTER_S:.0f} s; "
                    f"try again later: {detail}"
                )
            raise _Retryable(f"HTTP {status}", detail, retry_after)
        if status >= 400:
            raise SourceError(
                f"{self.broker} {symbol}: GET {path} was refused with HTTP {status}: "
                f"{_detail(response, self.error_keys)}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise _Retryable(f"HTTP {status}", f"body is not valid JSON ({exc})") from exc
        try:
            return parse(body)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _Retryable(
                f"HTTP {status}", f"unexpected body shape ({type(exc).__name__}: {exc})"
            ) from exc

    def _get_within_deadline(self, path: str, params: Mapping[str, Any]) -> httpx.Response:
        """GET with the whole answer (headers and body) due within ``deadline_s``; a ``_Retryable`` if not.

        Two guards: the body is read in chunks and checked against the deadline after each one, and
        a watchdog timer closes the client at the deadline, which makes a read in flight fail at its
        next byte or read timeout — that covers a broker trickling its *headers* too. A closed
        client cannot be reused, so the next attempt gets a fresh one.
        """
        started = time.monotonic()
        deadline = started + self.deadline_s
        client = self._client
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            client.close()

        def late(received: int) -> _Retryable:
            return _Retryable(
                "deadline",
                f"the answer was still incomplete after {time.monotonic() - started:.1f} s "
                f"({received} bytes; deadline {self.deadline_s:g} s, data.live.deadline_s)",
            )

        watchdog = threading.Timer(self.deadline_s, expire)
        watchdog.daemon = True
        watchdog.start()
        chunks: list[bytes] = []
        try:
            with client.stream("GET", path, params=dict(params)) as response:
                for chunk in response.iter_raw():
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise late(sum(map(len, chunks)))
                raw = b"".join(chunks)
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: "the client has been closed"
            if expired.is_set():
                raise late(sum(map(len, chunks))) from exc
            raise
        finally:
            watchdog.cancel()
            if expired.is_set():
                self._client = httpx.Client(**self._client_args)
        # Rebuilt from the raw bytes, so .json()/.text decode exactly as a plain get() would have.
        return httpx.Response(
            response.status_code, headers=response.headers, content=raw, request=response.request
        )

    def get_json(
        self,
        path: str,
        params: Mapping[str, Any],
        *,
        symbol: str,
        parse: Callable[[Any], T],
        on_response: Callable[[httpx.Response], None] | None = None,
    ) -> T:
        """GET ``path`` and return ``parse(json)``; a body ``parse`` cannot read counts as garbled and is retried.

        ``on_response`` sees every response (rate-limit headers) before its status is judged.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            return retrying(self._once, path, params, parse, on_response, symbol)
        except _Retryable as exc:
            raise SourceError(
                f"{self.broker} {symbol}: GET {path} failed after {self.max_attempts} attempt(s); "
                f"last status {exc.status}: {exc.detail}"
            ) from exc
