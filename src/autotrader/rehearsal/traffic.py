"""Time-compressed traffic for a rehearsal: the simulated market replayed, routed as a Rollout step says."""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from autotrader.errors import DeployError
from autotrader.params import Instrument

HEADER = "x-autotrader-instrument"


def header_routes_to_canary(matches: Sequence[dict[str, Any]], header: str, value: str) -> bool:
    """Whether a request with ``header: value`` matches a setHeaderRoute match list (Envoy full-match regex)."""
    for match in matches:
        if match.get("headerName", "").lower() != header.lower():
            continue
        spec = match.get("headerValue") or {}
        if "exact" in spec and value == spec["exact"]:
            return True
        if "prefix" in spec and value.startswith(spec["prefix"]):
            return True
        if "regex" in spec and re.fullmatch(spec["regex"], value):
            return True
    return False


@dataclass
class _Feed:
    """One instrument's bars with the two causal features the demo models read, and a cursor."""

    instrument: Instrument
    frame: pd.DataFrame
    cursor: int = 3


def _feed(market: Any, instrument: Instrument, start: pd.Timestamp, days: int) -> _Feed:
    bars = market.fetch(instrument, start, start + pd.Timedelta(days=days), pd.Timedelta("5min"))
    close = bars["close"].to_numpy(dtype=float)
    logc = np.log(close)
    ret_1 = np.r_[np.nan, np.diff(logc)]
    ret_3 = np.r_[[np.nan] * 3, logc[3:] - logc[:-3]]
    stamps = bars["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
    frame = pd.DataFrame({"timestamp": stamps, "close": close, "ret_1": ret_1, "ret_3": ret_3})
    return _Feed(instrument, frame)


class RequestRouter(Protocol):
    """Anything that says where one request goes: (target label, URL); a None URL means no upstream."""

    def route(self, key: str) -> tuple[str, str | None]: ...


class Router:
    """Which server a request goes to, as the Rollout's current step says (Istio's job, done here)."""

    def __init__(self, stable_url: str, seed: int = 0) -> None:
        self.stable_url = stable_url
        self.canary_url: str | None = None
        self.matches: list[dict[str, Any]] = []
        self.weight = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def set_canary(self, url: str | None) -> None:
        with self._lock:
            self.canary_url = url

    def set_matches(self, matches: list[dict[str, Any]]) -> None:
        with self._lock:
            self.matches = list(matches)

    def set_weight(self, weight: int) -> None:
        with self._lock:
            self.weight = int(weight)

    def abort(self) -> None:
        """All traffic back to stable (what an aborted Rollout does)."""
        with self._lock:
            self.matches, self.weight = [], 0

    def route(self, key: str) -> tuple[str, str | None]:
        with self._lock:
            if self.canary_url is None:
                return "stable", self.stable_url
            if header_routes_to_canary(self.matches, HEADER, key):
                return "canary", self.canary_url
            if self.weight > 0 and self._rng.random() * 100 < self.weight:
                return "canary", self.canary_url
            return "stable", self.stable_url


class TrafficDriver:
    """One thread per instrument; each tick sends the next ``bars_per_request`` bars to where the router says."""

    def __init__(
        self,
        router: RequestRouter,
        instruments: Sequence[Instrument],
        *,
        signal_strength: float,
        seed: int,
        tick_s: float,
        bars_per_request: int,
        start: str = "2025-01-06",
        days: int = 365,
    ) -> None:
        from autotrader.sources.sim import SimulatedMarket

        self.router = router
        self.tick_s = tick_s
        self.bars_per_request = bars_per_request
        market = SimulatedMarket(seed=seed, signal_strength=signal_strength)
        origin = pd.Timestamp(start, tz="UTC")
        self.feeds = [_feed(market, inst, origin, days) for inst in instruments]
        self.stats: Counter[tuple[str, str, int]] = Counter()  # (target, scenario, status)
        self.scenario = "warmup"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> TrafficDriver:
        for feed in self.feeds:
            thread = threading.Thread(
                target=self._loop, args=(feed,), daemon=True, name=f"traffic-{feed.instrument.key}"
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _instances(self, feed: _Feed) -> list[dict[str, Any]]:
        rows = feed.frame.iloc[feed.cursor : feed.cursor + self.bars_per_request]
        if len(rows) < self.bars_per_request:
            raise DeployError(f"rehearsal market for {feed.instrument.key} ran out of bars; shorten the run")
        feed.cursor += self.bars_per_request
        inst = feed.instrument
        return [
            {
                "broker": inst.broker,
                "symbol": inst.symbol,
                "timestamp": ts,
                "close": close,
                "features": {"ret_1": r1, "ret_3": r3},
            }
            for ts, close, r1, r3 in zip(
                rows["timestamp"], rows["close"], rows["ret_1"], rows["ret_3"], strict=True
            )
        ]

    def _loop(self, feed: _Feed) -> None:
        import httpx

        key = feed.instrument.key
        with httpx.Client(timeout=10.0) as client:
            next_tick = time.monotonic()
            while not self._stop.is_set():
                scenario = self.scenario  # the phase the request was routed in, not the one it ends in
                try:
                    target, url = self.router.route(key)
                except Exception:  # a router that cannot decide means "no upstream", never a dead thread
                    target, url = "none", None
                try:
                    body = {"instances": self._instances(feed)}
                except DeployError:
                    return
                if url is None:
                    status = 503  # what Envoy answers with no healthy upstream; no server saw it
                else:
                    try:
                        status = client.post(f"{url}/predict", json=body, headers={HEADER: key}).status_code
                    except httpx.HTTPError:
                        status = 0
                with self._lock:
                    self.stats[(target, scenario, status)] += 1
                next_tick += self.tick_s
                delay = next_tick - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_tick = time.monotonic()

    def snapshot(self, scenario: str) -> dict[str, dict[str, int]]:
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (target, name, status), n in self.stats.items():
                if name == scenario:
                    out.setdefault(target, {})[str(status)] = out.get(target, {}).get(str(status), 0) + n
            return out
