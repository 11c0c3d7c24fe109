"""Dangling references in Argo manifests: what the schema cannot see and the controller finds too late.

The upstream schema checks each object's shape, but not that a ``templateRef`` names a
WorkflowTemplate that exists, that ``template: validate`` names a template of the same manifest,
that a DAG dependency names a task, or that ``{{steps.gate.outputs.parameters.decision}}`` names a step
and an output that exist. Argo reports those only when a run reaches them — at 02:00. These checks run
in the test suite and in CI instead, over every file in ``argo/`` together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from autotrader.orchestration.manifests import (
    WORKFLOW_KINDS,
    Manifest,
    resolve,
    task_dependencies,
    template_index,
    workflow_steps,
)

_STEP_REF = re.compile(
    r"\{\{\s*=?\s*(steps|tasks)\.([A-Za-z0-9_-]+)\.outputs\.(parameters|artifacts)\.([A-Za-z0-9_-]+)"
)
_STEP_ANY = re.compile(r"\{\{\s*(steps|tasks)\.([A-Za-z0-9_-]+)\.")
_INPUT_REF = re.compile(r"\{\{\s*inputs\.(parameters|artifacts)\.([A-Za-z0-9_-]+)\s*\}\}")
_OUTPUT_REF = re.compile(r"\{\{\s*outputs\.(parameters|artifacts)\.([A-Za-z0-9_-]+)\s*\}\}")
_WORKFLOW_PARAM = re.compile(r"\{\{\s*workflow\.parameters\.([A-Za-z0-9_-]+)\s*\}\}")


def _inputs(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return list((template.get("inputs") or {}).get(kind) or [])


def _outputs(template: dict[str, Any], kind: str) -> set[str]:
    return {o.get("name", "") for o in (template.get("outputs") or {}).get(kind) or []}


def _calls(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, call) for every step/task, step-level onExit and lifecycle hook of a template."""
    for _, step in workflow_steps(template):
        where = f"step {step.get('name')!r}"
        yield where, step
        if step.get("onExit"):
            yield f"{where} onExit", {"template": step["onExit"]}
        for hook_name, hook in (step.get("hooks") or {}).items():
            yield f"{where} hook {hook_name!r}", hook


def _argument_problems(call: dict[str, Any], target: dict[str, Any], target_label: str) -> list[str]:
    """Arguments a call passes that the target does not declare, and required inputs it leaves out."""
    problems = []
    args = call.get("arguments") or {}
    for kind in ("parameters", "artifacts"):
        declared = {p.get("name"): p for p in _inputs(target, kind)}
        passed = {a.get("name") for a in args.get(kind) or []}
        for name in sorted(passed - set(declared)):
            problems.append(f"passes {kind[:-1]} {name!r}, which {target_label} does not declare")
        for name, spec in declared.items():
            if name in passed:
                continue
            has_default = any(spec.get(k) is not None for k in ("value", "default", "valueFrom"))
            if kind == "artifacts":
                has_default = spec.get("optional") or any(
                    k in spec for k in ("s3", "git", "http", "raw", "gcs", "artifactory", "from")
                )
            if not has_default:
                problems.append(f"does not pass required {kind[:-1]} {name!r} of {target_label}")
    return problems


def _embedded_workflows(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Argo objects a resource template creates (e.g. a Workflow from the deployment template)."""
    manifest = (template.get("resource") or {}).get("manifest")
    if not isinstance(manifest, str):
        return []
    try:
        doc = yaml.safe_load(manifest)
    except yaml.YAMLError:
        return [{"kind": "<unparseable>"}]
    if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("argoproj.io/"):
        return [doc]
    return []


def embedded_objects(manifests: list[Manifest]) -> list[tuple[Manifest, str, dict[str, Any]]]:
    """(manifest, template name, object) for every Argo object embedded in a resource template."""
    found = []
    for m in manifests:
        for name, template in m.templates.items():
            for doc in _embedded_workflows(template):
                found.append((m, name, doc))
    return found


def check_references(manifests: list[Manifest]) -> list[str]:
    """Every dangling or inconsistent reference across ``manifests``, as lines naming file and object."""
    index = template_index(manifests)
    problems: list[str] = []
    for m in manifests:
        if m.kind not in WORKFLOW_KINDS:
            continue
        problems += [f"{m.label}: {p}" for p in _manifest_problems(m, index)]
    problems += _workflow_parameter_problems(manifests, index)
    return problems


def _manifest_problems(m: Manifest, index: dict[str, Manifest]) -> list[str]:
    spec = m.workflow_spec
    templates = m.templates
    problems: list[str] = []
    ref = spec.get("workflowTemplateRef")
    if ref and ref.get("name") not in index:
        problems.append(f"workflowTemplateRef {ref.get('name')!r} is no WorkflowTemplate in argo/")
    entry = spec.get("entrypoint")
    if entry and entry not in templates:
        problems.append(f"entrypoint {entry!r} is not a template here ({sorted(templates)})")
    if m.kind in ("Workflow", "CronWorkflow") and not entry and not ref:
        problems.append("no entrypoint")
    if spec.get("onExit") and spec["onExit"] not in templates:
        problems.append(f"onExit {spec['onExit']!r} is not a template here")
    for tname, template in templates.items():
        problems += [f"template {tname!r}: {p}" for p in _template_problems(template, m, index)]
    return problems


def _template_problems(template: dict[str, Any], m: Manifest, index: dict[str, Manifest]) -> list[str]:
    problems: list[str] = []
    steps = {step.get("name"): step for _, step in workflow_steps(template)}
    for where, call in _calls(template):
        if call.get("inline"):
            continue
        if call.get("templateRef"):
            tref = call["templateRef"]
            target_m = index.get(tref.get("name", ""))
            if target_m is None:
                problems.append(f"{where}: templateRef {tref.get('name')!r} is no WorkflowTemplate in argo/")
                continue
            if tref.get("template") not in target_m.templates:
                problems.append(
                    f"{where}: templateRef {tref.get('name')}/{tref.get('template')!r} — no such template "
                    f"(it has {sorted(target_m.templates)})"
                )
                continue
            label = f"{tref.get('name')}/{tref.get('template')}"
        elif call.get("template"):
            if call["template"] not in m.templates:
                problems.append(f"{where}: template {call['template']!r} is not a template here")
                continue
            label = str(call["template"])
        else:
            problems.append(f"{where}: names no template")
            continue
        resolved = resolve(call, m, index)
        if resolved is not None:
            problems += [f"{where}: {p}" for p in _argument_problems(call, resolved[1], label)]
    dag_names = {t.get("name") for t in (template.get("dag") or {}).get("tasks") or []}
    for task in (template.get("dag") or {}).get("tasks") or []:
        for dep in task_dependencies(task):
            if dep not in dag_names:
                problems.append(f"task {task.get('name')!r} depends on {dep!r}, which is no task here")
    text = json.dumps({k: v for k, v in template.items() if k not in ("script", "container")})
    for match in _STEP_ANY.finditer(text):
        if match.group(2) not in steps:
            problems.append(f"refers to {match.group(1)}.{match.group(2)}, which is no step/task here")
    for match in _STEP_REF.finditer(text):
        step = steps.get(match.group(2))
        if step is None:
            continue
        resolved = resolve(step, m, index)
        if resolved is None:
            continue
        outputs = _outputs(resolved[1], match.group(3))
        if resolved[1].get("script") or resolved[1].get("container"):
            outputs |= {"result"} if match.group(3) == "parameters" else set()
        if match.group(4) not in outputs:
            problems.append(
                f"refers to {match.group(1)}.{match.group(2)}.outputs.{match.group(3)}.{match.group(4)}, "
                f"but that step's template has outputs {sorted(outputs)}"
            )
    full = json.dumps(template)
    declared_in = {
        kind: {p.get("name") for p in _inputs(template, kind)} for kind in ("parameters", "artifacts")
    }
    for match in _INPUT_REF.finditer(full):
        if match.group(2) not in declared_in[match.group(1)]:
            problems.append(f"uses inputs.{match.group(1)}.{match.group(2)}, which it does not declare")
    for match in _OUTPUT_REF.finditer(full):
        if match.group(2) not in _outputs(template, match.group(1)):
            problems.append(f"uses outputs.{match.group(1)}.{match.group(2)}, which it does not declare")
    for doc in _embedded_workflows(template):
        problems += [f"creates {doc.get('kind')}: {p}" for p in _embedded_problems(doc, index)]
    return problems


def _embedded_problems(doc: dict[str, Any], index: dict[str, Manifest]) -> list[str]:
    spec = doc.get("spec") or {}
    ref = spec.get("workflowTemplateRef")
    if not ref:
        return []
    target = index.get(ref.get("name", ""))
    if target is None:
        return [f"workflowTemplateRef {ref.get('name')!r} is no WorkflowTemplate in argo/"]
    declared = {
        p.get("name"): p for p in (target.workflow_spec.get("arguments") or {}).get("parameters") or []
    }
    passed = {p.get("name") for p in (spec.get("arguments") or {}).get("parameters") or []}
    problems = [
        f"passes parameter {n!r}, which {target.name} does not declare"
        for n in sorted(passed - set(declared))
    ]
    for name, param in declared.items():
        if name not in passed and param.get("value") is None and param.get("valueFrom") is None:
            problems.append(f"does not pass {target.name}'s required parameter {name!r}")
    return problems


def reachable(m: Manifest, index: dict[str, Manifest]) -> list[tuple[Manifest, dict[str, Any]]]:
    """Templates a workflow can run: from its entrypoint and exit handler, through templateRefs."""
    spec = m.workflow_spec
    start = [name for name in (spec.get("entrypoint"), spec.get("onExit")) if name]
    seen: set[tuple[str, str]] = set()
    out: list[tuple[Manifest, dict[str, Any]]] = []
    stack = [(m, m.templates[name]) for name in start if name in m.templates]
    while stack:
        scope, template = stack.pop()
        key = (scope.label, str(template.get("name")))
        if key in seen:
            continue
        seen.add(key)
        out.append((scope, template))
        for _, call in _calls(template):
            resolved = resolve(call, scope, index)
            if resolved is not None:
                stack.append(resolved)
    return out


def _workflow_parameter_problems(manifests: list[Manifest], index: dict[str, Manifest]) -> list[str]:
    """Every ``{{workflow.parameters.X}}`` a runnable workflow can reach must be one of its arguments."""
    problems = []
    for m in manifests:
        spec = m.workflow_spec
        if m.kind not in WORKFLOW_KINDS or not spec.get("entrypoint"):
            continue
        declared = {p.get("name") for p in (spec.get("arguments") or {}).get("parameters") or []}
        used: dict[str, str] = {}
        for scope, template in reachable(m, index):
            for match in _WORKFLOW_PARAM.finditer(json.dumps(template)):
                used.setdefault(match.group(1), f"{scope.name}/{template.get('name')}")
        for match in _WORKFLOW_PARAM.finditer(json.dumps(spec.get("metrics") or {})):
            used.setdefault(match.group(1), "metrics")
        for name, where in sorted(used.items()):
            if name not in declared:
                problems.append(
                    f"{m.label}: {where} uses workflow.parameters.{name}, which this workflow does not declare"
                )
    return problems
