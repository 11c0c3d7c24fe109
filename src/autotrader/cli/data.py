"""``autotrader data rollback --to <git-rev>``: restore the raw bars and the feature store of a commit.

Thin: the work (find in the cache or fetch from the remote, build and verify beside the data, swap
atomically) is ``autotrader.datarollback``; the runbook is docs/runbooks/data-rollback.md.
"""

from __future__ import annotations

import argparse

from autotrader.console import console
from autotrader.params import load_params


def _rollback(args: argparse.Namespace) -> int:
    from autotrader.datarollback import rollback_data

    restored = rollback_data(load_params(args.params), args.to, root=args.repo)
    for tree in restored:
        console.print(
            f"[green]restored[/] {tree.path} ← {tree.md5} ({tree.files} files, {tree.bytes} bytes, hashes verified)"
        )
    console.print(
        f"The data are those of {args.to}; dvc.lock still names the current ones: see "
        "docs/runbooks/data-rollback.md for the next step (fix the source, then dvc repro, or commit)."
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="operations on the versioned data (raw bars, feature store)")
    commands = parser.add_subparsers(dest="data_command", required=True)
    rollback = commands.add_parser(
        "rollback",
        help="restore data/raw and data/features to what a commit's dvc.lock names",
        description=(
            "Read <rev>:dvc.lock, find the raw bars' and the feature store's objects in the DVC cache (fetching "
            "them from the default remote if needed), rebuild both trees beside the current ones with every "
            "file's hash checked, then swap them in. Refuses, changing nothing, when the data cannot be found."
        ),
    )
    rollback.add_argument("--to", required=True, metavar="REV", help="git revision whose dvc.lock to restore")
    rollback.add_argument("--repo", default=".", help="repository root (default: current folder)")
    rollback.set_defaults(func=_rollback)
