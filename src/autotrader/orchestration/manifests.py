"""Read the Argo manifests in ``argo/`` and find their way around them.

Each YAML file may hold several documents; a ``Manifest`` is one of them with the file it came from,
so every problem we report can name the file, the object and the template at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotrader.errors import ConfigError

WORKFLOW_KINDS = ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow")


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.doc.get("metadata") or {}
        return str(meta.get("name") or meta.get("generateName") or "")

    @property
    def label(self) -> str:
        return f"{self.path.name}: {self.kind}/{self.name}"

    @property
    def workflow_spec(self) -> dict[str, Any]:
        """The part that holds templates: ``spec.workflowSpec`` for a CronWorkflow, else ``spec``."""
        spec = self.doc.get("spec") or {}
        if self.kind == "CronWorkflow":
            return spec.get("workflowSpec") or {}
        return spec

    @property
    def templates(self) -> dict[str, dict[str, Any]]:
        return {t.get("name", ""): t for t in self.workflow_spec.get("templates") or []}


def load_manifests(argo_dir: str | Path) -> list[Manifest]:
    """Every YAML document under ``argo_dir`` (sorted by path, then order in the file)."""
    argo_dir = Path(argo_dir)
    if not argo_dir.is_dir():
        raise ConfigError(f"{argo_dir}: no such folder of Argo manifests")
    found: list[Manifest] = []
    for path in sorted([*argo_dir.rglob("*.yaml"), *argo_dir.rglob("*.yml")]):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ConfigError(f"{path}: a document is not a mapping")
            found.append(Manifest(path, doc))
    return found


def template_index(manifests: list[Manifest]) -> dict[str, Manifest]:
    """WorkflowTemplates (and ClusterWorkflowTemplates) by name: what a ``templateRef`` can point at."""
    return {m.name: m for m in manifests if m.kind in ("WorkflowTemplate", "ClusterWorkflowTemplate")}


def workflow_steps(template: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(group, step) of a steps template, or (level order, task) of a DAG template; nothing otherwise."""
    for group, parallel in enumerate(template.get("steps") or []):
        for step in parallel or []:
            yield group, step
    dag = template.get("dag") or {}
    tasks = dag.get("tasks") or []
    yield from zip(dag_levels(tasks), tasks, strict=True)


def dag_levels(tasks: list[dict[str, Any]]) -> list[int]:
    """Each task's depth in its DAG (0 = no dependencies); unknown dependencies count as depth 0."""
    by_name = {t.get("name"): t for t in tasks}
    depth: dict[str, int] = {}

    def of(name: str, seen: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        task = by_name.get(name)
        if task is None or name in seen:
            return -1
        parents = task_dependencies(task)
        value = 1 + max((of(p, seen | {name}) for p in parents), default=-1)
        depth[name] = value
        return value

    return [max(of(t.get("name", ""), frozenset()), 0) for t in tasks]


def task_dependencies(task: dict[str, Any]) -> list[str]:
    """Task names a DAG task waits for, from ``dependencies`` or the ``depends`` expression."""
    names = list(task.get("dependencies") or [])
    depends = task.get("depends")
    if isinstance(depends, str):
        for token in re.findall(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z]+)?", depends):
            name = token.split(".")[0]
            if name not in ("", "AnySucceeded", "AllFailed") and name not in names:
                names.append(name)
    return names


def resolve(
    step: dict[str, Any], scope: Manifest, index: dict[str, Manifest]
) -> tuple[Manifest, dict[str, Any]] | None:
    """The manifest and template a step runs (``template`` in its own manifest or ``templateRef``)."""
    if step.get("templateRef"):
        ref = step["templateRef"]
        target = index.get(ref.get("name", ""))
        if target is None:
            return None
        template = target.templates.get(ref.get("template", ""))
        return (target, template) if template is not None else None
    name = step.get("template")
    if name and name in scope.templates:
        return scope, scope.templates[name]
    return None


def argument(step: dict[str, Any], template: dict[str, Any], name: str) -> str | None:
    """The value a step passes for input ``name`` (or the template's default), as a string."""
    for param in (step.get("arguments") or {}).get("parameters") or []:
        if param.get("name") == name:
            return None if param.get("value") is None else str(param.get("value"))
    for param in (template.get("inputs") or {}).get("parameters") or []:
        if param.get("name") == name:
            for key in ("value", "default"):
                if param.get(key) is not None:
                    return str(param[key])
            return None
    return None


def input_names(template: dict[str, Any]) -> list[str]:
    return [p.get("name", "") for p in (template.get("inputs") or {}).get("parameters") or []]
