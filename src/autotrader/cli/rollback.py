"""``autotrader rollback --env staging|production``: pin the previous model version again, by a new commit."""

from __future__ import annotations

import argparse
from pathlib import Path

from autotrader.console import console
from autotrader.params import load_params


def _rollback(args: argparse.Namespace) -> int:
    from autotrader.gitops import rollback_env

    change = rollback_env(load_params(args.params), args.env, commit=not args.no_commit, repo=Path(args.repo))
    console.print(f"[green]rolled back[/] {change.summary()}")
    if change.commit:
        console.print("Push the commit; Argo CD syncs it and the Rollout moves back to the previous version.")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rollback",
        help="pin the previously deployed model version of an environment again (a new git commit)",
        description=(
            "Read the git history of rollouts/overlays/<env>/model.env, pin the version deployed before the "
            "current one (checked: kustomize render, upstream schemas, pod security) and commit that file "
            "alone. The registry alias of the environment (staging, or champion for production) moves back "
            "if it pointed at the version being rolled back."
        ),
    )
    parser.add_argument(
        "--env",
        required=True,
        choices=("staging", "production"),
        help="the environment whose model pin goes back one version",
    )
    parser.add_argument("--no-commit", action="store_true", help="change the file but do not commit it")
    parser.add_argument("--repo", default=".", help="repository root (default: current folder)")
    parser.set_defaults(func=_rollback)
