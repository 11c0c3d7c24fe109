"""A local HTTP server that stalls or trickles (loopback only), for testing deadlines (no tests here)."""

from __future__ import annotations

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
