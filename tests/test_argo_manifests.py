"""The Argo manifests in argo/: upstream schema (strict), references, SLAs, retries, secrets, rollback.

Each check is also run on a broken copy in a temporary folder, to prove it bites.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotrader.gitops.schemas import validate_objects
from autotrader.orchestration.manifests import Manifest, load_manifests, resolve, template_index
from autotrader.orchestration.refs import check_references, embedded_objects, reachable
from autotrader.params import BROKERS, load_params

from .schema_hint import require_schema_dir

REPO = Path(__file__).resolve().parents[1]
ARGO = REPO / "argo"
SECRET_WORDS = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|USERNAME|WEBHOOK|TRACKING_URI|REMOTE_URL", re.I)


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return load_manifests(ARGO)


@pytest.fixture(scope="module")
def schemas() -> Path:
    return require_schema_dir()


def by_name(manifests: list[Manifest], name: str) -> Manifest:
    return next(m for m in manifests if m.name == name)


def pod_templates(m: Manifest, manifests: list[Manifest]) -> list[tuple[Manifest, dict[str, Any]]]:
    """Templates reachable from a workflow's entrypoint (not its exit handler) that run a pod."""
    index = template_index(manifests)
    entry_only = Manifest(m.path, copy.deepcopy(m.doc))
    entry_only.workflow_spec.pop("onExit", None)
    return [(s, t) for s, t in reachable(entry_only, index) if t.get("script") or t.get("container")]


def schema_problems(ms: list[Manifest], schemas: Path) -> list[str]:
    problems = [f"{m.label}: {p}" for m in ms for p in validate_objects([m.doc], schemas)]
    problems += [
        f"{m.label} {name}: {p}"
        for m, name, doc in embedded_objects(ms)
        for p in validate_objects([doc], schemas)
    ]
    return problems


# --------------------------------------------------------------------------------------- schema


def test_argo_folder_holds_the_expected_objects(manifests: list[Manifest]) -> None:
    kinds = {(m.kind, m.name) for m in manifests}
    assert kinds == {
        ("WorkflowTemplate", "dvc-stage"),
        ("WorkflowTemplate", "notify"),
        ("WorkflowTemplate", "deployment"),
        ("CronWorkflow", "data-pipeline"),
        ("CronWorkflow", "training-pipeline"),
        ("CronWorkflow", "feature-health"),
    }
    assert all(m.doc["apiVersion"] == "argoproj.io/v1alpha1" for m in manifests)


def test_every_argo_file_is_valid_against_the_upstream_schema(
    manifests: list[Manifest], schemas: Path
) -> None:
    assert (schemas / "argo-workflows" / "schema.json").is_file()
    assert schema_problems(manifests, schemas) == []


def test_the_workflow_a_resource_template_creates_is_validated_too(manifests: list[Manifest]) -> None:
    created = [(m.name, name, doc["kind"]) for m, name, doc in embedded_objects(manifests)]
    assert created == [("training-pipeline", "submit-deployment", "Workflow")]


def test_an_unknown_field_fails_the_schema_check(tmp_path: Path, schemas: Path) -> None:
    shutil.copytree(ARGO, tmp_path / "argo")
    path = tmp_path / "argo" / "data-pipeline.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["workflowSpec"]["templates"][0]["steps"][1][0]["retryStratgy"] = {"limit": "3"}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    problems = schema_problems(load_manifests(tmp_path / "argo"), schemas)
    assert (
        len(problems) == 1 and "retryStratgy" in problems[0] and "CronWorkflow/data-pipeline" in problems[0]
    )


def test_an_unknown_field_in_the_embedded_workflow_fails_too(tmp_path: Path, schemas: Path) -> None:
    shutil.copytree(ARGO, tmp_path / "argo")
    path = tmp_path / "argo" / "training-pipeline.yaml"
    path.write_text(path.read_text().replace("workflowTemplateRef:\n", "workflowTemplateRefs:\n"))
    problems = schema_problems(load_manifests(tmp_path / "argo"), schemas)
    assert any("workflowTemplateRefs" in p and "submit-deployment" in p for p in problems), problems


# --------------------------------------------------------------------------------------- references


def test_every_reference_resolves(manifests: list[Manifest]) -> None:
    assert check_references(manifests) == []


def test_shared_steps_are_template_refs_not_copies(manifests: list[Manifest]) -> None:
    """Only dvc-stage holds a `dvc repro`; the pipelines reach it by templateRef."""
    for m in manifests:
        text = json.dumps(m.doc)
        if m.name == "dvc-stage":
            assert "dvc repro --single-item" in text and "dvc push" in text and "dvc pull" in text
        else:
            assert "dvc repro" not in text, f"{m.label} runs dvc itself instead of using dvc-stage"
    for name in ("data-pipeline", "training-pipeline", "feature-health"):
        m = by_name(manifests, name)
        refs = {
            json.dumps(s.get("templateRef"))
            for t in m.templates.values()
            for g in t.get("steps") or []
            for s in g
        }
        assert any('"dvc-stage"' in r for r in refs), name


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("template: run}", "template: rnu}", "templateRef dvc-stage/'rnu' — no such template"),
        ("templateRef: {name: dvc-stage, template: publish}", "templateRef: {name: dvc-stages, template: publish}",
         "templateRef 'dvc-stages' is no WorkflowTemplate"),
        ('from: "{{steps.validate.outputs.artifacts.state}}"', 'from: "{{steps.validat.outputs.artifacts.state}}"',
         "steps.validat, which is no step"),
        ("onExit: exit-handler", "onExit: exit-handlr", "onExit 'exit-handlr' is not a template"),
        ("- {name: stages, value: validate}", "- {name: stage, value: validate}",
         "passes parameter 'stage', which dvc-stage/run does not declare"),
    ],
)  # fmt: skip
def test_a_dangling_reference_fails(tmp_path: Path, old: str, new: str, expected: str) -> None:
    shutil.copytree(ARGO, tmp_path / "argo")
    path = tmp_path / "argo" / "data-pipeline.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    problems = check_references(load_manifests(tmp_path / "argo"))
    assert any(expected in p for p in problems), problems
    assert all("data-pipeline" in p for p in problems)


def test_a_misspelt_output_of_an_earlier_step_fails(tmp_path: Path) -> None:
    shutil.copytree(ARGO, tmp_path / "argo")
    path = tmp_path / "argo" / "training-pipeline.yaml"
    path.write_text(
        path.read_text().replace(
            "steps.gate.outputs.parameters.decision", "steps.gate.outputs.parameters.decison"
        )
    )
    problems = check_references(load_manifests(tmp_path / "argo"))
    assert any("outputs.parameters.decison" in p and "decision" in p for p in problems), problems


def test_a_missing_dag_dependency_and_an_undeclared_workflow_parameter_fail(tmp_path: Path) -> None:
    (tmp_path / "argo").mkdir()
    shutil.copy(ARGO / "dvc-stage.yaml", tmp_path / "argo")
    dag = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "dag-"},
        "spec": {
            "entrypoint": "main",
            "arguments": {"parameters": [{"name": "pipeline", "value": "x"}, {"name": "image", "value": "i"}]},
            "templates": [
                {
                    "name": "main",
                    "dag": {
                        "tasks": [
                            {"name": "a", "templateRef": {"name": "dvc-stage", "template": "run"},
                             "arguments": {"parameters": [{"name": "stages", "value": "extract"}]}},
                            {"name": "b", "dependencies": ["aa"], "templateRef": {"name": "dvc-stage", "template": "run"},
                             "arguments": {"parameters": [{"name": "stages", "value": "validate"}]}},
                        ]
                    },
                }
            ],
        },
    }  # fmt: skip
    (tmp_path / "argo" / "dag.yaml").write_text(yaml.safe_dump(dag))
    problems = check_references(load_manifests(tmp_path / "argo"))
    assert any("task 'b' depends on 'aa'" in p for p in problems), problems
    # dvc-stage/run defaults set-params to {{workflow.parameters.set-params}}: this workflow lacks it.
    assert any("workflow.parameters.set-params" in p for p in problems), problems


# --------------------------------------------------------------------------------------- schedules / SLAs


@pytest.mark.parametrize(
    ("name", "schedule", "deadline"),
    [
        ("data-pipeline", "0 2 * * *", 7200),
        ("training-pipeline", "0 3 * * 0", 21600),
        ("feature-health", "0 * * * *", 1800),
    ],
)
def test_cron_schedules_and_deadlines_meet_the_slas(
    manifests: list[Manifest], name: str, schedule: str, deadline: int
) -> None:
    m = by_name(manifests, name)
    spec = m.doc["spec"]
    assert spec["schedules"] == [schedule]  # v3.6 `schedules` (the schema requires it; `schedule` is gone)
    assert "schedule" not in spec
    assert spec["timezone"] == "UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= deadline
    workflow = spec["workflowSpec"]
    assert workflow["activeDeadlineSeconds"] == deadline
    # The SLA gauge the alerts compare with is the same number.
    sla = next(p for p in workflow["metrics"]["prometheus"] if p["name"] == "autotrader_pipeline_sla_seconds")
    assert int(sla["gauge"]["value"]) == deadline
    assert workflow["onExit"] in m.templates


def test_data_pipeline_fans_extraction_out_per_broker(manifests: list[Manifest]) -> None:
    m = by_name(manifests, "data-pipeline")
    first = m.templates["main"]["steps"][0]
    assert len(first) == 1 and first[0]["withItems"] == list(BROKERS)
    assert first[0]["templateRef"] == {"name": "dvc-stage", "template": "extract-broker"}
    # Every broker the params know of is extracted (a new broker must join the fan-out).
    assert {i.broker for i in load_params(REPO / "params.yaml").data.instruments} <= set(
        first[0]["withItems"]
    )


def test_every_pipeline_step_retries_with_exponential_backoff(manifests: list[Manifest]) -> None:
    for name in ("data-pipeline", "training-pipeline", "feature-health"):
        pods = pod_templates(by_name(manifests, name), manifests)
        assert pods, name
        for scope, template in pods:
            retry = template.get("retryStrategy")
            where = f"{name}: {scope.name}/{template['name']}"
            assert retry, f"{where} has no retryStrategy"
            assert int(retry["limit"]) >= 1, where
            assert int(retry["backoff"]["factor"]) >= 2, f"{where}: backoff is not exponential"
            assert retry["backoff"]["duration"], where


def test_deployment_steps_never_retry_and_failure_rolls_back(manifests: list[Manifest]) -> None:
    m = by_name(manifests, "deployment")
    index = template_index(manifests)
    for scope, template in reachable(m, index):
        if scope.name == "deployment":
            assert "retryStrategy" not in template, f"deployment/{template['name']} must not retry"
    assert m.workflow_spec["onExit"] == "exit-handler"
    steps = [s for group in m.templates["exit-handler"]["steps"] for s in group]
    rollbacks = [s for s in steps if s.get("template") == "rollback"]
    assert {a["value"] for s in rollbacks for a in s["arguments"]["parameters"]} == {"staging", "production"}
    assert all(s["when"] == "'{{workflow.status}}' != 'Succeeded'" for s in rollbacks)
    rollback = m.templates["rollback"]["script"]["source"]
    assert 'autotrader rollback --env "$DEPLOY_ENV"' in rollback and "git push" in rollback
    assert any(s.get("templateRef", {}).get("name") == "notify" for s in steps)
    # Waiting for the Rollout fails on an aborted canary: that is what triggers the rollback.
    wait = m.templates["wait-rollout"]["script"]["source"]
    assert "kubectl argo rollouts status" in wait and "--timeout" in wait


def test_feature_health_failure_notifies_as_the_data_pipeline_does(manifests: list[Manifest]) -> None:
    """Stale bars, a gap or a price jump fail the health step; the exit handler then notifies, as nightly's."""

    def alert(name: str) -> dict:
        m = by_name(manifests, name)
        assert m.workflow_spec["onExit"] == "exit-handler"
        steps = [s for group in m.templates["exit-handler"]["steps"] for s in group]
        return next(s for s in steps if s.get("templateRef", {}).get("name") == "notify")

    health, nightly = alert("feature-health"), alert("data-pipeline")
    assert health["when"] == nightly["when"] == "'{{workflow.status}}' != 'Succeeded'"
    assert health["templateRef"] == nightly["templateRef"]
    args = {p["name"]: p["value"] for p in health["arguments"]["parameters"]}
    assert args.keys() == {p["name"] for p in nightly["arguments"]["parameters"]}
    assert args["failures"] == "{{workflow.failures}}" and "metrics/health.json" in args["message"]


def test_deployment_runs_the_promised_sequence(manifests: list[Manifest]) -> None:
    m = by_name(manifests, "deployment")
    order = [s["name"] for group in m.templates["deploy"]["steps"] for s in group]
    assert order == [
        "pre-deploy-checks", "promote-staging", "staging-synced", "staging-rollout", "integration-tests",
        "promote-production", "production-synced", "production-rollout", "finalize", "announce",
    ]  # fmt: skip
    sources = {
        name: (t.get("script") or {}).get("source", "") + json.dumps(t) for name, t in m.templates.items()
    }
    steps = {s["name"]: s for g in m.templates["deploy"]["steps"] for s in g}
    checks = {
        n: steps[n]["arguments"]["parameters"][0]["value"] for n in ("pre-deploy-checks", "integration-tests")
    }
    assert checks == {"pre-deploy-checks": "check", "integration-tests": "integration"}
    model_check = sources["model-check"]
    assert "autotrader deploy check --model-uri" in model_check
    assert "autotrader deploy integration --model-uri" in model_check and "--record" in model_check
    assert "dvc pull features" in model_check  # the checks replay recorded bars from the feature store
    promotion = sources["promotion-commit"]
    assert 'autotrader promote --env "$DEPLOY_ENV" --version "$MODEL_VERSION" --commit' in promotion
    assert "git push" in promotion
    assert "status.sync.revision" in sources["wait-argocd"] and "Healthy" in sources["wait-argocd"]
    assert "autotrader rollout finalize --version" in sources["finalize"]
    # The Argo CD applications it waits for exist in rollouts/argocd.
    apps = {
        yaml.safe_load(p.read_text())["metadata"]["name"]
        for p in (REPO / "rollouts" / "argocd").glob("application-*.yaml")
    }
    waited = {a["value"] for g in m.templates["deploy"]["steps"] for s in g if s.get("template") == "wait-argocd"
              for a in s["arguments"]["parameters"] if a["name"] == "app"}  # fmt: skip
    assert waited <= apps


def test_training_submits_the_deployment_only_when_the_gate_says_promote(manifests: list[Manifest]) -> None:
    m = by_name(manifests, "training-pipeline")
    steps = {s["name"]: s for group in m.templates["main"]["steps"] for s in group}
    deploy = steps["deploy"]
    assert "'{{steps.gate.outputs.parameters.decision}}' == 'promote'" in deploy["when"]
    submit = m.templates[deploy["template"]]
    assert submit["resource"]["action"] == "create"
    created = yaml.safe_load(submit["resource"]["manifest"])
    assert created["kind"] == "Workflow" and created["spec"]["workflowTemplateRef"]["name"] == "deployment"
    assert [s["name"] for group in m.templates["main"]["steps"] for s in group][-1] == "deploy"


# --------------------------------------------------------------------------------------- metrics / secrets


def test_the_metrics_the_brief_asks_for_are_emitted(manifests: list[Manifest]) -> None:
    dvc_stage = by_name(manifests, "dvc-stage")
    run_metrics = {p["name"]: p for p in dvc_stage.templates["run"]["metrics"]["prometheus"]}
    assert run_metrics["autotrader_stage_duration_seconds"]["gauge"]["value"] == "{{duration}}"
    psi = run_metrics["autotrader_data_max_psi"]
    assert psi["gauge"]["value"] == "{{outputs.parameters.max-psi}}" and "'health'" in psi["when"]
    assert "'gate'" in run_metrics["autotrader_gate_decisions_total"]["when"]
    assert {"autotrader_data_stale_instruments", "autotrader_data_freshness_lag_seconds"} <= set(run_metrics)
    outputs = {p["name"]: p["valueFrom"]["path"] for p in dvc_stage.templates["run"]["outputs"]["parameters"]}
    assert outputs["max-psi"] == "/tmp/outputs/max-psi"  # written by `autotrader pipeline state save`
    for name in ("data-pipeline", "training-pipeline", "feature-health"):
        names = {p["name"] for p in by_name(manifests, name).workflow_spec["metrics"]["prometheus"]}
        assert {
            "autotrader_pipeline_duration_seconds",
            "autotrader_pipeline_last_success_timestamp_seconds",
            "autotrader_pipeline_last_failure_timestamp_seconds",
            "autotrader_pipeline_runs_total",
        } <= names


def _env_vars(obj: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "env" and isinstance(value, list):
                found += [v for v in value if isinstance(v, dict)]
            found += _env_vars(value)
    elif isinstance(obj, list):
        for item in obj:
            found += _env_vars(item)
    return found


def test_credentials_come_only_from_kubernetes_secrets(manifests: list[Manifest]) -> None:
    secret_refs = set()
    for m in manifests:
        for var in _env_vars(m.doc):
            if SECRET_WORDS.search(var["name"]):
                assert "value" not in var, f"{m.label}: {var['name']} has a literal value"
                ref = var["valueFrom"]["secretKeyRef"]
                secret_refs.add(ref["name"])
        text = (m.path).read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{20,}|xox[bp]-", text), m.label
    assert secret_refs == {
        "autotrader-dvc-remote",
        "autotrader-mlflow",
        "autotrader-brokers",
        "autotrader-git",
        "autotrader-notify",
    }


def test_the_checker_of_secrets_bites(tmp_path: Path) -> None:
    shutil.copytree(ARGO, tmp_path / "argo")
    path = tmp_path / "argo" / "notify.yaml"
    doc = yaml.safe_load(path.read_text())
    env = doc["spec"]["templates"][0]["container"]["env"]
    hook = next(v for v in env if v["name"] == "AUTOTRADER_NOTIFY_WEBHOOK_URL")
    hook.pop("valueFrom")
    hook["value"] = "https://hooks.example.invalid/T000/B000/XXXX"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(AssertionError, match="literal value"):
        test_credentials_come_only_from_kubernetes_secrets(load_manifests(tmp_path / "argo"))


def test_resolve_follows_template_refs(manifests: list[Manifest]) -> None:
    m = by_name(manifests, "training-pipeline")
    step = m.templates["main"]["steps"][1][0]
    scope, template = resolve(step, m, template_index(manifests))
    assert (scope.name, template["name"]) == ("dvc-stage", "run")


# --------------------------------------------------------------------------------------- CLI contract

_COMMAND = re.compile(r"(?:^|[\s\"'(])(?:\.venv/bin/)?autotrader\s+([^;&|\n>)]+)")


PLACEHOLDERS = {"DEPLOY_ENV": "staging", "BROKER": "binance", "CHECK": "check"}  # values a choice accepts


def cli_commands(text: str) -> list[list[str]]:
    """The `autotrader …` command lines in a shell script, with $VARIABLES replaced by a placeholder."""
    text = text.replace("\\\n", " ")
    commands = []
    for match in _COMMAND.finditer(text):
        args = re.sub(
            r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: PLACEHOLDERS.get(m.group(1), "1"), match.group(1)
        )
        commands.append(shlex.split(args, comments=True))
    return commands


def unparsable(commands: list[list[str]]) -> list[str]:
    """The commands the real `autotrader` argument parser refuses, with its message."""
    from autotrader.cli import build_parser

    parser = build_parser()
    bad = []
    for args in commands:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parser.parse_args(args)
        except SystemExit:
            bad.append(f"autotrader {' '.join(args)}: {err.getvalue().strip().splitlines()[-1]}")
    return bad


def argo_scripts(manifests: list[Manifest]) -> str:
    texts = []
    for m in manifests:
        for template in m.templates.values():
            texts.append((template.get("script") or {}).get("source", ""))
            container = template.get("container") or {}
            texts.append(" ".join(container.get("command", []) + container.get("args", [])))
    return "\n".join(texts)


def test_every_autotrader_command_in_the_workflows_is_one_the_cli_accepts(manifests: list[Manifest]) -> None:
    commands = cli_commands(argo_scripts(manifests))
    verbs = {" ".join(c[:2]) for c in commands}
    assert {"pipeline state", "pipeline extract", "pipeline notify", "deploy check", "deploy integration",
            "rollout finalize", "rollback --env"} <= verbs, verbs  # fmt: skip
    assert any(c[0] == "promote" for c in commands)
    assert unparsable(commands) == []


def test_the_cli_contract_check_bites() -> None:
    bad = unparsable(
        cli_commands(
            'autotrader rollback --env "$DEPLOY_ENV" --comit\nautotrader deploy integration --urll x'
        )
    )
    assert len(bad) == 2 and "--comit" in bad[0]
