"""Data health: are the bars fresh, and do the latest features look like the ones the model knows?

``freshness`` judges each instrument's newest raw bar against its market calendar; ``drift``
compares feature distributions (PSI, through Evidently) between a reference window and the latest
one. ``check_health`` runs both and says what is wrong in words that name the instrument, the
feature and the rule; the ``health`` stage writes the reports and fails when a rule says so.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from autotrader import rawstore
from autotrader.console import progress
from autotrader.errors import AutoTraderError
from autotrader.health.drift import DriftResult, Windows, compute_drift
from autotrader.health.freshness import Freshness, check_freshness
from autotrader.params import Params
from autotrader.store import feature_columns, load_features

__all__ = [
    "DriftResult",
    "Freshness",
    "HealthCheckFailed",
    "HealthReport",
    "check_health",
    "fallback_html",
]


class HealthCheckFailed(AutoTraderError):
    """Stale data, or drift above the threshold while ``health.fail_on_drift`` is true."""


@dataclass
class HealthReport:
    at: pd.Timestamp
    interval: str
    freshness: list[Freshness]
    drift: DriftResult | None
    drift_error: str | None
    fail_on_drift: bool
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "fail" if self.problems else "warn" if self.warnings else "ok"

    def as_metrics(self, report_path: str) -> dict[str, Any]:
        """``metrics/health.json``: per instrument freshness and drift, the overall verdict, and why."""
        keys = sorted({f.key for f in self.freshness} | set(self.drift.notes if self.drift else {}))
        fresh = {f.key: f for f in self.freshness}
        instruments: dict[str, Any] = {}
        for key in keys:
            entry: dict[str, Any] = {}
            if key in fresh:
                entry["freshness"] = fresh[key].as_dict()
            if self.drift is not None:
                entry["drift"] = self.drift.instrument_summary(key)
            instruments[key] = entry
        drift: dict[str, Any] = {"method": "psi", "fail_on_drift": self.fail_on_drift, "report": report_path}
        if self.drift is not None:
            scores = [
                (value, f"{inst}:{feat}")
                for inst, feats in self.drift.evidently.items()
                for feat, value in feats.items()
            ]
            worst = max(scores) if scores else None
            drift.update(
                threshold=self.drift.threshold,
                windows=self.drift.windows.as_dict(),
                max_psi=round(worst[0], 6) if worst else None,
                max_psi_feature=worst[1] if worst else None,
                features_above_threshold=sorted(
                    f"{inst}:{feat}" for inst in self.drift.evidently for feat in self.drift.above(inst)
                ),
                drifted=any(self.drift.above(inst) for inst in self.drift.evidently),
            )
        if self.drift_error:
            drift["error"] = self.drift_error
        return {
            "status": self.status,
            "at": self.at.isoformat(),
            "interval": self.interval,
            "stale_instruments": sorted(f.key for f in self.freshness if f.stale),
            "drift": drift,
            "instruments": instruments,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def _instruments(params: Params) -> list[tuple[str, str]]:
    """The instruments params ask for, plus any others the raw store holds, in a stable order."""
    wanted = [(i.broker, i.symbol) for i in params.data.active_instruments()]
    extra = [pair for pair in rawstore.instruments(params.paths.raw) if pair not in wanted]
    return wanted + extra


def _drift_message(drift: DriftResult, instrument: str) -> str:
    scores = drift.evidently[instrument]
    hits = ", ".join(f"{f} PSI {scores[f]:.3f}" for f in drift.above(instrument))
    return f"{instrument}: feature drift — {hits} ≥ {drift.threshold} (rule health.psi_threshold)"


def check_health(params: Params) -> HealthReport:
    """Freshness of every instrument and feature drift per instrument, judged at ``data.end``."""
    at = params.data.end_ts()
    interval = params.data.interval_td
    health = params.health
    with progress() as bar:
        task = bar.add_task("health: freshness", total=3)
        freshness = check_freshness(
            params.paths.raw, _instruments(params), at, interval, health.max_staleness_bars
        )
        bar.update(task, advance=1, description="health: loading features")
        windows = Windows.ending_at(at, health.reference_days, health.current_days)
        drift: DriftResult | None = None
        drift_error: str | None = None
        try:
            names = feature_columns(params.paths.features)
            frame = load_features(
                windows.reference_start, windows.end, root=params.paths.features, columns=names
            )
            bar.update(task, advance=1, description="health: drift (Evidently)")
            drift = compute_drift(frame, names, windows, health.psi_threshold, health.max_rows)
        except AutoTraderError as exc:  # no store, or one that cannot answer: say so in the report
            drift_error = str(exc)
        bar.update(task, completed=3, description="health")

    report = HealthReport(
        at=at,
        interval=params.data.interval,
        freshness=freshness,
        drift=drift,
        drift_error=drift_error,
        fail_on_drift=health.fail_on_drift,
    )
    report.problems.extend(f.reason() for f in freshness if f.stale)
    if drift_error:
        report.problems.append(f"drift not measured: {drift_error}")
    if drift is not None:
        drifted = [inst for inst in sorted(drift.evidently) if drift.above(inst)]
        target = report.problems if health.fail_on_drift else report.warnings
        target.extend(_drift_message(drift, inst) for inst in drifted)
        if not drift.evidently:
            report.warnings.append(
                "drift not measured: no instrument has enough rows in both windows "
                f"({windows.as_dict()['reference']['start']} … {windows.end.isoformat()})"
            )
    return report


def fallback_html(report: HealthReport) -> str:
    """The drift page when Evidently had nothing to compare: it says why instead of being absent."""
    reasons = [report.drift_error] if report.drift_error else []
    if report.drift is not None:
        for inst, note in sorted(report.drift.notes.items()):
            reasons.extend(f"{inst} {feat}: {why}" for feat, why in note["skipped"].items())
    items = "\n".join(f"<li>{html.escape(r)}</li>" for r in reasons) or "<li>no feature rows</li>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Feature drift</title></head><body>"
        f"<h1>Feature drift at {html.escape(report.at.isoformat())}</h1>"
        f"<p>No drift report: nothing could be compared.</p><ul>\n{items}\n</ul></body></html>\n"
    )


def report_dir(params: Params) -> Path:
    return Path(params.paths.reports) / "drift"
