"""The app of apps as Argo CD sees it: render every Application of ``rollouts/argocd`` from this checkout.

Why here and not only in Argo CD: tests validate every object the platform would sync (schemas, pod
security, AppProject permissions) before anything reaches a cluster. An Application's source is rendered
the way Argo CD's repo server does it for the two kinds used here: a folder with a kustomization.yaml is
``kubectl kustomize``'d; any other folder is a plain "directory" source whose YAML files (filtered by
``directory.include``, a glob) are read as they are.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotrader.errors import DeployError
from autotrader.gitops.kustomize import find, render

ROOT_DIR = Path("rollouts") / "argocd"
ROOT_APP = "autotrader-root"


@dataclass(frozen=True)
class RenderedApp:
    """One Application and the objects its sources render (``None`` when a source folder is absent)."""

    app: dict[str, Any]
    objects: list[dict[str, Any]] | None
    missing: tuple[str, ...]

    @property
    def name(self) -> str:
        return str(self.app["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.app["spec"]["destination"]["namespace"])


def sources(app: dict[str, Any]) -> list[dict[str, Any]]:
    """``spec.sources`` of a multi-source Application, else ``[spec.source]``."""
    spec = app.get("spec") or {}
    found = spec.get("sources") or ([spec["source"]] if spec.get("source") else [])
    if not found:
        raise DeployError(f"Application {app.get('metadata', {}).get('name')}: no source")
    return list(found)


def render_source(source: dict[str, Any], repo: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects of one source: kustomize for a kustomization folder, else the folder's YAML files."""
    folder = Path(repo) / source["path"]
    if (folder / "kustomization.yaml").is_file():
        return render(folder)
    include = (source.get("directory") or {}).get("include", "*")
    objects: list[dict[str, Any]] = []
    for path in sorted(folder.iterdir()):
        if path.suffix in (".yaml", ".yml", ".json") and fnmatch.fnmatch(path.name, include):
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def render_app(app: dict[str, Any], repo: str | os.PathLike[str]) -> RenderedApp:
    """Every object of ``app``'s sources, in source order; absent source folders are listed, not fatal."""
    objects: list[dict[str, Any]] = []
    missing: list[str] = []
    for source in sources(app):
        if not (Path(repo) / source["path"]).is_dir():
            missing.append(source["path"])
            continue
        objects.extend(render_source(source, repo))
    return RenderedApp(app, None if missing else objects, tuple(missing))


def app_tree(repo: str | os.PathLike[str] = ".") -> tuple[list[dict[str, Any]], list[RenderedApp]]:
    """The root folder's objects, and each child Application (every Application but the root) rendered."""
    root_objects = render(Path(repo) / ROOT_DIR)
    children = [
        render_app(app, repo)
        for app in find(root_objects, "Application")
        if app["metadata"]["name"] != ROOT_APP
    ]
    return root_objects, children


def namespace_of(obj: dict[str, Any], default: str) -> str:
    """Where a namespaced object lands: its own metadata.namespace, else the Application's destination."""
    return str((obj.get("metadata") or {}).get("namespace") or default)


def sync_wave(obj: dict[str, Any]) -> int:
    """``argocd.argoproj.io/sync-wave`` (0 when unset)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return int(annotations.get("argocd.argoproj.io/sync-wave", "0"))
