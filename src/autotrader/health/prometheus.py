"""The health verdict as Prometheus metrics, in the text exposition format of node_exporter's textfile collector.

The stage writes ``metrics/health.prom`` atomically (write + rename, so the collector never reads half a
file). Point node_exporter at the folder (``--collector.textfile.directory=<repo>/metrics``: it reads
only ``*.prom``), or push the same text to a Pushgateway
(``curl --data-binary @metrics/health.prom $PUSHGATEWAY/metrics/job/autotrader-health``). The alert rules
in ``monitoring/prometheus/rules/health.yml`` read these series; docs/archive_health.md lists them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

PREFIX = "autotrader_health_"

# name → (type, help); the order in which they are written
SERIES: dict[str, tuple[str, str]] = {
    "last_run_timestamp_seconds": ("gauge", "Wall-clock time (unix seconds) the health check finished"),
    "at_timestamp_seconds": ("gauge", "The logical date (data.end) the health check judged, unix seconds"),
    "status": ("gauge", "1 for the run's status (ok, warn or fail), 0 for the others"),
    "drift_measured": ("gauge", "1 when drift could be measured (the feature store answered), else 0"),
    "instrument_stale": (
        "gauge",
        "1 when the instrument's newest bar lags its calendar by more than health.max_staleness_bars",
    ),
    "instrument_lag_bars": (
        "gauge",
        "Expected bars missing after the instrument's newest bar (calendar-aware)",
    ),
    "instrument_gap": ("gauge", "1 when the latest trading day has a hole longer than health.max_gap_bars"),
    "instrument_jump": (
        "gauge",
        "1 when a bar of the latest trading day moved beyond health.max_jump_sigma robust sigma",
    ),
    "instrument_drift": ("gauge", "1 when a signal of the instrument crossed its calibrated PSI threshold"),
    "signal_psi": ("gauge", "Evidently's PSI of a signal, latest trading day vs the reference window"),
    "signal_psi_threshold": (
        "gauge",
        "The signal's PSI threshold (max of health.psi_threshold and its calibrated null quantile)",
    ),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    number = "NaN" if math.isnan(value) else repr(float(value))
    return f"{PREFIX}{name}{{{inner}}} {number}" if inner else f"{PREFIX}{name} {number}"


def textfile(samples: Iterable[tuple[str, dict[str, str], float]]) -> str:
    """Samples (series name without prefix, labels, value) → exposition text, HELP/TYPE once per series."""
    by_name: dict[str, list[str]] = {}
    for name, labels, value in samples:
        if name not in SERIES:
            raise ValueError(f"unknown health series {name!r}")
        by_name.setdefault(name, []).append(_sample(name, labels, value))
    lines: list[str] = []
    for name, (kind, help_text) in SERIES.items():
        if name in by_name:
            lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}", *by_name[name]]
    return "\n".join(lines) + "\n"
