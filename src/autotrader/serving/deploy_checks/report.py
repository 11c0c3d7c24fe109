"""Check lists → report summaries, one-line failure messages and the printed table."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from autotrader.console import console
from autotrader.serving.deploy_checks.candidate import Check


def summarize(checks: list[Check]) -> dict[str, Any]:
    passed = sum(c.passed for c in checks)
    return {
        "checks": [asdict(c) for c in checks],
        "passed": passed,
        "total": len(checks),
        "pass_rate": round(passed / len(checks), 4) if checks else 0.0,
    }


def failure_message(what: str, checks: list[Check], limit: int = 4) -> str:
    failed = [c for c in checks if not c.passed]
    parts = [f"{c.name}: {c.detail}" for c in failed[:limit]]
    if len(failed) > limit:
        parts.append(f"… and {len(failed) - limit} more (see the report)")
    return f"{what}: " + "; ".join(parts)


def print_report(report: dict[str, Any], title: str) -> None:
    """A short rich summary: failed checks first, then the counts."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("check")
    table.add_column("")
    table.add_column("detail", overflow="fold")
    failed = [c for c in report["checks"] if not c["passed"]]
    shown = failed[:20] if failed else report["checks"][:20]
    for c in shown:
        table.add_row(c["name"], "[green]ok[/]" if c["passed"] else "[red]FAIL[/]", c["detail"])
    console.print(table)
    console.print(f"{report['passed']}/{report['total']} checks passed ({report['pass_rate']:.2%})")
