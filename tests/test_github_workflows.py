"""The GitHub Actions workflows: the GitHub workflow schema, zizmor's audit, and our own rules.

Our rules: third-party actions pinned by full commit SHA, least-privilege permissions (nothing at
the top, grants per job), checkout without persisted credentials, secrets only through `env:`, and
the triggers each workflow exists for. Each tool also runs on a broken copy to prove it bites.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotrader.orchestration.github import schema_problems, workflow_files, zizmor_problems
from autotrader.orchestration.overrides import apply_overrides
from tests.test_argo_manifests import cli_commands, unparsable

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
FILES = workflow_files(WORKFLOWS)
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def load(path: Path) -> dict[Any, Any]:
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on".
    doc = yaml.safe_load(path.read_text())
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def steps(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_name, step) for job_name, job in doc["jobs"].items() for step in job.get("steps", [])]


def test_the_four_workflows_exist() -> None:
    assert [p.name for p in FILES] == ["ci.yml", "deploy.yml", "pr.yml", "train.yml"]


def test_workflows_match_the_github_workflow_schema() -> None:
    assert schema_problems(FILES) == []


def test_zizmor_finds_nothing() -> None:
    assert zizmor_problems(WORKFLOWS) == []


def test_the_schema_check_bites(tmp_path: Path) -> None:
    bad = tmp_path / "ci.yml"
    bad.write_text(
        (WORKFLOWS / "ci.yml").read_text().replace("runs-on: ubuntu-24.04", "run-on: ubuntu-24.04", 1)
    )
    problems = schema_problems([bad])
    assert problems and "ci.yml" in problems[0]


def test_zizmor_bites_on_an_unpinned_action_and_persisted_credentials(tmp_path: Path) -> None:
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    text = (WORKFLOWS / "ci.yml").read_text()
    text = text.replace(
        "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065 # v5.6.0", "someone/setup-python@v5", 1
    )
    text = text.replace("        with:\n          persist-credentials: false\n", "", 1)  # default: persisted
    (folder / "ci.yml").write_text(text)
    problems = zizmor_problems(folder)
    assert problems and "unpinned-uses" in problems[0] and "artipacked" in problems[0]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_by_commit_sha(path: Path) -> None:
    for job, step in steps(load(path)):
        if "uses" in step:
            assert SHA_PIN.match(step["uses"]), (
                f"{path.name} {job}: {step['uses']} is not pinned by a full commit SHA"
            )


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_permissions_are_least_privilege(path: Path) -> None:
    doc = load(path)
    assert doc["permissions"] == {}, f"{path.name}: top-level permissions must be {{}}"
    for name, job in doc["jobs"].items():
        grants = job.get("permissions")
        assert isinstance(grants, dict) and grants, f"{path.name} {name}: no per-job permissions"
        assert grants.get("contents") in ("read", "write")
        writes = {k for k, v in grants.items() if v == "write"}
        allowed = {
            "ci.yml": set(),
            "deploy.yml": set(),
            "pr.yml": {"pull-requests"},
            "train.yml": {"contents", "pull-requests"},
        }
        assert writes <= allowed[path.name], f"{path.name} {name}: writes {writes}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_checkouts_do_not_persist_credentials_and_secrets_stay_out_of_scripts(path: Path) -> None:
    for job, step in steps(load(path)):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False, f"{path.name} {job}"
        run = step.get("run", "")
        assert "${{" not in run, f"{path.name} {job}: expression expanded inside a script (use env:)"
        assert not re.search(r"echo[^\n|]*\$\{?(AWS_SECRET|MLFLOW_TRACKING_PASSWORD|GH_TOKEN)", run), (
            f"{path.name} {job}"
        )
    text = path.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{20,}", text)


def test_triggers() -> None:
    ci, pr, train, deploy = (load(WORKFLOWS / n) for n in ("ci.yml", "pr.yml", "train.yml", "deploy.yml"))
    assert set(ci["on"]) == {"push", "pull_request"}
    assert set(pr["on"]) == {"pull_request"}
    assert {"dvc.yaml", "params.yaml", "stages/**", "src/**"} <= set(pr["on"]["pull_request"]["paths"])
    assert train["on"]["schedule"] == [{"cron": "0 3 * * 0"}] and "workflow_dispatch" in train["on"]
    assert deploy["on"] == {"push": {"branches": ["main"], "paths": ["rollouts/overlays/**/model.env"]}}


def test_ci_runs_lint_tests_and_validation() -> None:
    runs = " ".join(step.get("run", "") for _, step in steps(load(WORKFLOWS / "ci.yml")))
    for command in (
        "make lint",
        "make test",
        "apt-get install",
        "prometheus",
        "autotrader pipeline validate --github",
    ):
        assert command in runs


def test_ci_audits_both_locks_with_a_hash_locked_pip_audit() -> None:
    job = load(WORKFLOWS / "ci.yml")["jobs"]["audit"]
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "--no-deps --require-hashes -r requirements-audit.lock" in runs
    audit = runs[runs.index('pip-audit" ') :]
    for flag in ("--strict", "--require-hashes", "--disable-pip", "--requirement requirements.lock",
                 "--requirement requirements-serving.lock"):  # fmt: skip
        assert flag in audit, flag
    assert job["permissions"] == {"contents": "read"}


def test_pr_workflow_reports_params_metrics_and_gates() -> None:
    doc = load(WORKFLOWS / "pr.yml")
    runs = " ".join(step.get("run", "") for _, step in steps(doc))
    for command in ("dvc exp run --name base $SMALL", "dvc exp run --name head $SMALL", "dvc params diff base head --md",
                    "dvc metrics diff base head --md", "metrics/gates.json", "dvc plots diff", "gh pr comment"):  # fmt: skip
        assert command in runs
    assert any(step.get("uses", "").startswith("actions/upload-artifact@") for _, step in steps(doc))


def test_pr_small_configuration_is_valid_params(tmp_path: Path) -> None:
    """Every `-S` of the PR run is a real params key with a valid value (a typo would fail the PR job)."""
    small = load(WORKFLOWS / "pr.yml")["env"]["SMALL"].split()
    assignments = [a for a in small if a != "-S"]
    assert len(assignments) == small.count("-S") >= 5
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    changes = apply_overrides(tmp_path / "params.yaml", assignments)
    assert changes["data.source"] == "sim"


def test_train_and_deploy_do_what_they_are_for() -> None:
    train = " ".join(step.get("run", "") for _, step in steps(load(WORKFLOWS / "train.yml")))
    assert "dvc repro --pull" in train and "dvc push" in train
    assert "autotrader promote --env staging" in train and "gh pr create" in train
    job = load(WORKFLOWS / "train.yml")["jobs"]["train"]
    assert all(
        v.startswith("${{ secrets.") for k, v in job["env"].items() if "SECRET" in k or "PASSWORD" in k
    )
    deploy = " ".join(step.get("run", "") for _, step in steps(load(WORKFLOWS / "deploy.yml")))
    assert (
        "autotrader deploy check --model-uri" in deploy
        and "autotrader deploy integration --model-uri" in deploy
    )
    assert "--record" in deploy


def test_every_autotrader_command_is_one_the_cli_accepts() -> None:
    scripts = "\n".join(step.get("run", "") for path in FILES for _, step in steps(load(path)))
    commands = cli_commands(scripts)
    assert {" ".join(c[:2]) for c in commands} >= {
        "pipeline validate",
        "pipeline plan",
        "deploy check",
        "pipeline state",
    }
    assert unparsable(commands) == []
