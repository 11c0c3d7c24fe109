"""Upstream linters on what we ship: ``kubectl-argo-rollouts lint`` on every rendered Rollout and
``argo lint --offline`` (the Argo Workflows CLI) on everything under argo/. Each must also bite."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotrader.gitops.kustomize import render

from .cluster import REPO

pytestmark = pytest.mark.xdist_group("e2e-lint")

OVERLAYS = {
    "production": REPO / "rollouts" / "overlays" / "production",
    "staging": REPO / "rollouts" / "overlays" / "staging",
    "e2e-production": REPO / "e2e" / "overlays" / "production",
}


def _lint_rollout(
    e2e_bin: Path, objects: list[dict[str, Any]], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return subprocess.run(
        [str(e2e_bin / "kubectl-argo-rollouts"), "lint", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_kubectl_argo_rollouts_lint_passes_every_rendered_rollout(
    name: str, e2e_bin: Path, tmp_path: Path
) -> None:
    objects = render(OVERLAYS[name])
    assert any(o["kind"] == "Rollout" for o in objects)
    done = _lint_rollout(e2e_bin, objects, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def _rollout(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Rollout")


def _weight_over_100(objects: list[dict[str, Any]]) -> None:
    steps = _rollout(objects)["spec"]["strategy"]["canary"]["steps"]
    next(s for s in steps if "setWeight" in s)["setWeight"] = 150


def _header_route_not_managed(objects: list[dict[str, Any]]) -> None:
    _rollout(objects)["spec"]["strategy"]["canary"]["trafficRouting"]["managedRoutes"] = [{"name": "other"}]


def _unknown_route(objects: list[dict[str, Any]]) -> None:
    _rollout(objects)["spec"]["strategy"]["canary"]["trafficRouting"]["istio"]["virtualService"]["routes"] = [
        "nope"
    ]


@pytest.mark.parametrize("edit", [_weight_over_100, _header_route_not_managed, _unknown_route])
def test_the_rollouts_linter_bites(edit: Any, e2e_bin: Path, tmp_path: Path) -> None:
    objects = copy.deepcopy(render(OVERLAYS["production"]))
    edit(objects)
    done = _lint_rollout(e2e_bin, objects, tmp_path)
    assert done.returncode != 0, f"{edit.__name__} passed the linter:\n{done.stdout}"


def test_argo_lint_offline_passes_everything_under_argo(e2e_bin: Path) -> None:
    done = subprocess.run(
        [str(e2e_bin / "argo"), "lint", "--offline", str(REPO / "argo")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_argo_lint_bites_on_a_dangling_template_reference(e2e_bin: Path, tmp_path: Path) -> None:
    for path in (REPO / "argo").glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    broken = tmp_path / "data-pipeline.yaml"
    text = broken.read_text()
    assert "templateRef" in text
    broken.write_text(text.replace("name: dvc-stage", "name: dvc-stage-missing", 1))
    done = subprocess.run(
        [str(e2e_bin / "argo"), "lint", "--offline", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode != 0, done.stdout
