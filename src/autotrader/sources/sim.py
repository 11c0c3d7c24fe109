"""A deterministic simulated market: the offline default and the ground truth for leakage tests.

Each instrument follows a log-price random walk on its broker's calendar with two-state
regime-switching volatility, a quoted spread that widens with volatility, and volume that rises with
|return|. ``signal_strength`` adds a causal drift: a persistent latent order-flow factor ``x`` moves the
next bar's expected return, and ``x`` is partly visible in past returns (momentum). At ``signal_strength = 0`` the drift is exactly zero, so nothing about the future is
predictable from the past (the volatility clustering is, but its sign is not).

The market begins at ``epoch``: every path is simulated from there (or from the window start, if
that is earlier), so a bar depends on the seed, the instrument, the interval and its own timestamp —
not on the window asked for. Moving ``data.end`` forward appends new days and leaves old ones
byte-identical, which is what lets the nightly pipeline and the feature store work incrementally.

Everything is vectorised (``scipy.signal.lfilter`` for the AR processes); no loop over bars.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from autotrader.calendars import bar_index
from autotrader.params import Instrument
from autotrader.schema import conform, empty_bars

_YEAR = pd.Timedelta(days=365)


@dataclass(frozen=True)
class InstrumentSpec:
    price: float
    annual_vol: float
    spread_bps: float
    volume: float  # mean volume per bar at the reference interval (5 min)


SPECS: dict[str, InstrumentSpec] = {
    "BTCUSDT": InstrumentSpec(price=60_000.0, annual_vol=0.55, spread_bps=1.0, volume=40.0),
    "ETHUSDT": InstrumentSpec(price=3_000.0, annual_vol=0.70, spread_bps=1.5, volume=400.0),
    "EUR_USD": InstrumentSpec(price=1.08, annual_vol=0.07, spread_bps=0.8, volume=900.0),
    "GBP_USD": InstrumentSpec(price=1.27, annual_vol=0.08, spread_bps=1.2, volume=700.0),
    "USD_JPY": InstrumentSpec(price=150.0, annual_vol=0.09, spread_bps=1.0, volume=800.0),
    "SPY": InstrumentSpec(price=550.0, annual_vol=0.16, spread_bps=0.3, volume=250_000.0),
    "QQQ": InstrumentSpec(price=480.0, annual_vol=0.21, spread_bps=0.4, volume=180_000.0),
}
_DEFAULT_SPEC = InstrumentSpec(price=100.0, annual_vol=0.3, spread_bps=2.0, volume=1000.0)

# Latent order-flow factor: AR(1) persistence per bar, and how much of a bar's σ it moves the mean.
FLOW_PERSISTENCE = 0.97
DRIFT_PER_UNIT = 0.08
# Regimes: calm and stormy volatility multipliers, and the per-bar chance of leaving each.
REGIME_VOL = np.array([0.8, 2.2])
REGIME_EXIT = np.array([0.004, 0.02])


DEFAULT_EPOCH = pd.Timestamp("2026-01-01", tz="UTC")

# Named signal strengths. "realistic": calibrated with bench/gate_power.py so that the pipeline's
# realised information coefficient (prediction vs forward return, per bar) sits in 0.01–0.05, the
# range real intraday signals show (median 0.039 over 20 seeds; 0.5 gave −0.015, 2 gave 0.20); the
# default 4.0 is a demo signal (IC ≈ 0.35, Sharpe in the tens).
PRESETS: dict[str, float] = {"realistic": 1.0}


def resolve_strength(signal_strength: float | str) -> float:
    """A number, or a preset name from ``PRESETS``; a ValueError names the known presets."""
    if isinstance(signal_strength, str):
        try:
            return PRESETS[signal_strength]
        except KeyError:
            raise ValueError(
                f"unknown signal_strength preset {signal_strength!r}; known: {', '.join(PRESETS)}"
            ) from None
    return float(signal_strength)


def _rng(
    seed: int, instrument: Instrument, origin: pd.Timestamp, interval: pd.Timedelta
) -> np.random.Generator:
    """Stable across processes (no Python ``hash``): seed, instrument, origin and interval pick the stream."""
    key = f"{instrument.broker}/{instrument.symbol}/{origin.isoformat()}/{interval.value}".encode()
    return np.random.default_rng([seed, zlib.crc32(key)])


def _ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """Stationary AR(1) with unit variance driven by ``shocks``."""
    return lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], shocks)


def _regimes(rng: np.random.Generator, n: int) -> np.ndarray:
    """A two-state Markov chain without a Python loop: draw run lengths, then expand them."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    runs: list[np.ndarray] = []
    total, state = 0, 0
    while total < n:  # a handful of iterations: each draws a batch of runs
        batch = rng.geometric(REGIME_EXIT[[state, 1 - state] * 64])
        runs.append(batch)
        total += int(batch.sum())
    lengths = np.concatenate(runs)
    states = np.arange(len(lengths)) % 2
    out = np.repeat(states, lengths)[:n]
    return out


class SimulatedMarket:
    """Seeded bars for any instrument on its broker's calendar; same params, same bars, byte for byte."""

    def __init__(
        self,
        seed: int = 7,
        signal_strength: float | str = 1.0,
        epoch: pd.Timestamp = DEFAULT_EPOCH,
        regime_switching: bool = True,
    ) -> None:
        self.seed = seed
        self.signal_strength = resolve_strength(signal_strength)
        self.epoch = epoch
        # False: the calm regime throughout (a market with no regime change, for the health
        # false-alarm bench). The regime stream is not drawn; every other stream is unchanged.
        self.regime_switching = regime_switching

    def fetch(
        self, instrument: Instrument, start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta
    ) -> pd.DataFrame:
        if end <= start:
            return empty_bars()
        origin = min(self.epoch, start)
        stamps = bar_index(instrument.broker, origin, end, interval)
        # The path is simulated from the origin (so a bar never depends on the window asked for), but
        # only the window's rows are turned into a frame: slicing arrays is free, filtering a frame of
        # the whole path since the epoch cost a copy of every column twice.
        first = int(stamps.searchsorted(start, side="left"))
        if first >= len(stamps):
            return empty_bars()
        columns = self._simulate(instrument, origin, stamps, interval)
        frame = pd.DataFrame(
            {
                "timestamp": stamps[first:],
                "broker": instrument.broker,
                "symbol": instrument.symbol,
                **{name: values[first:] for name, values in columns.items()},
            }
        )
        return conform(frame)

    def _simulate(
        self,
        instrument: Instrument,
        origin: pd.Timestamp,
        stamps: pd.DatetimeIndex,
        interval: pd.Timedelta,
    ) -> dict[str, np.ndarray]:
        """open, high, low, close, volume and spread for every bar in ``stamps`` (the path from ``origin``)."""
        n = len(stamps)
        spec = SPECS.get(instrument.symbol, _DEFAULT_SPEC)
        # One independent stream per component: each draws exactly n values, so a longer path extends
        # a shorter one instead of reshuffling it.
        regime_rng, flow_rng, noise_rng, high_rng, low_rng, volume_rng, spread_rng = _rng(
            self.seed, instrument, origin, interval
        ).spawn(7)

        # Per-bar σ from annual vol on calendar time, so a 24/5 market's bar is as risky as a 24/7 one's.
        base_sigma = spec.annual_vol * np.sqrt(interval / _YEAR)
        regime = _regimes(regime_rng, n) if self.regime_switching else np.zeros(n, dtype=np.int64)
        sigma = base_sigma * REGIME_VOL[regime]

        flow = _ar1(flow_rng.standard_normal(n), FLOW_PERSISTENCE)
        drift = np.zeros(n)
        drift[1:] = self.signal_strength * DRIFT_PER_UNIT * sigma[1:] * flow[:-1]
        noise = noise_rng.standard_normal(n)
        log_ret = drift + sigma * noise
        log_close = np.log(spec.price) + np.cumsum(log_ret)
        close = np.exp(log_close)
        open_ = np.empty(n)
        open_[0] = spec.price
        open_[1:] = close[:-1]

        high = np.maximum(open_, close) * np.exp(np.abs(high_rng.standard_normal(n)) * sigma * 0.6)
        low = np.minimum(open_, close) * np.exp(-np.abs(low_rng.standard_normal(n)) * sigma * 0.6)

        scale = interval / pd.Timedelta(minutes=5)
        # Volume rises with |return| (volatility clustering shows in volume, direction does not).
        activity = np.exp(0.35 * volume_rng.standard_normal(n) + 0.5 * np.abs(noise))
        volume = np.round(spec.volume * scale * activity, 6)
        spread = (
            close
            * spec.spread_bps
            * 1e-4
            * (REGIME_VOL[regime] / REGIME_VOL[0])
            * np.exp(0.2 * spread_rng.standard_normal(n))
        )

        return {"open": open_, "high": high, "low": low, "close": close, "volume": volume, "spread": spread}
