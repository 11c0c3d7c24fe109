"""Pod security and cross-reference checks on rendered manifests.

``pod_security_violations`` applies the pod-level checks that checkov runs on Kubernetes manifests
(the CKV_K8S ids are quoted) to EVERY pod spec in the render: the Rollout's template, the Jobs inside
AnalysisTemplates, and any Deployment/Job/CronJob/Pod. Probes are required of long-running pods only
(not of Jobs), as checkov does.

``reference_violations`` checks what no schema can: that the names the Rollout uses resolve to objects
in the same render (Services, AnalysisTemplates and their args, the Istio VirtualService route and
DestinationRule subsets, ConfigMaps, the ServiceAccount), and that each Service selects the pods.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]

MIN_UID = 10000  # CKV_K8S_40: a high UID cannot collide with a host user
LONG_RUNNING = frozenset({"Rollout", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod"})


@dataclass(frozen=True)
class PodSpec:
    """A pod spec found in a rendered object, with where it was found."""

    owner: str  # Kind/name
    path: str
    spec: Mapping[str, Any]
    long_running: bool


def _name(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name', '?')}"


def pod_specs(objects: list[Obj]) -> Iterator[PodSpec]:
    """Every pod spec in ``objects``."""
    for obj in objects:
        kind, spec = obj.get("kind"), obj.get("spec") or {}
        owner = _name(obj)
        if kind == "Pod":
            yield PodSpec(owner, "spec", spec, True)
        elif kind == "CronJob":
            tmpl = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
            if tmpl is not None:
                yield PodSpec(owner, "spec.jobTemplate.spec.template.spec", tmpl, False)
        elif kind in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
            for i, metric in enumerate(spec.get("metrics") or []):
                job = (metric.get("provider") or {}).get("job")
                if job:
                    tmpl = job.get("spec", {}).get("template", {}).get("spec")
                    if tmpl is not None:
                        yield PodSpec(
                            owner, f"spec.metrics[{i}].provider.job.spec.template.spec", tmpl, False
                        )
        elif isinstance(spec.get("template"), Mapping) and "spec" in spec["template"]:
            yield PodSpec(owner, "spec.template.spec", spec["template"]["spec"], kind in LONG_RUNNING)


def _container_violations(pod: PodSpec, container: Mapping[str, Any], init: bool) -> list[str]:
    where = f"{pod.owner} {pod.path} container {container.get('name', '?')}"
    psc = pod.spec.get("securityContext") or {}
    csc = container.get("securityContext") or {}
    out: list[str] = []

    def fail(rule: str, message: str) -> None:
        out.append(f"{where}: {message} ({rule})")

    run_as_non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    if run_as_non_root is not True:
        fail("CKV_K8S_23", "runAsNonRoot is not true")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if uid is None or uid < MIN_UID:
        fail("CKV_K8S_40", f"runAsUser must be set to a UID >= {MIN_UID} (is {uid})")
    if csc.get("readOnlyRootFilesystem") is not True:
        fail("CKV_K8S_22", "readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        fail("CKV_K8S_20", "allowPrivilegeEscalation is not false")
    if csc.get("privileged") is True:
        fail("CKV_K8S_16", "privileged container")
    caps = csc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        fail("CKV_K8S_28", "capabilities.drop does not include ALL")
    if caps.get("add"):
        fail("CKV_K8S_25", f"capabilities.add is not empty: {caps['add']}")
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        fail("CKV_K8S_31", f"seccompProfile is {seccomp or 'unset'}, not RuntimeDefault")
    resources = container.get("resources") or {}
    for kind, rule in (("requests", "CKV_K8S_10/12"), ("limits", "CKV_K8S_11/13")):
        have = resources.get(kind) or {}
        missing = [r for r in ("cpu", "memory") if r not in have]
        if missing:
            fail(rule, f"resources.{kind} lacks {', '.join(missing)}")
    image = str(container.get("image", ""))
    if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
        fail("CKV_K8S_14", f"image {image!r} is not pinned to a tag or digest")
    if pod.long_running and not init:
        if "livenessProbe" not in container:
            fail("CKV_K8S_8", "no livenessProbe")
        if "readinessProbe" not in container:
            fail("CKV_K8S_9", "no readinessProbe")
    return out


def pod_security_violations(objects: list[Obj]) -> list[str]:
    """Every pod-security rule broken by any pod spec in ``objects``."""
    out: list[str] = []
    for pod in pod_specs(objects):
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.spec.get(key):
                out.append(f"{pod.owner} {pod.path}: {key} is true (CKV_K8S_17-19)")
        if pod.spec.get("automountServiceAccountToken") is not False:
            out.append(f"{pod.owner} {pod.path}: automountServiceAccountToken is not false (CKV_K8S_38)")
        containers = pod.spec.get("containers") or []
        if not containers:
            out.append(f"{pod.owner} {pod.path}: no containers")
        for container in containers:
            out.extend(_container_violations(pod, container, init=False))
        for container in pod.spec.get("initContainers") or []:
            out.extend(_container_violations(pod, container, init=True))
    return out


def _names(objects: list[Obj], kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objects if o.get("kind") == kind}


def _by_name(objects: list[Obj], kind: str, name: str) -> Obj | None:
    for obj in objects:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    return None


def _analysis_refs(strategy: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, analysis block) for every analysis the strategy runs."""
    canary = strategy.get("canary") or {}
    if canary.get("analysis"):
        yield "canary.analysis", canary["analysis"]
    for i, step in enumerate(canary.get("steps") or []):
        if "analysis" in step:
            yield f"canary.steps[{i}].analysis", step["analysis"]
    blue_green = strategy.get("blueGreen") or {}
    for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
        if blue_green.get(key):
            yield f"blueGreen.{key}", blue_green[key]


def _check_analysis(objects: list[Obj], owner: str, where: str, block: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    given = {a["name"] for a in block.get("args") or []}
    declared: set[str] = set()
    needed: set[str] = set()
    for ref in block.get("templates") or []:
        kind = "ClusterAnalysisTemplate" if ref.get("clusterScope") else "AnalysisTemplate"
        template = _by_name(objects, kind, ref.get("templateName", ""))
        if template is None:
            out.append(f"{owner} {where}: {kind} {ref.get('templateName')!r} is not in the render")
            continue
        for arg in template.get("spec", {}).get("args") or []:
            declared.add(arg["name"])
            if "value" not in arg and "valueFrom" not in arg:
                needed.add(arg["name"])
    if needed - given:
        out.append(f"{owner} {where}: args {sorted(needed - given)} are required by the templates, not given")
    if given - declared:
        out.append(f"{owner} {where}: args {sorted(given - declared)} are not declared by any template")
    return out


def _check_istio(objects: list[Obj], owner: str, canary: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    routing = canary.get("trafficRouting") or {}
    istio = routing.get("istio") or {}
    managed = {r["name"] for r in routing.get("managedRoutes") or []}
    for i, step in enumerate(canary.get("steps") or []):
        for key in ("setHeaderRoute", "setMirrorRoute"):
            if key in step and step[key].get("name") not in managed:
                out.append(
                    f"{owner} canary.steps[{i}].{key}: route {step[key].get('name')!r} not in managedRoutes"
                )
    if not istio:
        return out
    vs_ref = istio.get("virtualService") or {}
    vs = _by_name(objects, "VirtualService", vs_ref.get("name", ""))
    if vs is None:
        out.append(f"{owner}: VirtualService {vs_ref.get('name')!r} is not in the render")
    else:
        http_names = {r.get("name") for r in vs.get("spec", {}).get("http") or []}
        for route in vs_ref.get("routes") or []:
            if route not in http_names:
                out.append(
                    f"{owner}: route {route!r} is not an http route of VirtualService/{vs_ref['name']}"
                )
        clash = managed & http_names
        if clash:
            out.append(
                f"VirtualService/{vs_ref['name']}: managed routes {sorted(clash)} must not be declared"
            )
    dr_ref = istio.get("destinationRule")
    if dr_ref:
        dr = _by_name(objects, "DestinationRule", dr_ref.get("name", ""))
        if dr is None:
            out.append(f"{owner}: DestinationRule {dr_ref.get('name')!r} is not in the render")
        else:
            subsets = {s.get("name") for s in dr.get("spec", {}).get("subsets") or []}
            for key in ("stableSubsetName", "canarySubsetName"):
                if dr_ref.get(key) not in subsets:
                    out.append(
                        f"{owner}: subset {dr_ref.get(key)!r} is not in DestinationRule/{dr_ref['name']}"
                    )
            if vs is not None:
                hosts = {
                    d.get("destination", {}).get("host")
                    for r in vs.get("spec", {}).get("http") or []
                    for d in r.get("route") or []
                }
                if hosts != {dr.get("spec", {}).get("host")}:
                    out.append(
                        f"VirtualService/{vs_ref.get('name')}: destinations {sorted(hosts)} ≠ rule host"
                    )
    return out


def reference_violations(objects: list[Obj]) -> list[str]:
    """Every name a Rollout uses that does not resolve in ``objects``, and Services that miss the pods."""
    out: list[str] = []
    services = _names(objects, "Service")
    configmaps = _names(objects, "ConfigMap")
    accounts = _names(objects, "ServiceAccount")
    for rollout in (o for o in objects if o.get("kind") == "Rollout"):
        owner = _name(rollout)
        spec = rollout.get("spec", {})
        strategy = spec.get("strategy") or {}
        pod = spec.get("template", {}).get("spec", {})
        pod_labels = spec.get("template", {}).get("metadata", {}).get("labels") or {}
        selector = spec.get("selector", {}).get("matchLabels") or {}
        if any(pod_labels.get(k) != v for k, v in selector.items()):
            out.append(f"{owner}: selector {selector} does not match the pod template labels")
        used_services = []
        canary, blue_green = strategy.get("canary") or {}, strategy.get("blueGreen") or {}
        used_services += [canary.get(k) for k in ("stableService", "canaryService") if canary.get(k)]
        used_services += [blue_green.get(k) for k in ("activeService", "previewService") if blue_green.get(k)]
        for name in used_services:
            if name not in services:
                out.append(f"{owner}: Service {name!r} is not in the render")
                continue
            svc_selector = _by_name(objects, "Service", name)["spec"].get("selector") or {}
            if any(pod_labels.get(k) != v for k, v in svc_selector.items()):
                out.append(f"Service/{name}: selector {svc_selector} does not select the Rollout's pods")
        for where, block in _analysis_refs(strategy):
            out.extend(_check_analysis(objects, owner, where, block))
        if canary:
            out.extend(_check_istio(objects, owner, canary))
        for container in pod.get("containers") or []:
            for source in container.get("envFrom") or []:
                ref = (source.get("configMapRef") or {}).get("name")
                if ref and ref not in configmaps:
                    out.append(f"{owner}: ConfigMap {ref!r} is not in the render")
        account = pod.get("serviceAccountName")
        if account and account not in accounts:
            out.append(f"{owner}: ServiceAccount {account!r} is not in the render")
    return out
