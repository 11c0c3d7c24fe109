"""Render kustomize overlays to objects, the way Argo CD will (``kubectl kustomize``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from autotrader.errors import DeployError

ENVIRONMENTS: tuple[str, ...] = ("staging", "production")


def overlay_dir(env: str, repo: str | os.PathLike[str] = ".") -> Path:
    """``<repo>/rollouts/overlays/<env>``; a DeployError for an unknown environment."""
    if env not in ENVIRONMENTS:
        raise DeployError(f"unknown environment {env!r}: choose one of {', '.join(ENVIRONMENTS)}")
    return Path(repo) / "rollouts" / "overlays" / env


def kustomize_command() -> list[str]:
    """``kubectl kustomize`` (kustomize built into kubectl), else a standalone ``kustomize build``."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    raise DeployError("neither kubectl nor kustomize is on PATH: install kubectl to render the overlays")


def render_text(directory: str | os.PathLike[str], timeout: float = 60.0) -> str:
    """The rendered multi-document YAML of a kustomization folder."""
    directory = Path(directory)
    if not (directory / "kustomization.yaml").is_file():
        raise DeployError(f"{directory}: no kustomization.yaml")
    proc = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise DeployError(f"{directory}: kustomize failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def render(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rendered objects of a kustomization folder, in kustomize's order."""
    return [doc for doc in yaml.safe_load_all(render_text(directory)) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Objects of ``kind`` (and ``name``, if given)."""
    return [
        obj
        for obj in objects
        if obj.get("kind") == kind and (name is None or obj.get("metadata", {}).get("name") == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """Exactly one object of ``kind`` (and ``name``); a DeployError otherwise."""
    found = find(objects, kind, name)
    if len(found) != 1:
        what = f"{kind}/{name}" if name else kind
        raise DeployError(f"expected exactly one {what} in the rendered manifests, found {len(found)}")
    return found[0]
