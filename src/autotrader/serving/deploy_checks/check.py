"""``autotrader deploy check``: can this model be served here at all? (no server is started)

Loads the candidate, compares its pinned requirements with what is installed and its signature with
the feature store's columns, and smoke-predicts golden inputs; writes the report.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autotrader.atomic import write_json
from autotrader.errors import AutoTraderError, DeployError
from autotrader.params import Params
from autotrader.serving.deploy_checks.candidate import Check, fetch_model_dir, resolve_candidate
from autotrader.serving.deploy_checks.compatibility import (
    check_requirements,
    check_signature,
    store_feature_columns,
)
from autotrader.serving.deploy_checks.inputs import check_golden, golden_instances, read_golden
from autotrader.serving.deploy_checks.report import failure_message, summarize
from autotrader.serving.model import (
    load,
)


def deploy_check(
    params: Params,
    model_uri: str,
    *,
    golden_path: Path | None = None,
    write_golden_path: Path | None = None,
    features_root: Path | None = None,
    report_path: Path | None = None,
) -> dict[str, Any]:
    """Run every static check; write the report; raise DeployError naming each failed check."""
    features_root = Path(features_root or params.paths.features)
    report_path = Path(report_path or Path(params.paths.reports) / "deploy" / "check.json")
    golden = read_golden(golden_path) if golden_path is not None else None
    candidate = resolve_candidate(params, model_uri)
    checks: list[Check] = []
    golden_out: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="autotrader-deploy-") as tmp:
        model_dir = fetch_model_dir(candidate, Path(tmp))
        checks.extend(check_requirements(model_dir))
        try:
            model = load(str(model_dir))
        except Exception as exc:  # whatever MLflow/the flavour raises: the model cannot be served
            checks.append(Check("model loads", False, f"{type(exc).__name__}: {exc}", True))
            model = None
        if model is not None:
            checks.append(Check("model loads", True, f"{len(model.columns or [])} input columns"))
            try:
                store_cols = store_feature_columns(features_root)
            except AutoTraderError as exc:
                checks.append(
                    Check(
                        "signature matches feature store",
                        False,
                        f"{exc} (pull it with `dvc pull {features_root}` or pass --features-root)",
                        True,
                    )
                )
            else:
                checks.append(check_signature(model.columns, store_cols))
            instances = golden["instances"] if golden else golden_instances(model, features_root)
            expected = golden.get("predictions") if golden else None
            golden_checks, predictions = check_golden(model, instances, expected)
            checks.extend(golden_checks)
            if predictions is not None:
                golden_out = {
                    "model_uri": candidate.uri,
                    "feature_columns": list(model.columns or []),
                    "instances": instances,
                    "predictions": predictions,
                }
    report = {
        "kind": "deploy-check",
        "model_uri": candidate.uri,
        "model_version": candidate.label,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **summarize(checks),
        "ok": all(c.passed for c in checks),
    }
    write_json(report_path, report)
    if not report["ok"]:
        raise DeployError(failure_message(f"deploy check of {candidate.uri} failed", checks))
    if write_golden_path is not None and golden_out is not None:
        write_json(write_golden_path, golden_out)
    return report
