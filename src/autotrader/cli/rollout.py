"""``autotrader rollout``: rehearse the canary analysis, validate the manifests, finalize a rollout."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from autotrader.console import console, progress
from autotrader.params import load_params

EXPECTED = {"good": "promoted", "losing": "aborted", "slow": "aborted", "erroring": "aborted"}


def _rehearse(args: argparse.Namespace) -> int:
    from autotrader.rehearsal import rehearse as rh

    params = load_params(args.params)
    config = rh.RehearsalConfig(
        overlay=Path(args.overlay),
        scale=rh.TimeScale(seconds_per_minute=args.seconds_per_minute),
        max_measurements=args.max_measurements,
    )
    plan = rh.RolloutPlan.from_objects(rh.render(config.overlay))
    instruments = rh.rehearsal_instruments(plan, params.data.instruments)
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="autotrader-rehearsal-") as tmp,
        rh.demo_models(Path(tmp) / "models") as demo,
    ):
        stable_model = Path(args.stable_model) if args.stable_model else demo["good"]
        if args.canary_model:
            canaries = {"custom": (Path(args.canary_model), args.canary_version)}
        else:
            canaries = {name: (demo[name], str(i + 2)) for i, name in enumerate(args.scenario)}
        console.print(
            f"Rehearsing {', '.join(canaries)} against {config.overlay} (this is not the Argo controller)"
        )
        with rh.Rehearsal(config, stable_model, instruments, tmp) as rehearsal:
            servers = {name: rehearsal.canary(model, version) for name, (model, version) in canaries.items()}
            try:
                with progress() as bar:
                    task = bar.add_task("canary rehearsals", total=len(servers))
                    for name, server in servers.items():
                        first_only = name in ("losing", "slow", "erroring")
                        # a bad canary runs to the first analysis' verdict: allow it one more measurement
                        cap = max(args.max_measurements, 4) if first_only else args.max_measurements
                        result = rehearsal.run(
                            name, server, stop_after_first_analysis=first_only, max_measurements=cap
                        )
                        results.append(result)
                        server.stop()
                        bar.advance(task)
            finally:
                for server in servers.values():
                    server.stop()
    index = rh.write_reports(results, Path(args.out))
    ok = True
    for result in results:
        expected = EXPECTED.get(result.scenario, "promoted")
        good = result.outcome == expected
        ok &= good
        mark = "[green]as expected[/]" if good else "[red]NOT as expected[/]"
        console.print(f"{result.scenario}: {result.outcome} — {result.reason} ({mark})")
    console.print(f"Reports: {index}")
    if any(r.outcome == "promoted" for r in results):
        console.print("After a real rollout succeeds: autotrader rollout finalize --version <N>")
    if any(r.outcome == "aborted" for r in results):
        console.print("On a real abort, restore the pin: autotrader rollback --env production")
    return 0 if ok else 1


def _validate(args: argparse.Namespace) -> int:
    from autotrader.gitops import check_overlay
    from autotrader.gitops.schemas import find_schema_dir

    repo = Path(args.repo)
    schema_dir = find_schema_dir(repo)
    folders = [repo / "rollouts" / "overlays" / env for env in ("staging", "production")]
    folders.append(repo / "rollouts" / "argocd")
    for folder in folders:
        count = check_overlay(folder, schema_dir)
        console.print(
            f"[green]ok[/] {folder}: {count} objects valid (schemas in {schema_dir}, pod security, references)"
        )
    return 0


def _finalize(args: argparse.Namespace) -> int:
    from autotrader.gitops import finalize

    old = finalize(load_params(args.params), args.version, repo=Path(args.repo))
    console.print(f"[green]champion[/] → version {args.version} (was {old})")
    return 0


def _scenarios(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in EXPECTED]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"scenarios are a comma list of {', '.join(EXPECTED)}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rollout", help="rehearse the canary analysis, validate manifests, finalize"
    )
    sub = parser.add_subparsers(dest="rollout_command", required=True)

    rehearse = sub.add_parser(
        "rehearse",
        help="run the production canary's analysis against real servers and a real Prometheus",
        description=(
            "Start a stable and canary model servers and Prometheus on loopback, drive time-compressed traffic "
            "as the Rollout's steps say, and judge each canary with the AnalysisTemplates' own queries and "
            "conditions. Demo canaries: good (promoted), losing, slow, erroring (each aborted). This rehearses "
            "the analysis; it is not the Argo Rollouts controller."
        ),
    )
    rehearse.add_argument(
        "--overlay",
        default="rollouts/overlays/production",
        help="the overlay whose analysis to rehearse (default: rollouts/overlays/production)",
    )
    rehearse.add_argument(
        "--scenario", type=_scenarios, default=list(EXPECTED), help="comma list (default: all)"
    )
    rehearse.add_argument(
        "--seconds-per-minute", type=float, default=0.6, help="time compression (default 0.6)"
    )
    rehearse.add_argument("--max-measurements", type=int, default=3, help="per analysis run (default 3)")
    rehearse.add_argument(
        "--out", default="reports/rehearsal", help="report folder (default reports/rehearsal)"
    )
    rehearse.add_argument(
        "--stable-model", help="MLflow model folder for stable (default: the good demo model)"
    )
    rehearse.add_argument(
        "--canary-model", help="MLflow model folder to rehearse instead of the demo canaries"
    )
    rehearse.add_argument("--canary-version", default="2", help="model_version label of --canary-model")
    rehearse.set_defaults(func=_rehearse)

    validate = sub.add_parser(
        "validate", help="render every overlay and check schemas, pod security, references"
    )
    validate.add_argument("--repo", default=".", help="repository root (default: current folder)")
    validate.set_defaults(func=_validate)

    final = sub.add_parser("finalize", help="after a successful production rollout: alias champion → version")
    final.add_argument("--version", required=True, help="the version production now runs")
    final.add_argument("--repo", default=".", help="repository root (default: current folder)")
    final.set_defaults(func=_finalize)
