"""``autotrader reports``: where the pipeline's human-readable outputs are, and which exist.

``autotrader reports pr-comment`` renders the pull-request comment of .github/workflows/pr.yml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from autotrader.console import console
from autotrader.params import load_params

REPORTS: tuple[tuple[str, str], ...] = (
    ("Data Docs (Great Expectations)", "{reports}/validation/data_docs/index.html"),
    ("Validation results", "{metrics}/validation.json"),
    ("Drift report (Evidently)", "{reports}/drift/index.html"),
    ("Data health", "{metrics}/health.json"),
    ("Feature store metadata", "{features}/_metadata.json"),
    ("Backtest metrics", "{metrics}/evaluate.json"),
    ("Model card", "{reports}/model_card.md"),
    ("Plots (PNG)", "{reports}/plots"),
    ("Headline metrics (dvc metrics show)", "{metrics}/headline"),
    ("Gate decision", "{metrics}/gates.json"),
    ("Promotion", "{metrics}/promotion.json"),
)


def _show(args: argparse.Namespace) -> int:
    paths = load_params(args.params).paths
    table = Table(title="AutoTrader reports")
    table.add_column("report")
    table.add_column("path")
    table.add_column("")
    for name, template in REPORTS:
        path = Path(template.format(reports=paths.reports, metrics=paths.metrics, features=paths.features))
        table.add_row(name, str(path), "[green]ok[/]" if path.exists() else "[dim]not yet[/]")
    console.print(table)
    console.print("Model review: [bold]make mlflow-ui[/] then open http://127.0.0.1:5000")
    console.print(
        "Compare runs: [bold]make exp[/], [bold]dvc metrics diff main[/], [bold]dvc plots diff main[/]",
        soft_wrap=True,
    )
    return 0


def _pr_comment(args: argparse.Namespace) -> int:
    from autotrader.orchestration.prcomment import render

    text = render(
        args.gates, metrics_diff=args.metrics_diff, params_diff=args.params_diff, plots_url=args.plots_url
    )
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reports",
        help="list the pipeline's reports and where they are",
        description=(
            "A table of the pipeline's human-readable outputs (Data Docs, drift report, metrics, model card, "
            "plots, gate decision, promotion) with their paths under params.yaml's paths and whether each "
            "exists yet; then how to open the MLflow UI and compare runs."
        ),
    )
    parser.set_defaults(func=_show)
    sub = parser.add_subparsers(dest="reports_command", required=False)
    comment = sub.add_parser(
        "pr-comment",
        help="the pull-request comment: gate table, metrics diff, params diff, plots link (markdown)",
    )
    comment.add_argument("--gates", default="metrics/gates.json", help="the gate stage's decision file")
    comment.add_argument("--metrics-diff", default=None, help="a file holding dvc metrics diff --md output")
    comment.add_argument("--params-diff", default=None, help="a file holding dvc params diff --md output")
    comment.add_argument("--plots-url", default=None, help="where the dvc plots diff output is (a URL)")
    comment.add_argument("--out", default=None, help="write the markdown here (default: standard output)")
    comment.set_defaults(func=_pr_comment)
