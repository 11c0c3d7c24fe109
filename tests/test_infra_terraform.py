"""infra/terraform: the modules parse (python-hcl2) with every variable typed and described, checkov finds
no failed check and every skip is justified inline, the module calls match the modules' variables, the
security properties the issue asks for are there, and the names agree with the manifests.

terraform itself cannot fetch its providers here, so `terraform validate/plan` is the user's step
(infra/terraform/README.md); `terraform fmt -check` runs when terraform is on PATH (it needs no provider).
The checkers run from throw-away venvs outside the repo (tests/iactools.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotrader.gitops.apps import app_tree
from autotrader.gitops.kustomize import find, one, render

from .iactools import IacToolsMissing, ensure_venv

REPO = Path(__file__).resolve().parents[1]
TF = REPO / "infra" / "terraform"
MODULES = ("s3-bucket", "irsa-role", "mlflow-postgres")

pytestmark = pytest.mark.slow


def _venv(tool: str) -> Path:
    try:
        return ensure_venv(tool)
    except IacToolsMissing as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{exc} (CI requires the IaC checkers)", pytrace=False)
        pytest.skip(str(exc))
    raise AssertionError("unreachable")


def _unquote(node: Any) -> Any:
    """python-hcl2 8 keeps string literals' quotes (in keys and labels too); drop them."""
    if isinstance(node, str):
        return node[1:-1] if len(node) >= 2 and node[0] == node[-1] == '"' else node
    if isinstance(node, list):
        return [_unquote(n) for n in node]
    if isinstance(node, dict):
        return {_unquote(k): _unquote(v) for k, v in node.items() if not k.startswith("__")}
    return node


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict[str, Any]]:
    """Every .tf file, parsed by python-hcl2 in its venv: {relative path: document}."""
    python = _venv("hcl2") / "bin" / "python"
    files = sorted(str(p.relative_to(TF)) for p in TF.rglob("*.tf"))
    script = "import hcl2, json, sys\nprint(json.dumps({f: hcl2.load(open(f)) for f in sys.argv[1:]}))"
    done = subprocess.run(
        [str(python), "-c", script, *files], cwd=TF, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {path: _unquote(doc) for path, doc in json.loads(done.stdout).items()}


def _blocks(parsed, folder: str, kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path, doc in parsed.items():
        if str(Path(path).parent) == folder:
            for block in doc.get(kind, []):
                out.update(block)
    return out


def _policy_documents(parsed, folder: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path, doc in parsed.items():
        if str(Path(path).parent) == folder:
            for block in doc.get("data", []):
                out.update(block.get("aws_iam_policy_document", {}))
    return out


def _resources(parsed, folder: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path, doc in parsed.items():
        if str(Path(path).parent) == folder:
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        out[f"{rtype}.{name}"] = body
    return out


FOLDERS = (".", *(f"modules/{m}" for m in MODULES))


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_variable_is_typed_and_described_and_every_output_described(parsed, folder) -> None:
    variables = _blocks(parsed, folder, "variable")
    assert variables, f"{folder} has no variables"
    for name, body in variables.items():
        assert body.get("type"), f"{folder}: variable {name} has no type"
        assert len(body.get("description", "")) > 10, f"{folder}: variable {name} has no description"
    for name, body in _blocks(parsed, folder, "output").items():
        assert len(body.get("description", "")) > 5, f"{folder}: output {name} has no description"
    assert any(Path(p).name == "versions.tf" and str(Path(p).parent) == folder for p in parsed)


def test_module_calls_give_exactly_the_modules_variables(parsed) -> None:
    for name, call in _blocks(parsed, ".", "module").items():
        folder = call["source"].removeprefix("./")
        variables = _blocks(parsed, folder, "variable")
        given = set(call) - {"source"}
        required = {v for v, body in variables.items() if "default" not in body}
        assert required <= given <= set(variables), f"module {name}: {given ^ set(variables)}"


def test_buckets_are_versioned_encrypted_private_and_age_into_colder_classes(parsed) -> None:
    module = _resources(parsed, "modules/s3-bucket")
    assert module["aws_s3_bucket_versioning.this"]["versioning_configuration"][0]["status"] == "Enabled"
    sse = module["aws_s3_bucket_server_side_encryption_configuration.this"]["rule"][0]
    assert sse["apply_server_side_encryption_by_default"][0]["sse_algorithm"] == "aws:kms"
    block = module["aws_s3_bucket_public_access_block.this"]
    assert all(
        block[k] is True
        for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )
    rule = module["aws_s3_bucket_lifecycle_configuration.this"]["rule"][0]
    assert [t["storage_class"] for t in rule["transition"]] == ["STANDARD_IA", "GLACIER_IR"]
    calls = _blocks(parsed, ".", "module")
    buckets = [c for c in calls.values() if c["source"] == "./modules/s3-bucket"]
    assert {c["name"] for c in buckets} == {
        "${local.buckets.dvc}",
        "${local.buckets.archive}",
        "${local.buckets.mlflow}",
    }


def test_the_database_is_private_encrypted_and_kept(parsed) -> None:
    db = _resources(parsed, "modules/mlflow-postgres")["aws_db_instance.this"]
    assert db["publicly_accessible"] is False
    assert db["storage_encrypted"] is True and db["manage_master_user_password"] is True
    assert db["deletion_protection"] is True and db["multi_az"] is True and db["backup_retention_period"] >= 7
    assert "password" not in db  # generated and kept by RDS in Secrets Manager, never in state
    rules = _resources(parsed, "modules/mlflow-postgres")
    ingress = [b for k, b in rules.items() if k.startswith("aws_vpc_security_group_ingress_rule.")]
    assert ingress and all("cidr_ipv4" not in b and b["from_port"] == b["to_port"] == 5432 for b in ingress)


def test_irsa_roles_trust_only_their_service_accounts(parsed) -> None:
    irsa = _policy_documents(parsed, "modules/irsa-role")["trust"]
    (statement,) = irsa["statement"]
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    tests = {c["variable"].rsplit(":", 1)[1]: c for c in statement["condition"]}
    assert tests["aud"]["values"] == ["sts.amazonaws.com"] and tests["sub"]["test"] == "StringEquals"
    policies = _policy_documents(parsed, ".")
    for workload in ("pipeline", "deployer", "serving", "mlflow"):
        for stmt in policies[workload]["statement"]:
            assert all(r != "*" for r in stmt["resources"]), (workload, stmt)
            assert all(not a.endswith(":*") for a in stmt["actions"]), (workload, stmt)
    actions = {
        w: {a for s in policies[w]["statement"] for a in s["actions"]}
        for w in ("pipeline", "deployer", "serving")
    }
    assert "s3:DeleteObject" not in actions["pipeline"]  # the archive is write-once
    assert not {"s3:PutObject", "s3:DeleteObject"} & (actions["deployer"] | actions["serving"])  # read only


def test_checkov_has_no_failed_check_and_every_skip_is_justified() -> None:
    checkov = _venv("checkov") / "bin" / "checkov"
    done = subprocess.run(
        [str(checkov), "-d", str(TF), "--framework", "terraform", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(done.stdout)
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in report["results"]["failed_checks"]
    ]
    assert summary["failed"] == 0 and not failed, "\n".join(failed)
    assert summary["parsing_errors"] == 0 and summary["passed"] >= 250
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) >= 40, f"{check['check_id']} on {check['resource']}: skip without a real reason"
    assert done.returncode == 0


@pytest.mark.skipif(
    shutil.which("terraform") is None, reason="terraform is not installed (fmt needs no provider)"
)
def test_terraform_fmt_is_clean() -> None:
    done = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", str(TF)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- the names the manifests use ------------------------------------------------------------------------


def _defaults(parsed) -> dict[str, Any]:
    return {name: body.get("default") for name, body in _blocks(parsed, ".", "variable").items()}


def _resolve(value: str, parsed) -> str:
    defaults = _defaults(parsed)
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(defaults[m.group(1)]), value)


def test_bucket_and_role_names_agree_with_the_manifests(parsed) -> None:
    local = {k: v for block in parsed["main.tf"]["locals"] for k, v in block.items()}
    buckets = {k: _resolve(v, parsed) for k, v in local["buckets"].items()}
    pipelines = render(REPO / "deploy" / "pipelines")
    repo_config = yaml.safe_load(
        one(pipelines, "ConfigMap", "artifact-repositories")["data"]["autotrader-s3"]
    )
    assert repo_config["s3"]["bucket"] == buckets["dvc"]
    assert repo_config["s3"]["region"] == _defaults(parsed)["region"]
    mlflow = render(REPO / "deploy" / "mlflow")
    server = one(mlflow, "ConfigMap", "mlflow-server")["data"]
    assert server["artifacts-destination"] == f"s3://{buckets['mlflow']}/{local['mlflow_artifacts_prefix']}"
    assert server["db-name"] == local["mlflow_database_name"] and server["db-port"] == "5432"
    roles = {
        c["name"]: c for c in _blocks(parsed, ".", "module").values() if c["source"] == "./modules/irsa-role"
    }
    for account in find(pipelines, "ServiceAccount"):
        arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        role = arn.rsplit("/", 1)[1]
        call = roles["${var.name_prefix}-" + role.removeprefix(_defaults(parsed)["name_prefix"] + "-")]
        workload = call["service_accounts"].removeprefix("${local.workloads.").rstrip("}")
        assert (
            f"{account['metadata']['namespace']}/{account['metadata']['name']}"
            in local["workloads"][workload]
        )


def test_every_trusted_service_account_exists_in_the_app_of_apps(parsed) -> None:
    local = {k: v for block in parsed["main.tf"]["locals"] for k, v in block.items()}
    _, children = app_tree(REPO)
    accounts = {
        f"{o['metadata'].get('namespace') or child.namespace}/{o['metadata']['name']}"
        for child in children
        for o in (child.objects or [])
        if o["kind"] == "ServiceAccount"
    }
    trusted = {sa for sas in local["workloads"].values() for sa in sas}
    assert trusted <= accounts, trusted - accounts
    assert set(local["workloads"]) == {"pipeline", "deployer", "serving", "mlflow"}
