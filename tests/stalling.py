"""Stalling and trickling peers on loopback, for testing deadlines (no tests here): a server that
stalls or trickles its answer, and a client that trickles its request."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time


class StallingServer:
    """A loopback HTTP server that answers every request with ``head``, then trickles ``body`` one
    byte every ``interval`` s (or sends nothing more when ``interval`` is None), and holds the
    connection open until the client hangs up. ``head=b""``: accepts and never says a word.
    Bounded: each connection is dropped after ``max_seconds``."""

    def __init__(
        self, head: bytes, body: bytes = b"", interval: float | None = 0.05, max_seconds: float = 90
    ):
        self.head, self.body, self.interval, self.max_seconds = head, body, interval, max_seconds
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> StallingServer:
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


async def slow_client(
    port: int, payload: bytes, interval: float, give_up: float, head: int = 0
) -> tuple[bytes | None, float]:
    """Send the first ``head`` bytes of ``payload`` at once, then the rest one byte every ``interval``
    s; return (what the server answered first, seconds).

    ``None``: the server still held the connection after ``give_up`` s (a slow sender not cut off).
    ``b""``: the server closed without a word.
    """
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return b"connect refused", time.monotonic() - started
    writer.write(payload[:head])

    async def drip() -> None:
        with contextlib.suppress(OSError, ConnectionError):
            for byte in payload[head:]:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(interval)

    dripper = asyncio.create_task(drip())
    try:
        data: bytes | None = await asyncio.wait_for(reader.read(64), give_up)
    except TimeoutError:
        data = None
    except (OSError, ConnectionError):
        data = b""
    finally:
        dripper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dripper
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
    return data, time.monotonic() - started
