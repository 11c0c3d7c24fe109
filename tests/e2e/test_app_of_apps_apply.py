"""The whole app of apps applies to a real API server: `kubectl apply --server-side --dry-run=server` of the
root folder and every child Application's render, against the harness's kube-apiserver with the CRDs the
platform expects installed (Argo CD and prometheus-operator from ../shared/schemas, Argo Workflows' own
minimal CRDs from the Go module the harness's `argo` CLI is built from).

The cluster is shared with the production canary scenario (same xdist group), which creates
autotrader-production itself; so every namespace here is prefixed (`aoa-`), created for real, and the
objects are only dry-run: nothing is persisted, no controller acts on them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotrader.gitops.apps import app_tree, namespace_of
from autotrader.gitops.schemas import find_schema_dir

from .cluster import REPO, Cluster

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-production")]

PREFIX = "aoa-"
WORKFLOW_CRDS = ("argoproj.io_cronworkflows.yaml", "argoproj.io_workflowtemplates.yaml")


def _workflow_crds() -> list[Path]:
    """Argo Workflows' minimal CRDs from the module cache (the harness builds its `argo` CLI from it)."""
    done = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "github.com/argoproj/argo-workflows/v4"],
        cwd=REPO / "e2e" / "argo-cli",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off"},
    )
    folder = Path(done.stdout.strip()) / "manifests" / "base" / "crds" / "minimal"
    files = [folder / name for name in WORKFLOW_CRDS]
    if done.returncode != 0 or not all(f.is_file() for f in files):
        reason = f"Argo Workflows' CRDs not found in the Go module cache: {done.stderr.strip()[-500:]}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return files


def _install_crds(cluster: Cluster) -> None:
    schemas = find_schema_dir(REPO)
    files = [
        *sorted((schemas / "argo-cd").glob("*-crd.yaml")),
        *sorted((schemas / "prometheus-operator").glob("*.yaml")),
        *_workflow_crds(),
    ]
    cluster.kubectl("apply", "--server-side", *(arg for f in files for arg in ("-f", str(f))))
    names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))


def _relocated(objects: list[dict[str, Any]], default: str) -> list[dict[str, Any]]:
    out = []
    for obj in objects:
        obj = {**obj, "metadata": dict(obj["metadata"])}
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = PREFIX + obj["metadata"]["name"]
        else:
            obj["metadata"]["namespace"] = PREFIX + namespace_of(obj, default)
        out.append(obj)
    return out


def test_the_whole_app_of_apps_applies_with_server_side_dry_run(cluster: Cluster) -> None:
    _install_crds(cluster)
    root, children = app_tree(REPO)
    trees = [_relocated(root, "argocd")]
    for child in children:
        assert child.objects is not None, f"{child.name}: {child.missing} missing"
        trees.append(_relocated(child.objects, child.namespace))
    objects = [o for tree in trees for o in tree]
    namespaces = {o["metadata"]["namespace"] for o in objects if "namespace" in o["metadata"]}
    assert {PREFIX + n for n in ("argocd", "autotrader-pipelines", "monitoring", "mlflow")} <= namespaces
    for name in sorted(namespaces):
        cluster.kubectl("create", "namespace", name)
    done = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=argocd-controller",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(objects, sort_keys=False),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    applied = [line for line in done.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(objects), done.stdout[-3000:]
    kinds = {o["kind"] for o in objects}
    assert {"Application", "AppProject", "CronWorkflow", "PrometheusRule", "PodMonitor", "Rollout"} <= kinds
    # The dry run is a real check: the API server refuses a field the CRD does not know.
    monitor = next(o for o in objects if o["kind"] == "PodMonitor")
    broken = {**monitor, "spec": {**monitor["spec"], "podMetricEndpoints": []}}
    refused = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(broken), check=False
    )
    assert refused.returncode != 0 and "podMetricEndpoints" in refused.stderr, refused.stderr[-2000:]
