"""Stage ``health``: freshness of the raw bars and drift of the features, judged at ``data.end``.

Writes ``reports/drift/index.html`` (Evidently), ``reports/drift/psi.json`` and
``metrics/health.json`` — always, so a failing run can be read — then fails on stale data, and on
drift only when ``health.fail_on_drift`` is true (otherwise drift is a warning).
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from autotrader.atomic import atomic_dir, write_json
from autotrader.console import console, stage_main
from autotrader.faults import fault_point
from autotrader.health import HealthCheckFailed, HealthReport, check_health, fallback_html, report_dir
from autotrader.params import load_params


def _show(report: HealthReport) -> None:
    table = Table(title=f"Data health at {report.at.isoformat()} — {report.status}")
    for column in ("instrument", "newest bar", "lag", "fresh", "max PSI", "drifted"):
        table.add_column(column)
    for fresh in report.freshness:
        drift = report.drift.instrument_summary(fresh.key) if report.drift else {}
        worst = "—" if drift.get("max_psi") is None else f"{drift['max_psi']:.3f} {drift['max_psi_feature']}"
        drifted = len(drift.get("features_above_threshold", []))
        table.add_row(
            fresh.key,
            fresh.newest_bar.strftime("%Y-%m-%d %H:%M") if fresh.newest_bar is not None else "—",
            "—" if fresh.lag_bars is None else str(fresh.lag_bars),
            "[red]stale[/]" if fresh.stale else "[green]yes[/]",
            worst,
            f"[yellow]{drifted}[/]" if drifted else "0",
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
    with atomic_dir(out) as tmp:
        if report.drift is not None and report.drift.snapshot is not None:
            report.drift.snapshot.save_html(str(tmp / "index.html"))
        else:
            (tmp / "index.html").write_text(fallback_html(report))
        psi = report.drift.psi_table() if report.drift is not None else {"error": report.drift_error}
        fault_point("health", "end")
        write_json(tmp / "psi.json", psi)
    write_json(Path(params.paths.metrics) / "health.json", report.as_metrics(str(out / "index.html")))
    _show(report)
    console.print(
        f"reports: {out / 'index.html'}, {out / 'psi.json'}, {Path(params.paths.metrics) / 'health.json'}"
    )
    if report.problems:
        raise HealthCheckFailed("; ".join(report.problems))
    return 0


if __name__ == "__main__":
    stage_main(main)
