"""/predict behind mesh mTLS: the PeerAuthentication and AuthorizationPolicy of rollouts/base, as
rendered for production, validated strictly against Istio's CRDs and checked for what they allow."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from autotrader.gitops.kustomize import one, render
from autotrader.gitops.schemas import validate_objects

from .schema_hint import require_schema_dir

REPO = Path(__file__).resolve().parents[1]
TRADER = "cluster.local/ns/autotrader-trading/sa/autotrader-trader"

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed"
)


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render(REPO / "rollouts" / "overlays" / "production")


@pytest.fixture(scope="module")
def schema_dir() -> Path:
    return require_schema_dir()


def _pod_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    return one(objects, "Rollout")["spec"]["template"]["metadata"]["labels"]


def test_strict_mtls_selects_the_serving_pods(production) -> None:
    peer = one(production, "PeerAuthentication", "autotrader-serving")
    assert peer["metadata"]["namespace"] == "autotrader-production"
    assert peer["spec"]["mtls"] == {"mode": "STRICT"}
    selector = peer["spec"]["selector"]["matchLabels"]
    assert selector.items() <= _pod_labels(production).items()


def _allowed(
    policy: dict[str, Any], method: str, path: str, principal: str | None, namespace: str | None
) -> bool:
    """Istio's ALLOW semantics for the fields this policy uses: some rule matches source and operation."""
    for rule in policy["spec"]["rules"]:
        sources = [f["source"] for f in rule.get("from", [])]
        source_ok = not sources or any(
            (principal is not None and principal in s.get("principals", []))
            or (namespace is not None and namespace in s.get("namespaces", []))
            for s in sources
        )
        ops = [t["operation"] for t in rule.get("to", [])]
        op_ok = not ops or any(
            method in o.get("methods", [method]) and path in o.get("paths", [path]) for o in ops
        )
        if source_ok and op_ok:
            return True
    return False


def test_only_the_expected_callers_reach_predict(production) -> None:
    policy = one(production, "AuthorizationPolicy", "autotrader-serving")
    assert policy["metadata"]["namespace"] == "autotrader-production"
    assert policy["spec"]["action"] == "ALLOW"
    assert policy["spec"]["selector"]["matchLabels"].items() <= _pod_labels(production).items()
    assert _allowed(policy, "POST", "/predict", TRADER, "autotrader-trading")
    # another identity, the same namespace under another account, no identity, Prometheus: denied
    assert not _allowed(policy, "POST", "/predict", "cluster.local/ns/default/sa/default", "default")
    assert not _allowed(policy, "POST", "/predict", "cluster.local/ns/autotrader-trading/sa/other", None)
    assert not _allowed(policy, "POST", "/predict", None, None)
    assert not _allowed(policy, "POST", "/predict", None, "monitoring")
    # Prometheus scrapes /metrics, and only that
    assert _allowed(policy, "GET", "/metrics", "cluster.local/ns/monitoring/sa/prometheus-k8s", "monitoring")
    assert not _allowed(policy, "GET", "/metrics", TRADER, "autotrader-trading")
    # probes from anywhere, read-only
    for path in ("/healthz", "/readyz"):
        assert _allowed(policy, "GET", path, None, None)
        assert not _allowed(policy, "POST", path, None, None)
    assert not _allowed(policy, "GET", "/docs", TRADER, "autotrader-trading")


def test_the_mesh_objects_validate_strictly_and_the_validator_bites(production, schema_dir) -> None:
    mesh = [o for o in production if o["kind"] in ("PeerAuthentication", "AuthorizationPolicy")]
    assert len(mesh) == 2
    assert validate_objects(mesh, schema_dir) == []
    typo = copy.deepcopy(mesh)
    one(typo, "PeerAuthentication")["spec"]["mtls"]["mood"] = "STRICT"
    one(typo, "AuthorizationPolicy")["spec"]["rules"][0]["from"][0]["source"]["principal"] = [TRADER]
    problems = [str(p) for p in validate_objects(typo, schema_dir)]
    assert any("mood" in p for p in problems) and any("'principal'" in p for p in problems), problems
