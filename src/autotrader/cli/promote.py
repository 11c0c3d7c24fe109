"""``autotrader promote``: register the gated model in MLflow and point ``staging`` at it.

A thin command over ``autotrader.promotion.promote_model`` (the same function the DVC stage
``stages/promote.py`` runs): only when ``metrics/gates.json`` says ``"promote": true`` for this very
model and its signature matches the feature store; a refusal changes nothing in the registry.
``--if-approved`` (what the DVC stage does) turns "the gates said no" into a recorded outcome
(``metrics/promotion.json`` with ``"promoted": false``) and exit 0; every other refusal stays an error.

``--env staging|production`` is the GitOps side instead: pin a registered version (and a commit) in
the Argo Rollouts overlays via ``autotrader.gitops.promote_to_env``.
"""

from __future__ import annotations

import argparse

from autotrader.console import console
from autotrader.errors import PromotionRefused
from autotrader.params import load_params
from autotrader.promotion import promote_model


def _run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    if args.env:
        from autotrader.gitops import promote_to_env

        change = promote_to_env(
            params, env=args.env, version=args.version, commit=args.commit, image_digest=args.image_digest
        )
        summary = change.summary() if hasattr(change, "summary") else str(change)
        console.print(f"promote: {summary}")
        return 0
    if args.version or args.commit or args.image_digest:
        raise PromotionRefused("--version, --commit and --image-digest go with --env staging|production")
    promote_model(params, if_approved=args.if_approved)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "promote",
        help="register the gated model in MLflow (alias staging), or pin a version in an environment",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--if-approved",
        action="store_true",
        help="when the gates failed, record promoted: false in metrics/promotion.json and exit 0",
    )
    parser.add_argument("--env", choices=["staging", "production"], help="pin a version in this environment")
    parser.add_argument("--version", help="registered model version to pin (with --env; default: the alias)")
    parser.add_argument("--commit", action="store_true", help="commit the pin change in git (with --env)")
    parser.add_argument(
        "--image-digest",
        help="pin the serving image by this digest (sha256:… or ghcr.io/autotrader/autotrader-serving@sha256:…) "
        "in the same change (with --env; default: $AUTOTRADER_IMAGE_DIGEST, else the version's registry tag "
        "serving_image_digest, else the overlay's pin stays and the output says no digest is known)",
    )
    parser.set_defaults(func=_run)
