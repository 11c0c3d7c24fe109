"""Local parity between the Argo workflows and ``dvc.yaml``: which DVC stages each workflow runs, in order.

``autotrader pipeline plan`` prints this, and the test suite fails when the two disagree: a stage in
``dvc.yaml`` that no workflow runs, a workflow step naming a stage that does not exist, a stage run
before one it depends on, or a step that does not pull the cached outputs its stage needs (a pod starts
empty: what it does not pull from the DVC remote or restore from the previous step's state, it lacks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autotrader.errors import ConfigError
from autotrader.orchestration.manifests import (
    WORKFLOW_KINDS,
    Manifest,
    argument,
    input_names,
    resolve,
    template_index,
    workflow_steps,
)
from autotrader.orchestration.refs import embedded_objects

_INTERPOLATION = re.compile(r"\$\{\s*([A-Za-z0-9_.]+)\s*\}")


@dataclass(frozen=True)
class Out:
    path: str
    cache: bool = True
    persist: bool = False


@dataclass(frozen=True)
class DvcStage:
    name: str
    deps: tuple[str, ...]
    outs: tuple[Out, ...]


@dataclass(frozen=True)
class PlanStep:
    """One step of a workflow as far as DVC is concerned."""

    order: int  # steps that share an order run in parallel
    step: str  # path of step names from the entrypoint, e.g. "main/validate"
    kind: str  # dvc | fetch | publish | await | submit | other
    stages: tuple[str, ...] = ()
    pull: tuple[str, ...] = ()
    mode: str = "repro"
    items: tuple[str, ...] = ()
    detail: str = ""
    when: str = ""


@dataclass
class WorkflowPlan:
    name: str
    kind: str
    path: str
    schedules: tuple[str, ...] = ()
    timezone: str = ""
    deadline_s: int | None = None
    steps: list[PlanStep] = field(default_factory=list)
    on_exit: list[PlanStep] = field(default_factory=list)

    def stage_order(self) -> list[tuple[int, str]]:
        """(order, stage) for every DVC stage this workflow runs, in run order."""
        return [(s.order, stage) for s in self.steps if s.kind == "dvc" for stage in s.stages]


# ---------------------------------------------------------------------------------------------- dvc.yaml


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(dotted)
        node = node[key]
    return node


def _interpolate(text: str, params: dict[str, Any], where: str) -> str:
    def sub(match: re.Match[str]) -> str:
        try:
            return str(_lookup(params, match.group(1)))
        except KeyError as exc:
            raise ConfigError(f"{where}: ${{{match.group(1)}}} is not in params.yaml") from exc

    return _INTERPOLATION.sub(sub, text)


def _entries(items: list[Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """dvc.yaml lists entries as ``path`` or ``{path: {options}}``."""
    out = []
    for item in items or []:
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, dict):
            for path, opts in item.items():
                out.append((str(path), dict(opts or {})))
    return out


def load_dvc_stages(dvc_yaml: str | Path, params_yaml: str | Path | None = None) -> dict[str, DvcStage]:
    """The stages of ``dvc.yaml`` with ``${…}`` resolved from params.yaml (as DVC does)."""
    dvc_yaml = Path(dvc_yaml)
    params_yaml = Path(params_yaml) if params_yaml else dvc_yaml.with_name("params.yaml")
    try:
        raw = yaml.safe_load(dvc_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{dvc_yaml}: cannot read: {exc}") from exc
    try:
        params = yaml.safe_load(params_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError):
        params = {}
    stages: dict[str, DvcStage] = {}
    for name, body in (raw.get("stages") or {}).items():
        body = body or {}
        where = f"{dvc_yaml}: stage {name}"
        deps = tuple(_interpolate(p, params, where).rstrip("/") for p, _ in _entries(body.get("deps")))
        outs = []
        for key in ("outs", "metrics", "plots"):
            for path, opts in _entries(body.get(key)):
                cache = bool(opts.get("cache", key == "outs"))
                outs.append(
                    Out(
                        _interpolate(path, params, where).rstrip("/"), cache, bool(opts.get("persist", False))
                    )
                )
        stages[str(name)] = DvcStage(str(name), deps, tuple(outs))
    return stages


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def upstream(stages: dict[str, DvcStage], name: str) -> dict[str, list[tuple[str, bool]]]:
    """Direct upstream stages of ``name``: producer → [(dependency path, whether it is cached)]."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for dep in stages[name].deps:
        for other in stages.values():
            if other.name == name:
                continue
            for out in other.outs:
                if _overlaps(dep, out.path):
                    found.setdefault(other.name, []).append((dep, out.cache))
    return found


def ancestors(stages: dict[str, DvcStage], name: str) -> set[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        for parent in upstream(stages, stack.pop()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


# ---------------------------------------------------------------------------------------------- workflows


def _words(value: str | None) -> tuple[str, ...]:
    return tuple((value or "").split())


def _walk(
    template: dict[str, Any],
    scope: Manifest,
    index: dict[str, Manifest],
    prefix: str,
    counter: list[int],
    depth: int = 0,
) -> list[PlanStep]:
    if depth > 10:
        raise ConfigError(f"{scope.label}: templates nest more than 10 deep (a cycle?)")
    out: list[PlanStep] = []
    last_group = None
    for group, step in workflow_steps(template):
        if group != last_group:
            counter[0] += 1
            last_group = group
        path = f"{prefix}/{step.get('name')}"
        resolved = resolve(step, scope, index)
        if resolved is None:
            out.append(PlanStep(counter[0], path, "other", detail="unresolved template"))
            continue
        target_scope, target = resolved
        names = input_names(target)
        items = tuple(str(i) for i in step.get("withItems") or [])
        if target.get("steps") or target.get("dag"):
            out += _walk(target, target_scope, index, path, counter, depth + 1)
        elif "stages" in names:
            out.append(
                PlanStep(
                    counter[0],
                    path,
                    "dvc",
                    stages=_words(argument(step, target, "stages")),
                    pull=_words(argument(step, target, "pull")),
                    mode=argument(step, target, "mode") or "repro",
                    items=items,
                )
            )
        elif "verify" in names:
            out.append(PlanStep(counter[0], path, "publish", pull=_words(argument(step, target, "verify"))))
        elif "broker" in names:
            out.append(PlanStep(counter[0], path, "fetch", items=items, detail="per-broker extraction"))
        elif target.get("resource"):
            created = [
                doc
                for m, name, doc in embedded_objects([target_scope])
                if name == target.get("name") and m is target_scope
            ]
            refs = [((d.get("spec") or {}).get("workflowTemplateRef") or {}).get("name", "") for d in created]
            detail = "submits " + ", ".join(r for r in refs if r) if any(refs) else "kubernetes resource"
            out.append(
                PlanStep(
                    counter[0], path, "submit", detail=detail, items=items, when=str(step.get("when", ""))
                )
            )
        elif "data-end" in names and not target.get("outputs"):
            out.append(PlanStep(counter[0], path, "await", detail="waits for the published state"))
        else:
            values = [
                str(a.get("value"))
                for a in (step.get("arguments") or {}).get("parameters") or []
                if a.get("value") is not None and "{{" not in str(a.get("value"))
            ]
            detail = str(target.get("name")) + (f" ({', '.join(values)})" if values else "")
            when = str(step.get("when", ""))
            out.append(PlanStep(counter[0], path, "other", detail=detail, items=items, when=when))
    return out


def workflow_plans(manifests: list[Manifest]) -> list[WorkflowPlan]:
    """A plan for every runnable workflow (CronWorkflows, Workflows, WorkflowTemplates with an entrypoint)."""
    index = template_index(manifests)
    plans = []
    for m in manifests:
        spec = m.workflow_spec
        entry = spec.get("entrypoint")
        if m.kind not in WORKFLOW_KINDS or not entry or entry not in m.templates:
            continue
        cron = m.doc.get("spec") or {} if m.kind == "CronWorkflow" else {}
        schedules = tuple(cron.get("schedules") or ([cron["schedule"]] if cron.get("schedule") else []))
        deadline = spec.get("activeDeadlineSeconds")
        plan = WorkflowPlan(
            name=m.name,
            kind=m.kind,
            path=str(m.path),
            schedules=schedules,
            timezone=str(cron.get("timezone", "")),
            deadline_s=int(deadline) if deadline is not None else None,
        )
        plan.steps = _walk(m.templates[entry], m, index, entry, [0])
        exit_name = spec.get("onExit")
        if exit_name in m.templates:
            plan.on_exit = _walk(m.templates[exit_name], m, index, exit_name, [0])
        plans.append(plan)
    return plans


# ---------------------------------------------------------------------------------------------- parity


def check_parity(
    plans: list[WorkflowPlan], stages: dict[str, DvcStage], dvc_yaml: str = "dvc.yaml"
) -> list[str]:
    """Every disagreement between the workflows and dvc.yaml, as lines naming the file, workflow and step."""
    problems: list[str] = []
    known = sorted(stages)
    run_anywhere: set[str] = set()
    for plan in plans:
        where = f"{Path(plan.path).name}: {plan.kind}/{plan.name}"
        first_run: dict[str, tuple[int, int]] = {}
        for step in plan.steps:
            for role, names in (("runs", step.stages), ("pulls", step.pull)):
                for name in names:
                    if name not in stages:
                        problems.append(
                            f"{where}: step {step.step} {role} DVC stage {name!r}, which is not in {dvc_yaml} "
                            f"(stages: {', '.join(known)})"
                        )
            if step.kind != "dvc":
                continue
            for position, name in enumerate(step.stages):
                if name in stages:
                    run_anywhere.add(name)
                    first_run.setdefault(name, (step.order, position))
        for step in plan.steps:
            if step.kind != "dvc":
                continue
            for position, name in enumerate(step.stages):
                if name not in stages:
                    continue
                here = (step.order, position)
                for parent in sorted(ancestors(stages, name)):
                    if parent in first_run and first_run[parent] >= here:
                        problems.append(
                            f"{where}: step {step.step} runs {name!r} before (or beside) {parent!r}, "
                            f"which it depends on"
                        )
                problems += [
                    f"{where}: step {step.step} {p}"
                    for p in _pull_problems(step, position, stages, first_run)
                ]
    for name in known:
        if name not in run_anywhere:
            problems.append(f"{dvc_yaml}: stage {name!r} is run by no Argo workflow")
    return problems


def _pull_problems(
    step: PlanStep, position: int, stages: dict[str, DvcStage], first_run: dict[str, tuple[int, int]]
) -> list[str]:
    """What a step's pod would lack: cached inputs it does not pull, uncached ones no earlier step made."""
    name = step.stages[position]
    earlier_here = set(step.stages[:position])
    problems = []
    if step.mode == "commit":
        return problems
    for parent, deps in sorted(upstream(stages, name).items()):
        if parent in earlier_here:
            continue
        for dep, cached in deps:
            if cached and parent not in step.pull:
                problems.append(
                    f"runs {name!r}, which needs {dep} (a cached output of {parent!r}), but does not pull {parent!r}"
                )
                break
            if not cached and (parent not in first_run or first_run[parent][0] >= step.order):
                problems.append(
                    f"runs {name!r}, which needs {dep} ({parent!r}'s uncached output, carried only in the "
                    f"state of an earlier step of the same workflow), but no earlier step runs {parent!r}"
                )
                break
    if any(out.persist for out in stages[name].outs) and name not in step.pull:
        problems.append(
            f"runs {name!r}, whose outputs persist across runs, but does not pull its previous ones"
        )
    return problems


def plan_from_files(
    argo_dir: str | Path, dvc_yaml: str | Path, params_yaml: str | Path | None = None
) -> tuple[list[WorkflowPlan], dict[str, DvcStage], list[str]]:
    """Plans, DVC stages and parity problems, read from an argo/ folder and a dvc.yaml."""
    from autotrader.orchestration.manifests import load_manifests

    stages = load_dvc_stages(dvc_yaml, params_yaml)
    plans = workflow_plans(load_manifests(argo_dir))
    return plans, stages, check_parity(plans, stages, Path(dvc_yaml).name)
