"""uvicorn's HTTP/1.1 protocol with the two guards it lacks: a header deadline and a connection cap.

uvicorn bounds only the idle time *between* requests (``timeout_keep_alive``). A client that opens a
connection and sends nothing, or trickles its request line and headers a byte at a time, holds a
socket, a file descriptor and a protocol object for as long as it likes, and 2,000 of them hold
2,000 (measured before this module: all held, none cut). Its ``limit_concurrency`` answers 503 only
once a request's headers are complete, so it never sees the tricklers either. Here, per connection:

- **header deadline**: from the moment a connection opens (or a new request on a kept-alive
  connection sends its first byte) the request line and headers must be complete within
  ``header_timeout_s``; otherwise the server answers ``408 Request Timeout`` with
  ``connection: close`` and closes. The body has its own deadline in the app (``app._read_body``),
  where a 408 is counted in the request metrics like any other answer.
- **connection cap**: a connection beyond ``max_connections`` open ones is answered ``503`` with
  ``connection: close`` at once, before anything is read.

Both events are counted (``autotrader_connections_refused_total{reason}``) and logged at debug
level only: a flood must not turn into a flood of log lines. The subclass touches only uvicorn's
documented protocol hooks (``connection_made``, ``connection_lost``, and httptools' parser
callbacks ``on_message_begin`` / ``on_headers_complete``), so a uvicorn upgrade that changed them
fails the real-socket tests in tests/test_serving_server.py, not silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("autotrader.serving")

HEADER_TIMEOUT = "header_timeout"
CONNECTION_LIMIT = "connection_limit"

_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 46\r\nconnection: close\r\n\r\nrequest headers not received within the limit\n"
)
_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 32\r\nconnection: close\r\n\r\ntoo many connections, try later\n"
)


def guarded_protocol(
    header_timeout_s: float, max_connections: int, on_refused: Callable[[str], None] | None = None
) -> type[asyncio.Protocol]:
    """A uvicorn ``http=`` protocol class with a header deadline and a connection cap.

    ``on_refused(reason)`` is called for every connection cut (``HEADER_TIMEOUT``) or refused
    (``CONNECTION_LIMIT``); the server passes its metrics counter.
    """
    if header_timeout_s <= 0 or max_connections < 1:
        raise ValueError("header_timeout_s must be > 0 and max_connections ≥ 1")
    notify = on_refused or (lambda _reason: None)

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                notify(CONNECTION_LIMIT)
                log.debug("refused a connection: %d open, limit %d", len(self.connections), max_connections)
                transport.write(_503)
                transport.close()
                return
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()  # a new request on a kept-alive connection: its headers get a deadline

        def on_headers_complete(self) -> None:
            self._disarm_header_timer()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            # Answered before the body was all read (413, 404, a body deadline): the rest of the body
            # would arrive as keep-alive traffic, each byte resetting uvicorn's idle timer. (With
            # pipelined requests queued, self.cycle is a later request: leave those alone.)
            unread = not self.pipeline and self.cycle is not None and self.cycle.more_body
            super().on_response_complete()
            if unread and not self.transport.is_closing():
                self.transport.close()

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._header_deadline)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            notify(HEADER_TIMEOUT)
            log.debug(
                "cut a connection from %s: no complete headers within %.1f s", self.client, header_timeout_s
            )
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                self.transport.write(_408)  # (mid-answer to a pipelined request, a 408 would garble it)
            self.transport.close()

    return GuardedHttpToolsProtocol


def uvicorn_options(config: Any, on_refused: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The uvicorn.run keyword arguments that enforce ``config``'s connection limits (a ServerConfig).

    No ``limit_concurrency``: requests in flight are bounded by connections (one at a time per
    connection; pipelined ones queue), and the cap here acts before a byte is read.
    """
    return {"http": guarded_protocol(config.header_timeout_s, config.max_connections, on_refused)}
