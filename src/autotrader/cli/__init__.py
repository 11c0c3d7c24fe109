"""The ``autotrader`` command. Each module in this package adds its own subcommands.

A module joins by defining ``register(subparsers)`` which adds parsers whose ``func`` default
takes the parsed ``argparse.Namespace`` and returns an exit code. Discovery keeps this file free of
edits when a command is added.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from autotrader import __version__
from autotrader.console import run_guarded


def plain(text: str | None) -> str | None:
    """Help text as a terminal shows it: docstrings' RST literals (double backticks) dropped."""
    return None if text is None else text.replace("``", "")


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand parser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += all_parsers(sub)
    return found


def _tidy(parser: argparse.ArgumentParser) -> None:
    """Plain help everywhere; a subcommand without a description shows its one-line help there."""
    for action in parser._actions:
        action.help = plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help)
                sub = action.choices[choice.dest]
                if not sub.description and choice.help:
                    sub.description = choice.help[0].upper() + choice.help[1:] + "."
                _tidy(sub)
    parser.description = plain(parser.description)
    parser.epilog = plain(parser.epilog)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotrader",
        description="AutoTrader MLOps: the data, the model's registry and its deployment, from the command line.",
        epilog="The pipeline itself runs with dvc repro; see README.md.",
    )
    parser.add_argument("--version", action="version", version=f"autotrader {__version__}")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    _tidy(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
