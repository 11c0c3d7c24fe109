"""``autotrader pipeline``: the orchestration commands.

``plan`` and ``validate`` are for people and CI: what each Argo workflow runs, and whether the
workflows agree with dvc.yaml and the upstream Argo schema. The others are what an Argo step runs
inside its pod (see argo/dvc-stage.yaml): ``extract`` (one broker), ``set-params``, ``state
restore|save|check`` (the hand-off between steps) and ``notify``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from autotrader.console import console
from autotrader.errors import ConfigError
from autotrader.params import BROKERS, load_params

if TYPE_CHECKING:
    from autotrader.orchestration.plan import PlanStep

DEFAULT_ARGO = "argo"
DEFAULT_GITHUB = ".github/workflows"


def _human_deadline(seconds: int | None) -> str:
    if seconds is None:
        return "no deadline"
    hours, rest = divmod(seconds, 3600)
    return (
        f"deadline {hours} h" + (f" {rest // 60} min" if rest else "")
        if hours
        else f"deadline {seconds // 60} min"
    )


def _plan(args: argparse.Namespace) -> int:
    from autotrader.orchestration.plan import plan_from_files

    plans, stages, problems = plan_from_files(args.argo, args.dvc, args.params)
    if args.json:
        out = {
            "dvc_stages": sorted(stages),
            "workflows": [
                {**{k: v for k, v in asdict(p).items() if k not in ("steps", "on_exit")},
                 "stages": [stage for _, stage in p.stage_order()],
                 "steps": [asdict(s) for s in p.steps],
                 "on_exit": [asdict(s) for s in p.on_exit]}
                for p in plans
            ],
            "problems": problems,
        }  # fmt: skip
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        lines = []
        for plan in plans:
            when = f"{' | '.join(plan.schedules)} {plan.timezone}".strip() or "on demand"
            lines.append(
                f"{plan.name}  ({plan.kind} in {plan.path}; {when}; {_human_deadline(plan.deadline_s)})"
            )
            for step in plan.steps:
                lines.append(f"  {step.order:>2}. {_describe(step)}")
            for step in plan.on_exit:
                lines.append(f"   on exit: {_describe(step)}")
            stages_run = [s for _, s in plan.stage_order()]
            lines.append(f"     DVC stages: {' → '.join(stages_run) if stages_run else '(none)'}")
            lines.append("")
        covered = {s for p in plans for _, s in p.stage_order()}
        lines.append(
            f"dvc.yaml stages ({len(stages)}): "
            + ", ".join(f"{s}{'' if s in covered else ' (NOT RUN)'}" for s in stages)
        )
        sys.stdout.write("\n".join(lines) + "\n")
    if problems:
        for problem in problems:
            console.print(f"[red]parity:[/] {problem}", soft_wrap=True)
        raise ConfigError(f"{len(problems)} disagreement(s) between {args.argo}/ and {args.dvc}")
    return 0


def _describe(step: PlanStep) -> str:
    name = step.step.split("/", 1)[-1]
    items = f" ×[{', '.join(step.items)}]" if step.items else ""
    if step.kind == "dvc":
        verb = "dvc commit" if step.mode == "commit" else "dvc repro -s"
        pull = f"  (pulls: {' '.join(step.pull)})" if step.pull else ""
        return f"{name}{items}: {verb} {' '.join(step.stages)}{pull}"
    if step.kind == "publish":
        return f"{name}: publish the feature store (dvc fetch {' '.join(step.pull)} proves the remote has it)"
    when = f"  (when {step.when})" if step.when else ""
    return f"{name}{items}: {step.detail or step.kind}{when}"


def _validate(args: argparse.Namespace) -> int:
    from autotrader.gitops.schemas import validate_objects
    from autotrader.orchestration.manifests import load_manifests
    from autotrader.orchestration.plan import check_parity, load_dvc_stages, workflow_plans
    from autotrader.orchestration.refs import check_references, embedded_objects

    manifests = load_manifests(args.argo)
    problems = [f"{m.path.name}: {p}" for m in manifests for p in validate_objects([m.doc], args.schemas)]
    problems += [
        f"{m.path.name}: template {name!r} creates {p}"
        for m, name, doc in embedded_objects(manifests)
        for p in validate_objects([doc], args.schemas)
    ]
    problems += check_references(manifests)
    problems += check_parity(
        workflow_plans(manifests), load_dvc_stages(args.dvc, args.params), Path(args.dvc).name
    )
    if args.github:
        from autotrader.orchestration.github import schema_problems, workflow_files, zizmor_problems

        problems += schema_problems(workflow_files(args.github))
        problems += zizmor_problems(args.github)
    for problem in problems:
        console.print(f"[red]✗[/] {problem}", soft_wrap=True)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the workflows")
    console.print(
        f"[green]✓[/] {len(manifests)} Argo manifest(s) valid, references resolve, parity with {args.dvc} holds"
    )
    return 0


def _extract(args: argparse.Namespace) -> int:
    from autotrader.orchestration.extract import extract_broker

    extract_broker(load_params(args.params), args.broker, args.out)
    return 0


def _set_params(args: argparse.Namespace) -> int:
    from autotrader.orchestration.overrides import apply_overrides

    changes = apply_overrides(args.params, args.assignments)
    for key, value in changes.items():
        console.print(f"params: {key} = {value!r}")
    return 0


def _state(args: argparse.Namespace) -> int:
    from autotrader.orchestration import state

    if args.action == "check":
        state.check(args.dir, args.data_end)
        return 0
    if args.action == "restore":
        state.restore(load_params(args.params), args.dir)
        if args.set:
            from autotrader.orchestration.overrides import apply_overrides

            for key, value in apply_overrides(args.params, args.set).items():
                console.print(f"params: {key} = {value!r}")
        return 0
    outputs = Path(args.outputs) if args.outputs else None
    state.save(load_params(args.params), args.dir, (args.stages or "").split(), outputs=outputs)
    return 0


def _notify(args: argparse.Namespace) -> int:
    from autotrader.orchestration.notify import build_payload, send

    status = args.status or os.environ.get("NOTIFY_STATUS", "")
    message = args.message or os.environ.get("NOTIFY_MESSAGE", "")
    if not status or not message:
        raise ConfigError("notify needs --status and --message (or NOTIFY_STATUS and NOTIFY_MESSAGE)")
    payload = build_payload(
        status, message, os.environ.get("NOTIFY_FAILURES"), os.environ.get("NOTIFY_WORKFLOW", "")
    )
    send(payload)
    console.print(f"notified: {status}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline", help="orchestration: plan/validate the Argo workflows, step helpers"
    )
    sub = parser.add_subparsers(dest="pipeline_command", required=True)

    plan = sub.add_parser("plan", help="for each Argo workflow, the DVC stages it runs and their order")
    plan.add_argument("--argo", default=DEFAULT_ARGO, help="folder of Argo manifests (default: argo)")
    plan.add_argument("--dvc", default="dvc.yaml", help="the DVC pipeline (default: dvc.yaml)")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(func=_plan)

    validate = sub.add_parser(
        "validate", help="schema, references and dvc.yaml parity of argo/ (and GitHub workflows)"
    )
    validate.add_argument("--argo", default=DEFAULT_ARGO, help="folder of Argo manifests (default: argo)")
    validate.add_argument("--dvc", default="dvc.yaml", help="the DVC pipeline (default: dvc.yaml)")
    validate.add_argument(
        "--schemas", default=None, help="upstream schema folder (default: ../shared/schemas)"
    )
    validate.add_argument(
        "--github", nargs="?", const=DEFAULT_GITHUB, default=None,
        help="also check GitHub workflows (check-jsonschema + zizmor) in this folder (default: .github/workflows)",
    )  # fmt: skip
    validate.set_defaults(func=_validate)

    extract = sub.add_parser("extract", help="one broker's share of the extract stage (Argo fan-out step)")
    extract.add_argument(
        "--broker", required=True, choices=BROKERS, help="the broker whose instruments to extract"
    )
    extract.add_argument("--out", required=True, help="workspace folder; bars go to <out>/<paths.raw>")
    extract.set_defaults(func=_extract)

    set_params = sub.add_parser("set-params", help="apply KEY=VALUE overrides to params.yaml (strict)")
    set_params.add_argument(
        "assignments", nargs="*", metavar="KEY=VALUE", help="dotted params keys and their new values"
    )
    set_params.set_defaults(func=_set_params)

    state = sub.add_parser(
        "state", help="the state hand-off between Argo steps (dvc.lock, metrics/, reports/)"
    )
    state.add_argument(
        "action",
        choices=("restore", "save", "check"),
        help="restore a step's inputs, save its outputs, or check a state is for this data.end",
    )
    state.add_argument("dir", help="the state folder (an Argo artifact path)")
    state.add_argument("--stages", default="", help="save: the stages this step ran")
    state.add_argument("--outputs", default=None, help="save: also write Argo output parameters here")
    state.add_argument("--data-end", default="", help="check: the data.end the state must be for")
    state.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="restore: then apply these params overrides"
    )
    state.set_defaults(func=_state)

    notify = sub.add_parser("notify", help="post to the webhook in AUTOTRADER_NOTIFY_WEBHOOK_URL")
    notify.add_argument("--status", default=None, help="the run's outcome (default: $NOTIFY_STATUS)")
    notify.add_argument("--message", default=None, help="the text to post (default: $NOTIFY_MESSAGE)")
    notify.set_defaults(func=_notify)
