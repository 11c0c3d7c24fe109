"""Data health: is each instrument's data fresh and whole, and does its latest trading day look like the ones before?

Per instrument, judged at the logical date ``data.end``:

* ``freshness`` — the newest raw bar against the broker's calendar (stale: the tail is missing);
* ``integrity`` — holes inside the latest trading day, and price jumps no market makes (a unit error);
* ``drift`` — Evidently's PSI of four bar-level *signals* (|return|, high-low range, relative spread,
  volume) between the latest trading day and the 14 before, each against a threshold calibrated to
  its window size; plus a drill-down of every store feature on windows sized to its lookback.

An instrument is *drifted* when a signal crosses its threshold; the features say where to look.
``check_health`` reads the stores; ``assess`` does the same on a frame of rows (the bench). The
``health`` stage writes ``metrics/health.json`` (a dozen headline numbers and one line per
instrument), ``metrics/health_details.json`` (everything), ``reports/drift/`` (Evidently's HTML and
``psi.json``) and ``metrics/health.prom`` (Prometheus textfile), then fails when a rule says so.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from autotrader import rawstore
from autotrader.console import progress
from autotrader.errors import AutoTraderError
from autotrader.health.drift import Column, DriftResult, compute_drift
from autotrader.health.freshness import Freshness, check_freshness
from autotrader.health.freshness import assess as assess_freshness
from autotrader.health.integrity import Integrity, check_integrity
from autotrader.health.windows import instrument_windows
from autotrader.params import HealthParams, Params
from autotrader.store import feature_columns, load_features, read_metadata

__all__ = [
    "DriftResult",
    "Freshness",
    "HealthCheckFailed",
    "HealthReport",
    "assess",
    "check_health",
    "fallback_html",
]


class HealthCheckFailed(AutoTraderError):
    """Stale data, a gap or a price jump; or drift while ``health.fail_on_drift`` is true."""


@dataclass
class HealthReport:
    at: pd.Timestamp
    interval: str
    freshness: list[Freshness]
    integrity: dict[str, Integrity]
    drift: DriftResult | None
    drift_error: str | None
    health: HealthParams
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "fail" if self.problems else "warn" if self.warnings else "ok"

    @property
    def instruments(self) -> list[str]:
        keys = {f.key for f in self.freshness} | set(self.integrity)
        return sorted(keys | set(self.drift.instruments if self.drift else []))

    @property
    def alarm(self) -> bool:
        """Anything an operator should look at: what the bench counts as "the run alarmed"."""
        return self.status != "ok"

    def drifted_instruments(self) -> list[str]:
        return [i for i in self.instruments if self.drift is not None and self.drift.drifted(i)]

    def _signals(self) -> list[Column]:
        return [c for c in (self.drift.columns if self.drift else []) if c.kind == "signal"]

    def reasons(self, key: str) -> list[str]:
        """Short tags for what flagged the instrument: ``stale``, ``gap``, ``jump``, drifted signal names."""
        tags = [t for t, hit in (("stale", any(f.stale for f in self.freshness if f.key == key)),) if hit]
        integrity = self.integrity.get(key)
        if integrity is not None:
            tags += [t for t, hit in (("gap", integrity.gap), ("jump", integrity.jump)) if hit]
        if self.drift is not None:
            tags += [c.name for c in self.drift.drifted(key)]
        return tags

    def verdict(self, key: str) -> str:
        """One line per instrument: what is wrong, or "ok", with the top features for drill-down."""
        parts: list[str] = []
        fresh = next((f for f in self.freshness if f.key == key), None)
        if fresh is not None and fresh.stale:
            parts.append(f"stale (lag {fresh.lag_bars} bars)" if fresh.lag_bars is not None else "no bars")
        integrity = self.integrity.get(key)
        if integrity is not None and integrity.gap:
            parts.append(f"gap of {integrity.longest_gap_bars} bars")
        if integrity is not None and integrity.jump:
            parts.append(f"price jump {integrity.jump_sigma:.0f}σ")
        if self.drift is not None:
            hits = self.drift.drifted(key)
            if hits:
                parts.append(
                    "drift: "
                    + ", ".join(
                        f"{c.name} PSI {c.psi:.2f} ≥ {c.threshold:.2f} (day's median at reference p{100 * c.median_quantile:.0f})"
                        for c in hits
                    )
                )
            top = self.drift.top_features(key, self.health.top_features)
            if hits and top:
                parts.append(
                    "top features: " + ", ".join(f"{c.name} {c.psi:.2f}/{c.threshold:.2f}" for c in top)
                )
        return "; ".join(parts) or "ok"

    def as_metrics(self) -> dict[str, Any]:
        """``metrics/health.json``: a dozen headline numbers, and one line per instrument saying why."""
        signals = self._signals()
        drifted = [c for c in signals if c.drift]
        lags = [f.lag_bars for f in self.freshness if f.lag_bars is not None]
        worst = max(signals, key=lambda c: c.ratio, default=None)
        return {
            "status": self.status,
            "at": self.at.isoformat(),
            "interval": self.interval,
            "instruments_checked": len(self.instruments),
            "stale_instruments": sum(f.stale for f in self.freshness),
            "gap_instruments": sum(i.gap for i in self.integrity.values()),
            "jump_instruments": sum(i.jump for i in self.integrity.values()),
            "drifted_instruments": len(self.drifted_instruments()),
            "signals_compared": len(signals),
            "signals_drifted": len(drifted),
            # The largest PSI among drifted signals (0: none drifted), so `max_psi > psi_threshold` is
            # exactly "some signal drifted" — the Argo metric and PipelineFeatureDrift read it.
            "max_psi": round(max((c.psi for c in drifted), default=0.0), 6) if signals else None,
            "max_psi_ratio": round(worst.ratio, 4)
            if worst is not None and math.isfinite(worst.ratio)
            else None,
            "lag_bars": max(lags) if lags else None,
            "drift_measured": self.drift is not None,
            "fail_on_drift": self.health.fail_on_drift,
            "instruments": {key: self.verdict(key) for key in self.instruments},
            "problems": self.problems,
            "warnings": self.warnings,
        }

    def samples(self, finished: float) -> list[tuple[str, dict[str, str], float]]:
        """The verdict as Prometheus samples (``autotrader.health.prometheus.textfile`` writes them)."""
        out: list[tuple[str, dict[str, str], float]] = [
            ("last_run_timestamp_seconds", {}, finished),
            ("at_timestamp_seconds", {}, self.at.timestamp()),
            *[("status", {"status": s}, float(self.status == s)) for s in ("ok", "warn", "fail")],
            ("drift_measured", {}, float(self.drift is not None and bool(self.drift.columns))),
        ]
        for f in self.freshness:
            out.append(("instrument_stale", {"instrument": f.key}, float(f.stale)))
            out.append(
                ("instrument_lag_bars", {"instrument": f.key}, math.nan if f.lag_bars is None else f.lag_bars)
            )
        for key, i in sorted(self.integrity.items()):
            out.append(("instrument_gap", {"instrument": key}, float(i.gap)))
            out.append(("instrument_jump", {"instrument": key}, float(i.jump)))
        if self.drift is not None:
            drifted = set(self.drifted_instruments())
            for key in self.drift.instruments:
                out.append(("instrument_drift", {"instrument": key}, float(key in drifted)))
            for c in self._signals():
                labels = {"instrument": c.instrument, "signal": c.name}
                out.append(("signal_psi", labels, c.psi))
                out.append(("signal_psi_threshold", labels, c.threshold))
        return out

    def details(self, report_path: str) -> dict[str, Any]:
        """``metrics/health_details.json`` (not a DVC metric): every number per instrument, for drill-down."""
        out: dict[str, Any] = {
            "status": self.status,
            "at": self.at.isoformat(),
            "report": report_path,
            "method": self.health.method,
            "rules": self.health.model_dump(),
            "instruments": {},
        }
        if self.drift_error:
            out["drift_error"] = self.drift_error
        for key in self.instruments:
            entry: dict[str, Any] = {"verdict": self.verdict(key)}
            fresh = next((f for f in self.freshness if f.key == key), None)
            if fresh is not None:
                entry["freshness"] = fresh.as_dict()
            if key in self.integrity:
                entry["integrity"] = self.integrity[key].as_dict()
            if self.drift is not None:
                entry["signals"] = {c.name: c.as_dict() for c in self.drift.of(key, "signal")}
                entry["drifted_signals"] = [c.name for c in self.drift.drifted(key)]
                entry["top_features"] = [
                    {
                        "feature": c.name,
                        "psi": round(c.psi, 6),
                        "threshold": round(c.threshold, 6),
                        "drift": c.drift,
                    }
                    for c in self.drift.top_features(key, self.health.top_features)
                ]
                entry["features_above_threshold"] = sorted(
                    c.name for c in self.drift.of(key, "feature") if c.drift
                )
                entry["skipped"] = self.drift.skipped.get(key, {})
            out["instruments"][key] = entry
        return out


def _instruments(params: Params) -> list[tuple[str, str]]:
    """The instruments params ask for, plus any others the raw store holds, in a stable order."""
    wanted = [(i.broker, i.symbol) for i in params.data.active_instruments()]
    extra = [pair for pair in rawstore.instruments(params.paths.raw) if pair not in wanted]
    return wanted + extra


def _integrity(
    frame: pd.DataFrame, at: pd.Timestamp, interval: pd.Timedelta, health: HealthParams
) -> dict[str, Integrity]:
    out: dict[str, Integrity] = {}
    for (broker, symbol), rows in frame.groupby(["broker", "symbol"], sort=True):
        key = f"{broker}/{symbol}"
        rows = rows.sort_values("timestamp")
        windows = instrument_windows(
            key,
            str(broker),
            rows["timestamp"].iloc[0],
            at,
            interval,
            health.current_days,
            health.reference_days,
        )
        spans = windows.spans()
        if spans is None:
            continue
        out[key] = check_integrity(
            key,
            rows,
            windows.expected,
            spans[0].start,
            spans[1].start,
            health.max_gap_bars,
            health.max_jump_sigma,
        )
    return out


def _judge(report: HealthReport) -> HealthReport:
    health = report.health
    report.problems.extend(f.reason() for f in report.freshness if f.stale)
    for key in sorted(report.integrity):
        report.problems.extend(report.integrity[key].problems())
    if report.drift_error:
        report.problems.append(f"drift not measured: {report.drift_error}")
    if report.drift is not None:
        target = report.problems if health.fail_on_drift else report.warnings
        for key in report.drifted_instruments():
            target.append(f"{key}: drift — {report.verdict(key)} (rule health.alpha / health.psi_threshold)")
        if not report.drift.columns:
            report.warnings.append("drift not measured: no instrument has enough rows in both windows")
    return report


def assess(
    frame: pd.DataFrame,
    at: pd.Timestamp,
    interval: pd.Timedelta,
    health: HealthParams,
    *,
    feature_memory: dict[str, int] | None = None,
    report: bool = False,
) -> HealthReport:
    """The health verdict on a frame of rows (bar columns, optionally features) of several instruments.

    Freshness comes from the frame's newest bar per instrument. What the bench runs thousands of times;
    ``check_health`` is the same judgement on the stores.
    """
    frame = frame[frame["timestamp"] < at]
    freshness = [
        assess_freshness(
            str(b), str(s), pd.Timestamp(rows["timestamp"].max()), at, interval, health.max_staleness_bars
        )
        for (b, s), rows in frame.groupby(["broker", "symbol"], sort=True)
    ]
    memory = feature_memory or {}
    drift = compute_drift(frame, memory, at, interval, health, report=report, with_features=bool(memory))
    integrity = _integrity(frame, at, interval, health)
    return _judge(HealthReport(at, str(interval), freshness, integrity, drift, None, health))


def feature_memory(features_root: str | Path) -> dict[str, int]:
    """Each store feature's lookback in bars, from the store's metadata (its memory)."""
    meta = read_metadata(features_root)
    return {f["name"]: int(f.get("lookback", 0)) for f in meta["features"]}


def check_health(params: Params) -> HealthReport:
    """Freshness, integrity and drift of every instrument, judged at ``data.end``, from the stores."""
    at = params.data.end_ts()
    interval = params.data.interval_td
    health = params.health
    with progress() as bar:
        task = bar.add_task("health: freshness", total=3)
        freshness = check_freshness(
            params.paths.raw, _instruments(params), at, interval, health.max_staleness_bars
        )
        bar.update(task, advance=1, description="health: loading features")
        drift: DriftResult | None = None
        drift_error: str | None = None
        integrity: dict[str, Integrity] = {}
        try:
            names = feature_columns(params.paths.features)
            memory = {k: v for k, v in feature_memory(params.paths.features).items() if k in names}
            frame = load_features(None, at, root=params.paths.features, columns=names)
            bar.update(task, advance=1, description="health: drift (Evidently)")
            drift = compute_drift(frame, memory, at, interval, health, report=True)
            integrity = _integrity(frame, at, interval, health)
        except AutoTraderError as exc:  # no store, or one that cannot answer: say so in the report
            drift_error = str(exc)
        bar.update(task, completed=3, description="health")
    return _judge(HealthReport(at, params.data.interval, freshness, integrity, drift, drift_error, health))


def fallback_html(report: HealthReport) -> str:
    """The drift page when Evidently had nothing to compare: it says why instead of being absent."""
    reasons = [report.drift_error] if report.drift_error else []
    if report.drift is not None:
        for inst, skipped in sorted(report.drift.skipped.items()):
            reasons.extend(f"{inst} {name}: {why}" for name, why in skipped.items())
    items = "\n".join(f"<li>{html.escape(r)}</li>" for r in reasons) or "<li>no feature rows</li>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Feature drift</title></head><body>"
        f"<h1>Feature drift at {html.escape(report.at.isoformat())}</h1>"
        f"<p>No drift report: nothing could be compared.</p><ul>\n{items}\n</ul></body></html>\n"
    )


def report_dir(params: Params) -> Path:
    return Path(params.paths.reports) / "drift"
