"""The delivery manifests: rendered with kustomize, validated against the real upstream schemas
(strictly), checked for pod security and for names that resolve, and shaped as the delivery design says."""

from __future__ import annotations

import copy
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotrader.errors import DeployError
from autotrader.gitops import check_overlay
from autotrader.gitops.kustomize import find, one, render
from autotrader.gitops.pins import parse_pin
from autotrader.gitops.policy import pod_security_violations, pod_specs, reference_violations
from autotrader.gitops.schemas import (
    REQUIRED_FILES,
    SCHEMA_DIR_ENV,
    find_schema_dir,
    strict,
    validate_objects,
)
from autotrader.rehearsal.rehearse import RolloutPlan, assess, header_routes_to_canary

from .schema_hint import require_schema_dir

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {
    "staging": REPO / "rollouts" / "overlays" / "staging",
    "production": REPO / "rollouts" / "overlays" / "production",
    "argocd": REPO / "rollouts" / "argocd",
}

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed"
)


@pytest.fixture(scope="module")
def schema_dir() -> Path:
    return require_schema_dir()


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(folder) for name, folder in FOLDERS.items()}


# --- schemas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_every_rendered_object_is_valid_against_upstream_schemas(name, rendered, schema_dir) -> None:
    problems = validate_objects(rendered[name], schema_dir)
    assert problems == [], "\n".join(map(str, problems))


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_check_overlay_passes_schemas_policy_and_references(name, schema_dir) -> None:
    assert check_overlay(FOLDERS[name], schema_dir) == len(render(FOLDERS[name]))


def test_the_kinds_validated_come_from_upstream(rendered) -> None:
    kinds = {obj["kind"] for objs in rendered.values() for obj in objs}
    assert {"Rollout", "AnalysisTemplate", "Application", "AppProject", "Service", "ConfigMap"} <= kinds


def _mutated(rendered, env: str, kind: str, edit) -> list[dict[str, Any]]:
    objects = copy.deepcopy(rendered[env])
    edit(one(objects, kind) if kind != "Service" else one(objects, "Service", "autotrader-serving"))
    return objects


@pytest.mark.parametrize(
    ("kind", "edit", "expected"),
    [
        ("Rollout", lambda o: o["spec"]["strategy"]["canary"].update(stepz=[]), "'stepz' was unexpected"),
        ("Rollout", lambda o: o["spec"].update(replicas="four"), "'four' is not of type 'integer'"),
        (
            "Rollout",
            lambda o: o["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(
                readOnlyRootFS=True
            ),
            "'readOnlyRootFS' was unexpected",
        ),
        ("Rollout", lambda o: o["metadata"].update(labelz={}), "'labelz' was unexpected"),
        (
            "Rollout",
            lambda o: o["spec"]["strategy"]["canary"]["steps"][1]["setHeaderRoute"].update(matches=[]),
            "'matches' was unexpected",
        ),
        ("Service", lambda o: o["spec"].update(portz=[]), "'portz' was unexpected"),
    ],
)
def test_the_validator_bites(rendered, schema_dir, kind, edit, expected) -> None:
    problems = validate_objects(_mutated(rendered, "production", kind, edit), schema_dir)
    assert any(expected in p.message for p in problems), [str(p) for p in problems]


def test_an_unknown_field_in_an_analysis_metric_is_an_error(rendered, schema_dir) -> None:
    objects = copy.deepcopy(rendered["production"])
    template = one(objects, "AnalysisTemplate", "autotrader-canary-background")
    template["spec"]["metrics"][0]["inconclusiveCondition"] = "len(result) == 0"
    problems = validate_objects(objects, schema_dir)
    assert [p.path for p in problems] == ["spec.metrics.0"]
    assert "inconclusiveCondition" in problems[0].message


def test_an_unknown_kind_is_an_error_not_a_pass(schema_dir) -> None:
    objects = [{"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "x"}}]
    assert "no upstream schema known" in validate_objects(objects, schema_dir)[0].message


def test_strict_closes_objects_but_not_preserve_unknown_fields() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    out = strict(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in out["properties"]["free"]
    assert out["properties"]["map"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema  # the input is not modified


def test_schema_dir_lookup_order(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(SCHEMA_DIR_ENV, raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    with pytest.raises(DeployError, match="make schemas"):
        find_schema_dir(repo)
    fetched = repo / ".schemas" / "argo-rollouts"
    fetched.mkdir(parents=True)
    (fetched / "rollout-crd.yaml").write_text("{}")
    assert find_schema_dir(repo) == repo / ".schemas"
    shared = tmp_path / "shared" / "schemas" / "argo-rollouts"
    shared.mkdir(parents=True)
    (shared / "rollout-crd.yaml").write_text("{}")
    assert find_schema_dir(repo) == tmp_path / "shared" / "schemas"
    monkeypatch.setenv(SCHEMA_DIR_ENV, str(repo / ".schemas"))
    assert find_schema_dir(repo) == repo / ".schemas"
    monkeypatch.setenv(SCHEMA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DeployError, match=SCHEMA_DIR_ENV):
        find_schema_dir(repo)


def test_fetch_script_downloads_the_files_and_commits_of_sources_md(schema_dir: Path) -> None:
    script = REPO / "scripts" / "fetch_schemas.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text() + (REPO / "scripts" / "split_istio_crds.py").read_text()
    sources = (schema_dir / "SOURCES.md").read_text()
    for commit in re.findall(r"\b[0-9a-f]{40}\b", sources):
        assert commit in text
    for path in REQUIRED_FILES:
        assert Path(path).name in text
        assert (schema_dir / path).is_file()


def test_istio_bundle_split_gives_back_the_shared_files_byte_for_byte(tmp_path, schema_dir: Path) -> None:
    """fetch_schemas.sh downloads Istio's crd-all.gen.yaml; the split must reproduce the schema folder's files."""
    names = sorted((schema_dir / "istio").glob("*-crd.yaml"))
    other = (
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gateways.x\n"
    )
    bundle = tmp_path / "crd-all.gen.yaml"
    bundle.write_text("---\n".join([other, *(p.read_text() for p in names)]))
    script = REPO / "scripts" / "split_istio_crds.py"
    subprocess.run([sys.executable, str(script), str(bundle)], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in names]
    for path in names:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()
    bundle.write_text(other)
    failed = subprocess.run([sys.executable, str(script), str(bundle)], capture_output=True, text=True)
    assert failed.returncode != 0 and "virtualservices.networking.istio.io" in failed.stderr


# --- pod security ----------------------------------------------------------------------------------


def test_every_pod_spec_in_every_overlay_passes_the_pod_security_policy(rendered) -> None:
    found = {name: [p.owner for p in pod_specs(objs)] for name, objs in rendered.items()}
    assert "Rollout/autotrader-serving" in found["production"]
    assert "AnalysisTemplate/autotrader-integration" in found["staging"]
    for name, objects in rendered.items():
        assert pod_security_violations(objects) == [], name


def _pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Rollout")["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("edit", "rule"),
    [
        (lambda p: p["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"), "CKV_K8S_22"),
        (lambda p: p["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True), "CKV_K8S_20"),
        (
            lambda p: p["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
            "CKV_K8S_28",
        ),
        (lambda p: p["containers"][0]["securityContext"].update(runAsUser=0), "CKV_K8S_40"),
        (
            lambda p: (
                p["securityContext"].pop("runAsNonRoot"),
                p["containers"][0]["securityContext"].pop("runAsNonRoot"),
            ),
            "CKV_K8S_23",
        ),
        (lambda p: p["containers"][0]["resources"].pop("limits"), "CKV_K8S_11/13"),
        (lambda p: p["containers"][0].pop("readinessProbe"), "CKV_K8S_9"),
        (lambda p: p["containers"][0].pop("livenessProbe"), "CKV_K8S_8"),
        (
            lambda p: p["containers"][0].update(image="ghcr.io/autotrader/autotrader-serving:latest"),
            "CKV_K8S_14",
        ),
        (lambda p: p.update(hostNetwork=True), "hostNetwork"),
    ],
)
def test_the_pod_policy_bites(rendered, edit, rule) -> None:
    objects = copy.deepcopy(rendered["production"])
    edit(_pod(objects))
    assert any(rule in v for v in pod_security_violations(objects)), pod_security_violations(objects)


def test_jobs_need_no_probes_but_everything_else(rendered) -> None:
    objects = copy.deepcopy(rendered["staging"])
    job = one(objects, "AnalysisTemplate", "autotrader-integration")
    container = job["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]["containers"][0]
    assert "readinessProbe" not in container and pod_security_violations(objects) == []
    container["securityContext"]["readOnlyRootFilesystem"] = False
    assert any("autotrader-integration" in v and "CKV_K8S_22" in v for v in pod_security_violations(objects))


# --- references ------------------------------------------------------------------------------------


def test_references_resolve_and_the_check_bites(rendered) -> None:
    for objects in rendered.values():
        assert reference_violations(objects) == []
    objects = copy.deepcopy(rendered["production"])
    one(objects, "VirtualService")["spec"]["http"][0]["name"] = "main"
    one(objects, "Rollout")["spec"]["strategy"]["canary"]["steps"][2]["analysis"]["templates"][0][
        "templateName"
    ] = "nope"
    problems = reference_violations(objects)
    assert any("route 'primary'" in p for p in problems)
    assert any("'nope' is not in the render" in p for p in problems)


# --- production: the canary as designed ----------------------------------------------------------------


def test_production_canary_steps(rendered) -> None:
    rollout = one(rendered["production"], "Rollout")
    canary = rollout["spec"]["strategy"]["canary"]
    steps = canary["steps"]
    kinds = [next(iter(s)) for s in steps]
    weights = [s["setWeight"] for s in steps if "setWeight" in s]
    assert weights == [25, 50, 100]
    header = steps[kinds.index("setHeaderRoute")]["setHeaderRoute"]
    assert header["match"][0]["headerName"] == "x-autotrader-instrument"
    assert {r["name"] for r in canary["trafficRouting"]["managedRoutes"]} == {header["name"]}
    routed = [
        key
        for key in ("binance/BTCUSDT", "binance/ETHUSDT", "oanda/EUR_USD", "oanda/GBP_USD", "ibkr/SPY")
        if header_routes_to_canary(header["match"], "x-autotrader-instrument", key)
    ]
    assert routed == ["binance/BTCUSDT", "oanda/EUR_USD"]  # two instruments only, whole
    # After the header route: a 1 h analysis; after 25 and 50: a 30 min analysis; after 100: 1 h.
    plan = RolloutPlan.from_objects(rendered["production"])
    first = kinds.index("setHeaderRoute") + 1
    assert kinds[first] == "analysis" and _minutes(plan.step_analyses[first]) == 60
    for weight in (25, 50):
        index = next(i for i, s in enumerate(steps) if s.get("setWeight") == weight)
        assert kinds[index + 1] == "analysis" and _minutes(plan.step_analyses[index + 1]) == 30
    assert steps[-1] == {"pause": {"duration": "1h"}} and steps[-2] == {"setWeight": 100}
    assert canary["analysis"]["startingStep"] == first  # background from the header-routed step on
    istio = canary["trafficRouting"]["istio"]
    assert istio["virtualService"]["routes"] == ["primary"]
    assert istio["destinationRule"]["canarySubsetName"] == "canary"


def _minutes(spec) -> float:
    from autotrader.rehearsal.rehearse import parse_duration

    # the first measurement after initialDelay, then one per interval: count N lasts delay + (N-1) × interval
    return (
        max(
            parse_duration(m.initial_delay) + parse_duration(m.interval) * ((m.count or math.inf) - 1)
            for m in spec.metrics
        )
        / 60
    )


def test_canary_and_stable_are_told_apart_by_pod_template_hash(rendered) -> None:
    rollout = one(rendered["production"], "Rollout")
    canary = rollout["spec"]["strategy"]["canary"]
    blocks = [canary["analysis"], *[s["analysis"] for s in canary["steps"] if "analysis" in s]]
    for block in blocks:
        args = {a["name"]: a for a in block["args"]}
        assert args["canary-hash"]["valueFrom"] == {"podTemplateHashValue": "Latest"}
        if "stable-hash" in args:
            assert args["stable-hash"]["valueFrom"] == {"podTemplateHashValue": "Stable"}
    for template in find(rendered["production"], "AnalysisTemplate"):
        for metric in template["spec"]["metrics"]:
            assert (
                'rollouts_pod_template_hash="{{args.canary-hash}}"'
                in metric["provider"]["prometheus"]["query"]
            )


def test_background_and_step_templates_stay_identical_but_for_count(rendered) -> None:
    background = one(rendered["production"], "AnalysisTemplate", "autotrader-canary-background")
    step = one(rendered["production"], "AnalysisTemplate", "autotrader-canary-step")
    assert all("count" not in m for m in background["spec"]["metrics"])
    assert all(m["count"] == 6 for m in step["spec"]["metrics"])
    stripped = [{k: v for k, v in m.items() if k != "count"} for m in step["spec"]["metrics"]]
    assert stripped == background["spec"]["metrics"]
    assert step["spec"]["args"] == background["spec"]["args"]


def test_every_analysis_metric_is_inconclusive_without_data_and_errors_count(rendered) -> None:
    metrics = [m for t in find(rendered["production"], "AnalysisTemplate") for m in t["spec"]["metrics"]]
    assert {m["name"] for m in metrics} == {
        "error-rate",
        "latency-p99",
        "sharpe-not-negative",
        "sharpe-vs-stable",
    }
    for metric in metrics:
        for empty in ([], [float("nan")]):
            assert assess(metric["successCondition"], metric["failureCondition"], empty) == "Inconclusive"
        assert metric["consecutiveErrorLimit"] <= 2
        assert metric["interval"] == "5m" and int(metric["failureLimit"]) >= 1
        # the first measurement waits for one interval of the step's own traffic (never a wasted
        # Inconclusive at the start)
        assert metric["initialDelay"] == metric["interval"]
    thresholds = {
        "error-rate": ([0.0099], [0.01]),
        "latency-p99": ([0.199], [0.2]),
        "sharpe-not-negative": ([0.0], [-0.01]),
        "sharpe-vs-stable": ([0.0], [-0.01]),
    }
    for metric in metrics:
        good, bad = thresholds[metric["name"]]
        assert assess(metric["successCondition"], metric["failureCondition"], good) == "Successful"
        assert assess(metric["successCondition"], metric["failureCondition"], bad) == "Failed"


def test_analysis_queries_are_valid_promql(rendered, tmp_path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing: apt-get install prometheus")
    rules = []
    for template in find(rendered["production"], "AnalysisTemplate"):
        for metric in template["spec"]["metrics"]:
            query = re.sub(r"\{\{args\.[a-z-]+\}\}", "x", metric["provider"]["prometheus"]["query"])
            rules.append(
                {
                    "record": f"check:{template['metadata']['name']}:{metric['name']}".replace("-", "_"),
                    "expr": query,
                }
            )
    path = tmp_path / "analysis.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "analysis", "rules": rules}]}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_unreachable_cannot_promote(rendered) -> None:
    """An Error measurement is neither success nor failure; 3 in a row make the run Error (abort)."""
    for template in find(rendered["production"], "AnalysisTemplate"):
        for metric in template["spec"]["metrics"]:
            assert "successCondition" in metric and "failureCondition" in metric
            assert "len(result) == 0" in metric["successCondition"]


# --- staging: blue/green ----------------------------------------------------------------------------


def test_staging_is_blue_green_with_integration_tests_before_promotion(rendered) -> None:
    objects = rendered["staging"]
    strategy = one(objects, "Rollout")["spec"]["strategy"]
    assert "canary" not in strategy
    blue_green = strategy["blueGreen"]
    assert blue_green["scaleDownDelaySeconds"] == 86400
    assert blue_green["activeService"] == "autotrader-serving-stable"
    assert blue_green["previewService"] == "autotrader-serving-canary"
    template_name = blue_green["prePromotionAnalysis"]["templates"][0]["templateName"]
    job = one(objects, "AnalysisTemplate", template_name)["spec"]["metrics"][0]["provider"]["job"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert container["command"] == ["autotrader"] and args[args.index("deploy") + 1] == "integration"
    # against the preview pods themselves, recorded in the registry
    assert args[args.index("--url") + 1] == "$(PREVIEW_URL)" and "--record" in args
    assert {"name": "PREVIEW_URL", "value": "{{args.preview-url}}"} in container["env"]
    assert job["spec"]["backoffLimit"] == 0
    assert not find(objects, "VirtualService") and not find(objects, "DestinationRule")


# --- pins, images, Argo CD ---------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["staging", "production"])
def test_pin_is_an_immutable_version_and_reaches_the_pods(env, rendered) -> None:
    pin = parse_pin((FOLDERS[env] / "model.env").read_text())
    objects = rendered[env]
    (configmap,) = [
        c for c in find(objects, "ConfigMap") if c["metadata"]["name"].startswith("autotrader-model")
    ]
    assert configmap["data"] == {"MODEL_URI": pin.uri, "MODEL_VERSION": pin.version}
    assert re.fullmatch(r"autotrader-model-[a-z0-9]{10}", configmap["metadata"]["name"])
    env_from = one(objects, "Rollout")["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert env_from == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]


@pytest.mark.parametrize(
    "text",
    [
        "MODEL_URI=models:/autotrader-signal@champion\nMODEL_VERSION=3\n",
        "MODEL_URI=models:/autotrader-signal/latest\nMODEL_VERSION=latest\n",
        "MODEL_URI=models:/autotrader-signal/3\nMODEL_VERSION=4\n",
        "MODEL_URI=models:/autotrader-signal/3\n",
        "MODEL_URI=models:/autotrader-signal/3\nMODEL_VERSION=3\nEXTRA=1\n",
    ],
)
def test_a_pin_that_is_not_an_immutable_version_is_refused(text) -> None:
    with pytest.raises(DeployError, match=r"model\.env"):
        parse_pin(text, "model.env")


def test_a_new_pin_changes_the_pod_template(tmp_path) -> None:
    copy_dir = tmp_path / "rollouts"
    shutil.copytree(REPO / "rollouts", copy_dir)
    before = one(render(copy_dir / "overlays" / "production"), "Rollout")["spec"]["template"]
    (copy_dir / "overlays" / "production" / "model.env").write_text(
        "MODEL_URI=models:/autotrader-signal/99\nMODEL_VERSION=99\n"
    )
    after = one(render(copy_dir / "overlays" / "production"), "Rollout")["spec"]["template"]
    assert before != after  # hashed ConfigMap name → new ReplicaSet → a canary starts


def test_overlay_image_tags_reach_the_rollout_and_the_integration_job(rendered) -> None:
    for env in ("staging", "production"):
        kustomization = yaml.safe_load((FOLDERS[env] / "kustomization.yaml").read_text())
        tag = kustomization["images"][0]["newTag"]
        digest = kustomization["images"][0].get("digest")  # written by `autotrader promote` when known
        expected = f"ghcr.io/autotrader/autotrader-serving:{tag}" + (f"@{digest}" if digest else "")
        images = {c["image"] for pod in pod_specs(rendered[env]) for c in pod.spec["containers"]}
        assert images == {expected}
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag)
        assert digest is None or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)


def test_argocd_applications_sync_the_overlays_automatically(rendered) -> None:
    # The app of apps as a whole (every child, both projects) is tested in tests/test_app_of_apps.py.
    objects = rendered["argocd"]
    for env in ("staging", "production"):
        spec = one(objects, "Application", f"autotrader-{env}")["spec"]
        project = one(objects, "AppProject", spec["project"])
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
        assert spec["source"]["path"] == f"rollouts/overlays/{env}"
        assert (REPO / spec["source"]["path"] / "kustomization.yaml").is_file()
        assert spec["source"]["repoURL"] in project["spec"]["sourceRepos"]
        assert {
            "server": spec["destination"]["server"],
            "namespace": spec["destination"]["namespace"],
        } in project["spec"]["destinations"]
    project = one(objects, "AppProject", "autotrader")
    kinds = {k["kind"] for k in project["spec"]["namespaceResourceWhitelist"]}
    deployed = {o["kind"] for env in ("staging", "production") for o in rendered[env]}
    assert deployed <= kinds and "Secret" not in kinds


def test_no_secret_values_in_manifests(rendered) -> None:
    """Credentials come from Kubernetes Secrets by reference; no Secret object or literal value in git."""
    for objects in rendered.values():
        assert not find(objects, "Secret")
        for pod in pod_specs(objects):
            for container in pod.spec["containers"]:
                for var in container.get("env") or []:
                    if re.search(r"KEY|SECRET|PASSWORD|TOKEN|TRACKING_URI", var["name"]):
                        assert "value" not in var and "secretKeyRef" in var["valueFrom"], var
