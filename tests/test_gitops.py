"""GitOps promotion and rollback on a temporary git repo holding a copy of rollouts/, with a real
sqlite MLflow registry holding a registered sklearn model (versions 1, 2, 3)."""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from autotrader import registry
from autotrader.cli import main as cli_main
from autotrader.errors import DeployError, PromotionRefused, RegistryError
from autotrader.gitops import check_overlay, finalize, promote_to_env, rollback_env
from autotrader.gitops.git import changed_files, file_history, git
from autotrader.gitops.images import (
    DIGEST_ENV,
    DIGEST_TAG,
    IMAGE,
    kustomization_path,
    read_image_pin,
    with_digest,
)
from autotrader.gitops.kustomize import render
from autotrader.gitops.pins import pin_path, read_pin
from autotrader.gitops.promotion import PREVIOUS_TAG, pin_stack
from autotrader.gitops.schemas import SCHEMA_DIR_ENV, find_schema_dir
from autotrader.params import Params

from .conftest import BIN

REPO = Path(__file__).resolve().parents[1]
NAME = "autotrader-signal"
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32

pytestmark = [
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed"),
    pytest.mark.xdist_group("gitops"),
]


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> Path:
    """A sqlite registry with three versions of a tiny sklearn model, version 2 tagged by the gates."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    params = Params.model_validate(
        {"mlflow": {"tracking_uri": uri, "artifact_location": str(root / "artifacts")}}
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        client = registry.connect(params)
        experiment = registry.ensure_experiment(params, client)
        X = np.array([[0.0], [1.0], [2.0], [3.0]])
        model = LogisticRegression().fit(X, [0, 0, 1, 1])
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_metric("sharpe", 2.1)
            mlflow.log_metric("max_drawdown", 0.05)
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
        for _ in range(3):
            registry.register_model(info.model_uri, NAME, run_id=run.info.run_id, model_id=info.model_id)
        registry.set_version_tags(NAME, 2, {"gates_passed": "true", "gate_min_sharpe": "pass"}, client=client)
    return root


@pytest.fixture
def params(mlflow_store, monkeypatch) -> Params:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(DIGEST_ENV, raising=False)
    monkeypatch.setenv(SCHEMA_DIR_ENV, str(find_schema_dir(REPO)))
    return Params.model_validate(
        {"mlflow": {"tracking_uri": f"sqlite:///{mlflow_store / 'mlflow.db'}", "model_name": NAME}}
    )


@pytest.fixture
def repo(tmp_path, params) -> Path:
    """A git repo with rollouts/ (both overlays pinned to version 1) committed; aliases reset."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "rollouts", root / "rollouts")
    (root / "README.md").write_text("delivery test repo\n")
    git(root.parent, "init", "-q", str(root))
    git(root, "config", "user.email", "test@autotrader.invalid")
    git(root, "config", "user.name", "autotrader-test")
    for env in ("staging", "production"):
        pin_path(env, root).write_text(f"MODEL_URI=models:/{NAME}/1\nMODEL_VERSION=1\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "initial delivery manifests")
    client = registry.connect(params)
    for alias in (registry.STAGING, registry.CHAMPION):
        if registry.version_for_alias(NAME, alias, client=client):
            registry.delete_alias(NAME, alias, client=client)
    registry.set_version_tags(NAME, 2, {"integration_passed": "false"}, client=client)
    registry.set_version_tags(NAME, 3, {"integration_passed": "false"}, client=client)
    for version in (1, 2, 3):  # an empty tag is no digest (MLflow keeps tags for the whole module)
        registry.set_version_tags(NAME, version, {DIGEST_TAG: ""}, client=client)
    return root


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD").strip()


def test_promote_staging_changes_exactly_the_pin_in_one_commit(repo, params) -> None:
    registry.set_alias(NAME, registry.STAGING, 2)
    before = head(repo)
    change = promote_to_env(params, "staging", commit=True, repo=repo)
    assert (change.version, change.previous, change.changed) == ("2", "1", True)
    assert changed_files(repo, change.commit) == ["rollouts/overlays/staging/model.env"]
    assert git(repo, "rev-parse", f"{change.commit}^").strip() == before
    assert "by tag only: no image digest known" in git(repo, "show", "-s", "--format=%B", change.commit)
    assert git(repo, "status", "--porcelain").strip() == ""
    assert read_pin(pin_path("staging", repo)).uri == f"models:/{NAME}/2"
    assert check_overlay(repo / "rollouts" / "overlays" / "staging") > 0
    message = git(repo, "show", "-s", "--format=%B", change.commit)
    assert f"promote(staging): {NAME} version 2 (was 1)" in message
    assert "gate_min_sharpe = pass" in message and "sharpe = 2.1" in message
    assert "Autotrader-Model-Version: 2" in message


def test_promote_without_commit_leaves_the_change_in_the_worktree(repo, params) -> None:
    change = promote_to_env(params, "staging", version=3, commit=False, repo=repo)
    assert change.commit is None
    assert git(repo, "status", "--porcelain").split() == ["M", "rollouts/overlays/staging/model.env"]
    again = promote_to_env(params, "staging", version=3, repo=repo)
    assert not again.changed and "nothing to do" in again.summary()


def test_production_is_refused_without_integration_passed(repo, params) -> None:
    pin = pin_path("production", repo)
    before_bytes, before_head = pin.read_bytes(), head(repo)
    snapshot = registry.snapshot(NAME)
    with pytest.raises(PromotionRefused, match="integration_passed=true"):
        promote_to_env(params, "production", version=2, commit=True, repo=repo)
    assert pin.read_bytes() == before_bytes and head(repo) == before_head
    assert registry.snapshot(NAME) == snapshot


def test_production_promotion_records_the_previous_version_and_rollback_restores_it(repo, params) -> None:
    registry.set_version_tags(NAME, 2, {"integration_passed": "true", "integration_pass_rate": "1.0"})
    first = head(repo)
    change = promote_to_env(params, "production", version=2, commit=True, repo=repo)
    assert changed_files(repo, change.commit) == ["rollouts/overlays/production/model.env"]
    message = git(repo, "show", "-s", "--format=%B", change.commit)
    assert "Autotrader-Previous-Version: 1" in message and "integration_pass_rate = 1.0" in message
    assert registry.get_version(NAME, 2).tags[PREVIOUS_TAG] == "1"
    assert finalize(params, 2, repo=repo) == "none"
    assert registry.version_for_alias(NAME, registry.CHAMPION) == "2"

    back = rollback_env(params, "production", commit=True, repo=repo)
    assert (back.version, back.previous) == ("1", "2")
    assert read_pin(pin_path("production", repo)).version == "1"
    assert changed_files(repo, back.commit) == ["rollouts/overlays/production/model.env"]
    # history is appended to, never rewritten
    log = git(repo, "log", "--format=%H").split()
    assert log[:3] == [back.commit, change.commit, first]
    assert registry.version_for_alias(NAME, registry.CHAMPION) == "1"
    assert back.alias_moved == "champion: 2 → 1"
    assert check_overlay(repo / "rollouts" / "overlays" / "production") > 0


def test_production_defaults_to_the_version_staging_runs(repo, params) -> None:
    registry.set_version_tags(NAME, 3, {"integration_passed": "true"})
    promote_to_env(params, "staging", version=3, commit=True, repo=repo)
    change = promote_to_env(params, "production", commit=True, repo=repo)
    assert (change.version, change.previous) == ("3", "1")


def test_rollback_of_a_canary_never_finalized_leaves_champion_alone(repo, params) -> None:
    registry.set_version_tags(NAME, 3, {"integration_passed": "true"})
    registry.set_alias(NAME, registry.CHAMPION, 1)
    promote_to_env(params, "production", version=3, commit=True, repo=repo)
    back = rollback_env(params, "production", repo=repo)
    assert back.version == "1" and back.alias_moved is None
    assert registry.version_for_alias(NAME, registry.CHAMPION) == "1"


def test_rollbacks_walk_back_through_history(repo, params) -> None:
    for version in (2, 3):
        promote_to_env(params, "staging", version=version, commit=True, repo=repo)
    registry.set_alias(NAME, registry.STAGING, 3)
    pin = pin_path("staging", repo)
    assert pin_stack(pin) == ["1", "2", "3"]
    assert rollback_env(params, "staging", repo=repo).version == "2"
    assert registry.version_for_alias(NAME, registry.STAGING) == "2"
    assert pin_stack(pin) == ["1", "2"]
    assert rollback_env(params, "staging", repo=repo).version == "1"
    with pytest.raises(PromotionRefused, match="no previous version"):
        rollback_env(params, "staging", repo=repo)
    assert len(file_history(pin)) == 5  # initial, two promotions, two rollbacks


@pytest.mark.parametrize(
    ("version", "error", "match"),
    [
        (42, RegistryError, "version 42"),
        ("champion", DeployError, "not an immutable version"),
    ],
)
def test_bad_versions_leave_everything_as_it_was(repo, params, version, error, match) -> None:
    pin = pin_path("staging", repo)
    before, before_head, snapshot = pin.read_bytes(), head(repo), registry.snapshot(NAME)
    with pytest.raises(error, match=match):
        promote_to_env(params, "staging", version=version, commit=True, repo=repo)
    assert pin.read_bytes() == before and head(repo) == before_head
    assert registry.snapshot(NAME) == snapshot


def test_invalid_render_restores_the_pin_byte_for_byte(repo, params) -> None:
    rollout = repo / "rollouts" / "base" / "rollout.yaml"
    rollout.write_text(
        rollout.read_text().replace("progressDeadlineSeconds: 900", "progressDeadlineSeconds: soon")
    )
    pin = pin_path("staging", repo)
    pin.write_bytes(pin.read_bytes() + b"# pinned by hand\n")
    before = pin.read_bytes()
    with pytest.raises(DeployError, match="'soon' is not of type 'integer'"):
        promote_to_env(params, "staging", version=2, commit=True, repo=repo)
    assert pin.read_bytes() == before


def test_unknown_environment_and_missing_staging_alias_are_clear(repo, params) -> None:
    with pytest.raises(DeployError, match="unknown environment 'prod'"):
        promote_to_env(params, "prod", repo=repo)
    with pytest.raises(PromotionRefused, match="alias 'staging'"):
        promote_to_env(params, "staging", repo=repo)


def test_finalize_refuses_a_version_production_does_not_run(repo, params) -> None:
    with pytest.raises(PromotionRefused, match="production runs version 1"):
        finalize(params, 2, repo=repo)


def test_cli_rollback_and_finalize(repo, params, tmp_path, capsys) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"mlflow:\n  tracking_uri: {params.mlflow.tracking_uri}\n  model_name: {NAME}\n")
    promote_to_env(params, "staging", version=2, commit=True, repo=repo)
    code = cli_main(["--params", str(params_file), "rollback", "--env", "staging", "--repo", str(repo)])
    assert code == 0
    assert read_pin(pin_path("staging", repo)).version == "1"
    code = cli_main(
        ["--params", str(params_file), "rollout", "finalize", "--version", "3", "--repo", str(repo)]
    )
    assert code == 1  # refused: production runs version 1
    assert "production runs version 1" in capsys.readouterr().err
    proc = subprocess.run(
        [str(Path(shutil.which("git") or "git")), "-C", str(repo), "log", "--oneline"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.splitlines()[0].split(" ", 1)[1].startswith("rollback(staging)")


def test_rollback_to_a_version_this_registry_lacks_restores_the_pin_and_leaves_aliases(repo, params) -> None:
    """Git history decides what ran before; a registry that does not know it (a laptop's) must not block."""
    pin = pin_path("staging", repo)
    pin.write_text(f"MODEL_URI=models:/{NAME}/42\nMODEL_VERSION=42\n")  # what the cluster's registry ran
    git(repo, "commit", "-q", "-am", "pinned by another registry")
    registry.set_alias(NAME, registry.STAGING, 2)
    promote_to_env(params, "staging", commit=True, repo=repo)
    assert read_pin(pin).version == "2"
    back = rollback_env(params, "staging", repo=repo)
    assert (back.version, back.previous, back.alias_moved) == ("42", "2", None)
    assert read_pin(pin).version == "42"
    assert changed_files(repo, back.commit) == ["rollouts/overlays/staging/model.env"]
    assert "not in this registry" in git(repo, "log", "-1", "--format=%B")
    assert registry.version_for_alias(NAME, registry.STAGING) == "2"  # left alone, with a warning


def image_refs(root: Path, env: str) -> set[str]:
    """Every container image in the rendered overlay (the Rollout's pods and the integration Job)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(render(root / "rollouts" / "overlays" / env))
    return found


def test_promote_with_an_image_digest_pins_the_image_by_digest_in_the_same_commit(repo, params) -> None:
    kustomization = kustomization_path("staging", repo)
    before = kustomization.read_text()
    tag = read_image_pin(kustomization).tag
    change = promote_to_env(params, "staging", version=2, commit=True, repo=repo, image_digest=DIGEST)
    assert sorted(changed_files(repo, change.commit)) == [
        "rollouts/overlays/staging/kustomization.yaml",
        "rollouts/overlays/staging/model.env",
    ]
    assert git(repo, "status", "--porcelain").strip() == ""
    edits = [line for line in difflib.ndiff(before.splitlines(), kustomization.read_text().splitlines())
             if line.startswith(("+ ", "- "))]  # fmt: skip
    assert edits == [f"+     digest: {DIGEST}"]  # comments and layout kept
    expected = f"{IMAGE}:{tag}@{DIGEST}"
    assert image_refs(repo, "staging") == {expected}  # the Rollout and the integration-test Job
    assert check_overlay(repo / "rollouts" / "overlays" / "staging") > 0  # schemas, pod policy, references
    message = git(repo, "show", "-s", "--format=%B", change.commit)
    assert f"image: {expected} (digest from --image-digest)" in message
    assert f"Autotrader-Image-Digest: {DIGEST}" in message
    assert change.image == expected and expected in change.summary()
    assert read_pin(pin_path("staging", repo)).version == "2"
    # production's overlay is another environment: untouched
    assert read_image_pin(kustomization_path("production", repo)).digest is None


def test_the_digest_comes_from_the_option_then_the_environment_then_the_registry_tag(
    repo, params, monkeypatch
) -> None:
    kustomization = kustomization_path("staging", repo)
    registry.set_version_tags(NAME, 3, {DIGEST_TAG: f"{IMAGE}@{OTHER}"})
    change = promote_to_env(params, "staging", version=3, repo=repo)
    assert read_image_pin(kustomization).digest == OTHER
    assert change.image_note == f"digest from registry tag {DIGEST_TAG}"
    monkeypatch.setenv(DIGEST_ENV, DIGEST)
    again = promote_to_env(params, "staging", version=3, repo=repo)  # same model, new image: still a change
    assert again.changed and read_image_pin(kustomization).digest == DIGEST
    assert again.image_note == f"digest from {DIGEST_ENV}"
    third = "sha256:" + "ef" * 32
    last = promote_to_env(params, "staging", version=3, repo=repo, image_digest=third)
    assert read_image_pin(kustomization).digest == third and last.image_note == "digest from --image-digest"
    same = promote_to_env(params, "staging", version=3, repo=repo, image_digest=third)
    assert not same.changed and "nothing to do" in same.summary()
    assert image_refs(repo, "staging") == {f"{IMAGE}:{read_image_pin(kustomization).tag}@{third}"}


def test_without_a_known_digest_the_image_pin_stays_and_the_result_says_so(repo, params) -> None:
    kustomization = kustomization_path("production", repo)
    before = kustomization.read_bytes()
    registry.set_version_tags(NAME, 2, {"integration_passed": "true"})
    change = promote_to_env(params, "production", version=2, commit=True, repo=repo)
    assert kustomization.read_bytes() == before
    assert changed_files(repo, change.commit) == ["rollouts/overlays/production/model.env"]
    assert "no image digest known" in change.summary() and DIGEST_ENV in change.summary()
    message = git(repo, "show", "-s", "--format=%B", change.commit)
    assert "by tag only" in message and "Autotrader-Image-Digest" not in message


@pytest.mark.parametrize(
    ("option", "env_value", "match"),
    [
        ("sha256:1234", None, "--image-digest: 'sha256:1234' is not an image digest"),
        ("latest", None, "is not an image digest"),
        (f"ghcr.io/someone/else@{DIGEST}", None, "not of ghcr.io/autotrader/autotrader-serving"),
        (None, "SHA256:" + "AB" * 32, f"{DIGEST_ENV}: .* is not an image digest"),
    ],
)
def test_a_malformed_digest_changes_nothing(repo, params, monkeypatch, option, env_value, match) -> None:
    if env_value:
        monkeypatch.setenv(DIGEST_ENV, env_value)
    files = [pin_path("staging", repo), kustomization_path("staging", repo)]
    before, before_head = [f.read_bytes() for f in files], head(repo)
    with pytest.raises(DeployError, match=match):
        promote_to_env(params, "staging", version=2, commit=True, repo=repo, image_digest=option)
    assert [f.read_bytes() for f in files] == before and head(repo) == before_head


def test_an_invalid_render_restores_the_pin_and_the_image_entry(repo, params) -> None:
    rollout = repo / "rollouts" / "base" / "rollout.yaml"
    rollout.write_text(
        rollout.read_text().replace("progressDeadlineSeconds: 900", "progressDeadlineSeconds: soon")
    )
    files = [pin_path("staging", repo), kustomization_path("staging", repo)]
    before = [f.read_bytes() for f in files]
    with pytest.raises(DeployError, match="'soon' is not of type 'integer'"):
        promote_to_env(params, "staging", version=2, commit=True, repo=repo, image_digest=DIGEST)
    assert [f.read_bytes() for f in files] == before


def test_cli_promote_takes_the_image_digest(repo, params, tmp_path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"mlflow:\n  tracking_uri: {params.mlflow.tracking_uri}\n  model_name: {NAME}\n")
    argv = ["--params", str(params_file), "promote", "--env", "staging", "--version", "2", "--commit"]
    proc = subprocess.run(
        [str(BIN / "autotrader"), *argv, "--image-digest", f"{IMAGE}:0.1.0@{DIGEST}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    said = proc.stderr.replace("\n", "")  # the console (stderr) wraps long lines
    assert f"@{DIGEST} (digest from --image-digest)" in said
    assert read_image_pin(kustomization_path("staging", repo)).digest == DIGEST
    assert git(repo, "status", "--porcelain").strip() == ""


def test_the_digest_edit_keeps_the_file_and_replaces_an_earlier_digest() -> None:
    text = (
        "# comment\nimages:\n- name: other/image\n  newTag: '1'\n"
        f'- name: {IMAGE}  # the server\n  newTag: "0.2.0"\n  # trailing comment\n'
        "configMapGenerator: []\n"
    )
    once = with_digest(text, DIGEST)
    assert once == text.replace('newTag: "0.2.0"\n', f'newTag: "0.2.0"\n  digest: {DIGEST}\n')
    twice = with_digest(once, OTHER)
    assert twice == once.replace(DIGEST, OTHER)
    with pytest.raises(DeployError, match="no images: entry named"):
        with_digest("images:\n  - name: other/image\n    newTag: '1'\n", DIGEST)
