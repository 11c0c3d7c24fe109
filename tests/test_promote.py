"""``autotrader promote`` and the DVC stage ``stages/promote.py``: refusals that need no trained model.

Both run ``autotrader.promotion.promote_model``; the full path is in test_training_pipeline."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from autotrader.errors import PromotionRefused
from autotrader.promotion import check_fresh, read_gates

from .conftest import BIN, REPO, Project


@pytest.fixture
def workdir(tmp_path: Path) -> Project:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "metrics").mkdir()
    return Project(tmp_path)


def promote(project: Project, *args: str):
    return project.run(str(BIN / "autotrader"), "promote", *args, check=False)


def test_without_a_gate_decision_promote_refuses(workdir: Project) -> None:
    proc = promote(workdir)
    assert proc.returncode != 0
    assert "metrics/gates.json: not found; run the gate stage" in proc.stderr
    assert not (workdir.root / "metrics" / "promotion.json").exists()


def test_a_passing_verdict_without_a_model_is_refused(workdir: Project) -> None:
    (workdir.root / "metrics" / "gates.json").write_text(json.dumps({"promote": True, "model_hash": "abc"}))
    proc = promote(workdir, "--if-approved")
    assert proc.returncode != 0 and "models/model: no model to promote" in proc.stderr
    assert not (workdir.root / "metrics" / "promotion.json").exists()


def test_failed_gates_with_if_approved_are_recorded_not_raised(workdir: Project) -> None:
    verdict = {"promote": False, "failed": ["win_rate 0.5 not > 0.55"]}
    (workdir.root / "metrics" / "gates.json").write_text(json.dumps(verdict))
    assert promote(workdir).returncode != 0
    proc = promote(workdir, "--if-approved")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((workdir.root / "metrics" / "promotion.json").read_text())
    assert record == {
        "model_name": "autotrader-signal",
        "promoted": False,
        "reason": "gates failed: win_rate 0.5 not > 0.55",
    }


def test_version_and_commit_belong_to_env(workdir: Project) -> None:
    for extra in (["--version", "3"], ["--image-digest", "sha256:" + "ab" * 32]):
        proc = promote(workdir, *extra)
        assert proc.returncode != 0 and "--version, --commit and --image-digest go with --env" in proc.stderr


def test_env_delegates_to_gitops(workdir: Project) -> None:
    # no overlays in this folder: the refusal comes from autotrader.gitops.promote_to_env itself
    proc = promote(workdir, "--env", "staging", "--version", "1")
    assert proc.returncode != 0 and "overlay not found" in proc.stderr


def test_unreadable_gates_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gates.json"
    path.write_text("{not json")
    with pytest.raises(PromotionRefused, match=r"gates\.json: not valid JSON"):
        read_gates(path)
    path.write_text("{}")
    with pytest.raises(PromotionRefused, match='no "promote" decision'):
        read_gates(path)


def test_without_a_recorded_hash_a_gates_file_older_than_the_model_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    gates = tmp_path / "gates.json"
    gates.write_text("{}")
    old = time.time() - 100
    os.utime(gates, (old, old))
    with pytest.raises(PromotionRefused, match="older than"):
        check_fresh({"promote": True}, gates, model)
    os.utime(gates, None)
    os.utime(model / "MLmodel", (old, old))
    assert len(check_fresh({"promote": True}, gates, model)) == 64


def stage(project: Project):
    return project.run(str(BIN / "python"), str(REPO / "stages" / "promote.py"), check=False)


def test_the_dvc_stage_records_failed_gates_and_refuses_a_missing_decision(workdir: Project) -> None:
    """``stages/promote.py`` is ``promote --if-approved``: a "no" is recorded, a missing verdict is an error."""
    proc = stage(workdir)
    assert proc.returncode != 0 and "metrics/gates.json: not found; run the gate stage" in proc.stderr
    assert not (workdir.root / "metrics" / "promotion.json").exists()
    verdict = {"promote": False, "failed": ["sharpe 1.2 not > 2"]}
    (workdir.root / "metrics" / "gates.json").write_text(json.dumps(verdict))
    proc = stage(workdir)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((workdir.root / "metrics" / "promotion.json").read_text())
    assert record == {
        "model_name": "autotrader-signal",
        "promoted": False,
        "reason": "gates failed: sharpe 1.2 not > 2",
    }
