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
    """One instrument's bars, the store's features over them, and a cursor (the next bar to send).

    ``bars_json`` holds each bar already serialised in the bar schema, for an instrument driven through
    bars-in (empty otherwise): a request is then a join of the window's fragments, not 336 dicts.
    """

    instrument: Instrument
    frame: pd.DataFrame
    features: tuple[str, ...]
    warmup: int
    cursor: int
    bars_json: list[bytes]


def _feed(
    market: Any, instrument: Instrument, start: pd.Timestamp, days: int, *, bars_in: bool = False
) -> _Feed:
    """The market's bars with the default feature set computed by the store's own function."""
    import json

    from autotrader.features import compute_feature_arrays, warmup_bars
    from autotrader.params import FeatureParams

    params = FeatureParams()
    bars = market.fetch(instrument, start, start + pd.Timedelta(days=days), pd.Timedelta("5min"))
    values = compute_feature_arrays(bars, params)
    stamps = bars["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
    frame = pd.DataFrame({"timestamp": stamps, "close": bars["close"].to_numpy(dtype=float), **values})
    warmup = warmup_bars(params)
    fragments: list[bytes] = []
    if bars_in:
        columns = ("open", "high", "low", "close", "volume", "spread")
        arrays = [bars[c].to_numpy(dtype=float).tolist() for c in columns]
        head = f'"broker":"{instrument.broker}","symbol":{json.dumps(instrument.symbol)}'
        for i, ts in enumerate(stamps):
            # a missing spread (NaN) is sent as null, as the bar schema allows
            body = ",".join(
                f'"{c}":{json.dumps(a[i] if a[i] == a[i] else None)}'
                for c, a in zip(columns, arrays, strict=True)
            )
            fragments.append(f'{{"timestamp":"{ts}",{head},{body}}}'.encode())
    return _Feed(instrument, frame, tuple(values), warmup, warmup, fragments)


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
    """One thread per instrument; each tick sends the next bars to where the router says.

    Two client kinds, as in production: a batch client sends the next ``bars_per_request`` bars'
    feature vectors to ``POST /predict``; a live client (the instruments in ``bars_in``, in the
    rehearsal and the cluster e2e the canary's header-routed ones, so the analysis measures the live
    path) sends the newest bar with its warm-up window to ``POST /predict/bars`` and the server
    computes the features itself. Both advance through the same market, bar by bar, so each side's
    realised returns stay consecutive.
    """

    def __init__(
        self,
        router: RequestRouter,
        instruments: Sequence[Instrument],
        *,
        signal_strength: float,
        seed: int,
        tick_s: float,
        bars_per_request: int,
        bars_in: Sequence[str] = (),
        start: str = "2025-01-06",
        days: int = 365,
    ) -> None:
        from autotrader.sources.sim import SimulatedMarket

        self.router = router
        self.tick_s = tick_s
        self.bars_per_request = bars_per_request
        market = SimulatedMarket(seed=seed, signal_strength=signal_strength)
        origin = pd.Timestamp(start, tz="UTC")
        live = set(bars_in)
        unknown = live - {inst.key for inst in instruments}
        if unknown:
            raise DeployError(f"bars-in instrument(s) {sorted(unknown)} are not among the driven instruments")
        self.bars_in = tuple(inst.key for inst in instruments if inst.key in live)
        self.feeds = [_feed(market, inst, origin, days, bars_in=inst.key in live) for inst in instruments]
        self.stats: Counter[tuple[str, str, int]] = Counter()  # (target, scenario, status)
        self.paths: Counter[tuple[str, str, int]] = Counter()  # (target, path, status)
        self.scenario = "warmup"
        self.exhausted: list[str] = []  # instruments whose market ran out of bars (their client stopped)
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

    def _request(self, feed: _Feed) -> tuple[str, bytes]:
        """The next request of this instrument's client: (path, JSON body); advances the cursor."""
        import json

        if feed.bars_json:
            end = feed.cursor + 1
            if end > len(feed.bars_json):
                raise DeployError(
                    f"rehearsal market for {feed.instrument.key} ran out of bars; shorten the run"
                )
            feed.cursor = end
            return "/predict/bars", b'{"bars":[' + b",".join(
                feed.bars_json[end - feed.warmup - 1 : end]
            ) + b"]}"
        rows = feed.frame.iloc[feed.cursor : feed.cursor + self.bars_per_request]
        if len(rows) < self.bars_per_request:
            raise DeployError(f"rehearsal market for {feed.instrument.key} ran out of bars; shorten the run")
        feed.cursor += self.bars_per_request
        inst = feed.instrument
        names = list(feed.features)
        instances = [
            {
                "broker": inst.broker,
                "symbol": inst.symbol,
                "timestamp": ts,
                "close": close,
                "features": dict(zip(names, vector, strict=True)),
            }
            for ts, close, vector in zip(
                rows["timestamp"], rows["close"], rows[names].to_numpy().tolist(), strict=True
            )
        ]
        return "/predict", json.dumps({"instances": instances}).encode()

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
                    path, body = self._request(feed)
                except DeployError:
                    with self._lock:
                        self.exhausted.append(key)
                    return
                if url is None:
                    status = 503  # what Envoy answers with no healthy upstream; no server saw it
                else:
                    headers = {HEADER: key, "content-type": "application/json"}
                    try:
                        status = client.post(f"{url}{path}", content=body, headers=headers).status_code
                    except Exception:  # any failure to get an answer is a counted 0, never a dead thread
                        status = 0
                with self._lock:
                    self.stats[(target, scenario, status)] += 1
                    self.paths[(target, path, status)] += 1
                next_tick += self.tick_s
                delay = next_tick - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_tick = time.monotonic()

    def by_path(self) -> dict[str, dict[str, dict[str, int]]]:
        """Requests per path, target and status since the start: which client kind reached which side."""
        with self._lock:
            out: dict[str, dict[str, dict[str, int]]] = {}
            for (target, path, status), n in self.paths.items():
                slot = out.setdefault(path, {}).setdefault(target, {})
                slot[str(status)] = slot.get(str(status), 0) + n
            return out

    def snapshot(self, scenario: str) -> dict[str, dict[str, int]]:
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (target, name, status), n in self.stats.items():
                if name == scenario:
                    out.setdefault(target, {})[str(status)] = out.get(target, {}).get(str(status), 0) + n
            return out
