"""Stage ``health``: freshness, integrity and drift of every instrument, judged at ``data.end``.

Writes — always, so a failing run can be read — ``reports/drift/index.html`` (Evidently),
``reports/drift/psi.json`` (what Evidently reported, per column), ``metrics/health.json`` (headline
numbers and one line per instrument), ``metrics/health_details.json`` (every number) and
``metrics/health.prom`` (Prometheus textfile); then fails on stale data, gaps and price jumps, and on
drift only when ``health.fail_on_drift`` is true (otherwise drift is a warning).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from autotrader.atomic import atomic_dir, write_json, write_text
from autotrader.console import console, stage_main
from autotrader.faults import fault_point
from autotrader.health import HealthCheckFailed, HealthReport, check_health, fallback_html, report_dir
from autotrader.health.prometheus import textfile
from autotrader.metrics_files import write_headline
from autotrader.params import load_params


def _show(report: HealthReport) -> None:
    table = Table(title=f"Data health at {report.at.isoformat()} — {report.status}")
    for column in ("instrument", "newest bar", "lag", "verdict"):
        table.add_column(column)
    fresh = {f.key: f for f in report.freshness}
    for key in report.instruments:
        f = fresh.get(key)
        verdict = report.verdict(key)
        table.add_row(
            key,
            f.newest_bar.strftime("%Y-%m-%d %H:%M") if f is not None and f.newest_bar is not None else "—",
            "—" if f is None or f.lag_bars is None else str(f.lag_bars),
            "[green]ok[/]" if verdict == "ok" else f"[yellow]{verdict}[/]",
        )
    console.print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)


def main() -> int:
    params = load_params()
    fault_point("health", "start")
    report = check_health(params)
    fault_point("health", "middle")
    out = report_dir(params)
    metrics = Path(params.paths.metrics)
    with atomic_dir(out) as tmp:
        if report.drift is not None and report.drift.snapshot is not None:
            report.drift.snapshot.save_html(str(tmp / "index.html"))
        else:
            (tmp / "index.html").write_text(fallback_html(report))
        psi = report.drift.psi_table() if report.drift is not None else {"error": report.drift_error}
        fault_point("health", "end")
        write_json(tmp / "psi.json", psi)
    write_json(metrics / "health.json", report.as_metrics())
    write_headline(metrics, "health", report.as_metrics())
    write_json(metrics / "health_details.json", report.details(str(out / "index.html")))
    write_text(metrics / "health.prom", textfile(report.samples(time.time())))
    _show(report)
    console.print(
        f"reports: {out / 'index.html'}, {out / 'psi.json'}, {metrics / 'health.json'}, "
        f"{metrics / 'health_details.json'}, {metrics / 'health.prom'}"
    )
    if report.problems:
        raise HealthCheckFailed("; ".join(report.problems))
    return 0


if __name__ == "__main__":
    stage_main(main)
