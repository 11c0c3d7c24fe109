"""The command line reads well: a version, plain help everywhere, "did you mean", no stray files on errors."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from autotrader import __version__
from autotrader.cli import all_parsers, build_parser
from autotrader.errors import ConfigError
from autotrader.params import load_params

from .conftest import BIN, REPO, tool_env


def test_version() -> None:
    proc = subprocess.run(
        [str(BIN / "autotrader"), "--version"], capture_output=True, text=True, env=tool_env()
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"autotrader {__version__}"


def test_every_command_has_plain_help_and_every_argument_says_what_it_is() -> None:
    problems = []
    for parser in all_parsers(build_parser()):
        text = parser.format_help()
        if "``" in text:
            problems.append(f"{parser.prog}: RST backticks in its help")
        if not parser.description:
            problems.append(f"{parser.prog}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                problems += [
                    f"{parser.prog} {c.dest}: no help" for c in action._choices_actions if not c.help
                ]
            elif not action.help:
                problems.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not problems, "\n".join(problems)


def test_rollback_env_and_reports_explain_themselves(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, words in (
        (["rollback", "--help"], "environment whose model pin"),
        (["reports", "--help"], "Data Docs"),
    ):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv)
        assert exit_.value.code == 0
        assert words in " ".join(capsys.readouterr().out.split())


def test_a_misspelt_params_key_gets_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    path.write_text(text.replace("  horizon:", "  horizn:", 1).replace("\ngates:", "\ngatez:", 1))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert "train.horizn: Extra inputs are not permitted (did you mean 'horizon'?)" in message
    assert "gatez: Extra inputs are not permitted (did you mean 'gates'?)" in message


def test_a_key_with_nothing_close_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("mlflow:\n  zzz: 1\n")
    with pytest.raises(ConfigError, match=r"mlflow.zzz: .*known keys: tracking_uri, artifact_location"):
        load_params(path)


def test_deploy_check_of_a_missing_model_writes_nothing(tmp_path: Path) -> None:
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    proc = subprocess.run(
        [str(BIN / "autotrader"), "deploy", "check", "--model-uri", "models:/autotrader-signal/1"],
        cwd=tmp_path, capture_output=True, text=True, env=tool_env(), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "no MLflow registry at mlflow.db" in proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no mlflow.db, nothing else
