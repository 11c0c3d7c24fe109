"""``autotrader deploy check`` and ``autotrader deploy integration``: the gates before a model is served."""

from __future__ import annotations

import argparse
from pathlib import Path

from autotrader.console import console
from autotrader.params import load_params


def _check(args: argparse.Namespace) -> int:
    from autotrader.serving.deploy_checks import deploy_check, print_report

    params = load_params(args.params)
    report = deploy_check(
        params,
        args.model_uri,
        golden_path=Path(args.golden) if args.golden else None,
        write_golden_path=Path(args.write_golden) if args.write_golden else None,
        features_root=Path(args.features_root) if args.features_root else None,
        report_path=Path(args.report) if args.report else None,
    )
    print_report(report, f"deploy check: {report['model_uri']}")
    console.print(f"[green]deploy check passed[/] for {report['model_uri']}")
    return 0


def _integration(args: argparse.Namespace) -> int:
    from autotrader.serving.deploy_checks import print_report, run_integration

    params = load_params(args.params)
    report = run_integration(
        params,
        args.model_uri,
        record=args.record,
        bars=args.bars,
        batch_size=args.batch_size,
        max_latency_ms=args.max_latency_ms,
        min_pass_rate=args.min_pass_rate,
        features_root=Path(args.features_root) if args.features_root else None,
        report_path=Path(args.report) if args.report else None,
        url=args.url,
    )
    print_report(report, f"integration: {report['model_uri']}")
    recorded = " (recorded in the registry)" if report["recorded"] else ""
    console.print(f"[green]integration tests passed[/] ({report['pass_rate']:.2%}){recorded}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    deploy = subparsers.add_parser(
        "deploy", help="pre-deployment checks of a model (static and against a server)"
    )
    sub = deploy.add_subparsers(dest="deploy_command", required=True)

    check = sub.add_parser(
        "check",
        help="load the model, compare requirements and signature, smoke-predict golden inputs",
    )
    check.add_argument(
        "--model-uri", required=True, help="models:/<name>/<version>, models:/<name>@<alias> or a folder"
    )
    check.add_argument("--golden", help="golden file: inputs and the outputs they must give (JSON)")
    check.add_argument("--write-golden", help="record the smoke inputs and this model's outputs to this file")
    check.add_argument(
        "--features-root", help="feature store to compare the signature with (default paths.features)"
    )
    check.add_argument("--report", help="report path (default <reports>/deploy/check.json)")
    check.set_defaults(func=_check)

    integ = sub.add_parser(
        "integration",
        help="start a server with the model, replay recorded bars, require ≥ 95%% of checks to pass",
    )
    integ.add_argument(
        "--model-uri", required=True, help="models:/<name>/<version>, models:/<name>@<alias> or a folder"
    )
    integ.add_argument(
        "--record",
        action="store_true",
        help="set integration_passed / integration_pass_rate tags on the registry version",
    )
    integ.add_argument(
        "--bars", type=int, default=24, help="last N bars per instrument to replay (default 24)"
    )
    integ.add_argument(
        "--batch-size", type=int, default=32, help="batch size of the batch replay (default 32)"
    )
    integ.add_argument(
        "--max-latency-ms", type=float, default=200.0, help="per-request latency limit (default 200)"
    )
    integ.add_argument(
        "--min-pass-rate", type=float, default=0.95, help="share of checks that must pass (default 0.95)"
    )
    integ.add_argument("--features-root", help="feature store to replay from (default paths.features)")
    integ.add_argument("--report", help="report path (default <reports>/deploy/integration.json)")
    integ.add_argument(
        "--url",
        help="test the server already running there (e.g. the staging preview Service) instead of "
        "starting one; it must serve this model version",
    )
    integ.set_defaults(func=_integration)
