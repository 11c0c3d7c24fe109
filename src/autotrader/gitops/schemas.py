"""Validate rendered Kubernetes objects against the real upstream schemas, strictly.

Argo kinds (Rollout, AnalysisTemplate, Application, AppProject, CronWorkflow, …) are checked against the
upstream CRDs / JSON schema in the schema folder (``../shared/schemas`` next to the repo, or what
``make schemas`` fetched); core kinds (Service, ConfigMap, Job, …) with ``kubernetes-validate`` in
strict mode. Strict means what ``kubectl apply --validate=strict`` means: an unknown field is an error.
A CRD's ``openAPIV3Schema`` says nothing about unknown fields, so every object schema that lists its
``properties`` and neither allows ``additionalProperties`` nor carries
``x-kubernetes-preserve-unknown-fields`` is closed here (``additionalProperties: false``). The other
``x-kubernetes-*`` keys are annotations and are left to jsonschema, which ignores them.

Istio's networking and security kinds and prometheus-operator's monitoring kinds are CRDs too, checked the
same way (``autotrader.gitops.policy.check_references`` additionally cross-checks the Istio routes against
the Rollout). Any other kind is an error: nothing passes unvalidated by accident.

The orchestration code validates its Argo Workflows objects with the same ``validate_objects``.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotrader.errors import DeployError

SCHEMA_DIR_ENV = "AUTOTRADER_SCHEMA_DIR"
KUBERNETES_VERSION = "1.32"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

# (apiVersion group, kind) → file under the schema folder. CRDs hold spec.versions[].schema.openAPIV3Schema.
CRD_FILES: dict[tuple[str, str], str] = {
    ("argoproj.io", "Rollout"): "argo-rollouts/rollout-crd.yaml",
    ("argoproj.io", "AnalysisTemplate"): "argo-rollouts/analysis-template-crd.yaml",
    ("argoproj.io", "ClusterAnalysisTemplate"): "argo-rollouts/cluster-analysis-template-crd.yaml",
    ("argoproj.io", "AnalysisRun"): "argo-rollouts/analysis-run-crd.yaml",
    ("argoproj.io", "Application"): "argo-cd/application-crd.yaml",
    ("argoproj.io", "AppProject"): "argo-cd/appproject-crd.yaml",
    ("networking.istio.io", "VirtualService"): "istio/virtualservice-crd.yaml",
    ("networking.istio.io", "DestinationRule"): "istio/destinationrule-crd.yaml",
    ("security.istio.io", "AuthorizationPolicy"): "istio/authorizationpolicy-crd.yaml",
    ("security.istio.io", "PeerAuthentication"): "istio/peerauthentication-crd.yaml",
    (
        "monitoring.coreos.com",
        "ServiceMonitor",
    ): "prometheus-operator/monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PodMonitor"): "prometheus-operator/monitoring.coreos.com_podmonitors.yaml",
    (
        "monitoring.coreos.com",
        "PrometheusRule",
    ): "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml",
}
# Argo Workflows publishes one JSON schema with a definition per kind.
WORKFLOWS_FILE = "argo-workflows/schema.json"
WORKFLOW_KINDS: frozenset[str] = frozenset(
    {"Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow", "WorkflowEventBinding"}
)
# The files a schema folder must hold (what scripts/fetch_schemas.sh downloads).
REQUIRED_FILES: tuple[str, ...] = (*sorted(set(CRD_FILES.values())), WORKFLOWS_FILE)


@dataclass(frozen=True)
class Problem:
    """One schema violation: which object, where in it, and what rule."""

    obj: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"{self.obj}{where}: {self.message}"


def find_schema_dir(repo: str | os.PathLike[str] = ".") -> Path:
    """``$AUTOTRADER_SCHEMA_DIR``, else ``<repo>/../shared/schemas``, else ``<repo>/.schemas``."""
    env = os.environ.get(SCHEMA_DIR_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise DeployError(f"{SCHEMA_DIR_ENV}={env} is not a folder of upstream schemas")
        return path
    repo = Path(repo).resolve()
    tried = [repo.parent / "shared" / "schemas", repo / ".schemas"]
    for path in tried:
        if (path / CRD_FILES[("argoproj.io", "Rollout")]).is_file():
            return path
    raise DeployError(
        "no upstream schemas found (tried "
        + ", ".join(str(p) for p in tried)
        + f"); run `make schemas` or set {SCHEMA_DIR_ENV}"
    )


def strict(schema: Any) -> Any:
    """A copy of ``schema`` in which every object with ``properties`` refuses unknown keys."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        isinstance(schema.get("properties"), dict)
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


@functools.lru_cache(maxsize=32)
def _crd_schema(path: str, version: str) -> dict[str, Any]:
    text = Path(path).read_text()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(text, Loader=loader)
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version and entry.get("served", True):
            schema = strict(entry["schema"]["openAPIV3Schema"])
            # metadata is `type: object` in a CRD; it is checked against ObjectMeta separately.
            schema.get("properties", {}).pop("metadata", None)
            # apiVersion and kind are TypeMeta, which the API server accepts on every object; some CRDs
            # (Istio's) list only spec and status, so the closed schema would refuse them.
            for key in ("apiVersion", "kind"):
                schema.setdefault("properties", {}).setdefault(key, {"type": "string"})
            if "metadata" in schema.get("required", []):
                schema["required"] = [r for r in schema["required"] if r != "metadata"]
            return schema
    raise DeployError(f"{path}: no served version {version!r} in the CRD")


@functools.lru_cache(maxsize=4)
def _workflows_schema(path: str) -> dict[str, Any]:
    return strict(json.loads(Path(path).read_text()))


@functools.lru_cache(maxsize=4)
def _k8s_definitions() -> dict[str, Any]:
    import importlib.resources

    import kubernetes_validate.utils as kv

    version = [v for v in kv.all_versions() if kv.major_minor(v) <= KUBERNETES_VERSION][-1]
    ref = importlib.resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json"
    )
    return json.loads(ref.read_text())


def _describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "?") if isinstance(meta, dict) else "?"
    return f"{obj.get('kind', '?')}/{name}"


def _errors(validator: Any, instance: Any, label: str, prefix: str = "") -> list[Problem]:
    problems = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in err.absolute_path)
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        problems.append(Problem(label, path, err.message))
    return problems


def _metadata_problems(obj: Mapping[str, Any], label: str) -> list[Problem]:
    import jsonschema
    from referencing import Registry, Resource

    defs = _k8s_definitions()
    registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    schema = {"$ref": f"{defs['$id']}#/$defs/{OBJECT_META}"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    if not isinstance(obj.get("metadata"), dict):
        return [Problem(label, "metadata", "missing")]
    return _errors(validator, obj["metadata"], label, "metadata")


def validate_object(obj: Mapping[str, Any], schema_dir: str | os.PathLike[str]) -> list[Problem]:
    """Every schema problem of one object (empty when it is valid); unknown kinds are problems too."""
    import jsonschema

    label = _describe(obj)
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [Problem(label, "", "apiVersion and kind are required")]
    group, version = _group_version(api_version)
    schema_dir = Path(schema_dir)
    if (group, kind) in CRD_FILES:
        schema = _crd_schema(str(schema_dir / CRD_FILES[(group, kind)]), version)
        validator = jsonschema.Draft7Validator(schema)
        body = {k: v for k, v in obj.items() if k != "metadata"}
        return _metadata_problems(obj, label) + _errors(validator, body, label)
    if group == "argoproj.io" and kind in WORKFLOW_KINDS:
        document = _workflows_schema(str(schema_dir / WORKFLOWS_FILE))
        schema = {
            "$ref": f"#/definitions/io.argoproj.workflow.{version}.{kind}",
            "definitions": document["definitions"],
        }
        return _errors(jsonschema.Draft7Validator(schema), obj, label)
    if group and "." in group and not group.endswith(".k8s.io"):
        return [Problem(label, "", f"no upstream schema known for {api_version} {kind}")]
    return _core_problems(obj, label)


def _core_problems(obj: Mapping[str, Any], label: str) -> list[Problem]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = ".".join(str(p) for p in err.path)
        return [Problem(label, path, err.message)]
    except kubernetes_validate.SchemaNotFoundError as err:
        return [Problem(label, "", err.message)]
    return []


def validate_objects(
    objects: Iterable[Mapping[str, Any]], schema_dir: str | os.PathLike[str] | None = None
) -> list[Problem]:
    """Problems of all ``objects`` (an empty list means every one is valid)."""
    folder = Path(schema_dir) if schema_dir is not None else find_schema_dir()
    problems: list[Problem] = []
    for obj in objects:
        problems.extend(validate_object(copy.deepcopy(dict(obj)), folder))
    return problems


def check_objects(
    objects: Iterable[Mapping[str, Any]], source: str, schema_dir: str | os.PathLike[str] | None = None
) -> None:
    """Raise a DeployError naming ``source`` and every problem, if there is any."""
    problems = validate_objects(objects, schema_dir)
    if problems:
        listed = "\n  ".join(str(p) for p in problems)
        raise DeployError(f"{source}: {len(problems)} schema problem(s):\n  {listed}")
