"""Registry promotion: register the gated model in MLflow and point the ``staging`` alias at it.

Only when ``metrics/gates.json`` says ``"promote": true`` *for this very model* (its content hash) and
the model's input signature matches the feature store. Every check (gate freshness, signature, the
training run's presence) runs before the registry is touched, so a refusal changes nothing there; a
failed alias move deletes the version it just created. ``if_approved`` (the DVC stage) turns "the
gates said no" into a recorded outcome (``metrics/promotion.json`` with ``"promoted": false``); every
other refusal stays a ``PromotionRefused``.

The library function under both ``stages/promote.py`` (the DVC stage) and ``autotrader promote`` (the
CLI). The GitOps side (pinning a registered version in an environment's overlay) is
``autotrader.gitops.promotion``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotrader import registry
from autotrader.atomic import write_json
from autotrader.console import console
from autotrader.errors import AutoTraderError, PromotionRefused
from autotrader.faults import fault_point
from autotrader.jsonfiles import read_json
from autotrader.modeling.lineage import git_commit, model_hash
from autotrader.modeling.model_card import card_summary, model_description
from autotrader.modeling.tracking import card_of_run, load_local_model
from autotrader.params import Params
from autotrader.store import feature_columns

PROMOTION_FILE = "promotion.json"


def read_gates(path: Path) -> dict[str, Any]:
    verdict = read_json(path, PromotionRefused, "run the gate stage before promoting")
    if not isinstance(verdict, dict) or "promote" not in verdict:
        raise PromotionRefused(f'{path}: has no "promote" decision')
    return verdict


def check_fresh(verdict: dict[str, Any], gates_path: Path, model_dir: Path) -> str:
    """The gates must have judged this model: same content hash (or, without one, a newer gates file)."""
    if not (model_dir / "MLmodel").is_file():
        raise PromotionRefused(f"{model_dir}: no model to promote (run the train stage)")
    current = model_hash(model_dir)
    recorded = verdict.get("model_hash")
    if recorded is not None:
        if recorded != current:
            raise PromotionRefused(
                f"{gates_path} judged another model than {model_dir} (recorded model hash {recorded[:12]}…, "
                f"now {current[:12]}…): rerun evaluate and gate"
            )
        return current
    newest = max(p.stat().st_mtime for p in model_dir.rglob("*") if p.is_file())
    if gates_path.stat().st_mtime < newest:
        raise PromotionRefused(f"{gates_path} is older than {model_dir}: rerun evaluate and gate")
    return current


def check_signature(params: Params, model_dir: Path) -> Any:
    """The model's inputs must be exactly the feature store's columns, in order."""
    try:
        local = load_local_model(model_dir)
        store_features = feature_columns(params.paths.features)
    except AutoTraderError as exc:
        raise PromotionRefused(f"cannot check the model against the feature store: {exc}") from exc
    if local.inputs != store_features:
        missing = [f for f in store_features if f not in local.inputs]
        extra = [f for f in local.inputs if f not in store_features]
        raise PromotionRefused(
            f"{model_dir}: input signature does not match the feature store {params.paths.features} "
            f"(store has {missing or 'no'} extra column(s), model expects {extra or 'no'} unknown one(s)"
            f"{'; same names in another order' if not missing and not extra else ''})"
        )
    return local


def version_tags(
    verdict: dict[str, Any], evaluation: dict[str, Any], run_tags: dict[str, str]
) -> dict[str, str]:
    """Lineage and results carried by the registered version."""
    tags: dict[str, Any] = {
        "git_commit": git_commit().get("git_commit") or "none",
        "train_git_commit": run_tags.get("git_commit", "none"),
        "data_version": run_tags.get("data_version", "unknown"),
        "model_hash": verdict["model_hash"],
        "gates.promote": str(bool(verdict["promote"])).lower(),
    }
    for gate in verdict.get("gates", []):
        value, threshold = registry.tag_number(gate["value"]), registry.tag_number(gate["threshold"])
        tags[f"gate.{gate['name']}"] = f"{gate['verdict']} ({value} {gate['op']} {threshold})"
    for key in ("sharpe", "max_drawdown", "win_rate", "n_trades", "profit_factor"):
        if key in evaluation.get("portfolio", {}):
            tags[f"metric.{key}"] = evaluation["portfolio"][key]
    return {k: registry.tag_number(v) for k, v in tags.items()}  # numbers to 4 significant digits


def existing_version(name: str, digest: str) -> str | None:
    """A version already registered for this exact model folder (promote is idempotent)."""
    import mlflow

    client = mlflow.MlflowClient()
    for version in registry.list_versions(name):
        if client.get_model_version(name, version).tags.get("model_hash") == digest:
            return version
    return None


def promote_model(params: Params, *, if_approved: bool = False) -> dict[str, Any]:
    """Check everything, then register and alias. Returns what was written to promotion.json."""
    import mlflow

    paths = params.paths
    fault_point("promote", "start")
    gates_path = Path(paths.metrics) / "gates.json"
    out_path = Path(paths.metrics) / PROMOTION_FILE
    verdict = read_gates(gates_path)
    if not verdict["promote"]:
        reason = "gates failed: " + ("; ".join(verdict.get("failed", [])) or "see gates.json")
        if if_approved:
            record = {"promoted": False, "reason": reason, "model_name": params.mlflow.model_name}
            write_json(out_path, record)
            console.print(f"promote: [yellow]not promoted[/] ({reason}) → {out_path}")
            return record
        raise PromotionRefused(f"{gates_path}: {reason}")
    model_dir = Path(paths.model)
    digest = check_fresh(verdict, gates_path, model_dir)
    verdict["model_hash"] = digest
    local = check_signature(params, model_dir)
    fault_point("promote", "middle")
    evaluation_path = Path(paths.metrics) / "evaluate.json"
    evaluation = read_json(evaluation_path, PromotionRefused, missing_ok=True) or {}

    client = registry.connect(params)
    name = params.mlflow.model_name
    run_tags: dict[str, str] = {}
    if local.run_id:
        try:
            run_tags = dict(client.get_run(local.run_id).data.tags)
        except Exception as exc:  # the run must exist where we register: it is the model's source
            raise PromotionRefused(
                f"training run {local.run_id} of {model_dir} is not in {registry.tracking_uri(params)} ({exc})"
            ) from exc
    tags = version_tags(verdict, evaluation, run_tags)
    version = existing_version(name, digest)
    fault_point("promote", "end")  # everything checked; the registry not yet touched
    created = version is None
    if created:
        source = f"models:/{local.model_id}" if local.model_id else f"runs:/{local.run_id}/model"
        version = registry.register_model(
            source,
            name,
            run_id=local.run_id,
            model_id=local.model_id,
            tags=tags,
            description=card_summary(card_of_run(local.run_id)) if local.run_id else None,
            model_description=model_description(),
        )
    try:
        registry.set_alias(name, registry.STAGING, version)
    except AutoTraderError:
        if created:  # leave the registry as it was
            mlflow.MlflowClient().delete_model_version(name, version)
        raise
    record = {
        "promoted": True,
        "model_name": name,
        "version": version,
        "alias": registry.STAGING,
        "uri": registry.model_uri(name, version),
        "alias_uri": registry.alias_uri(name, registry.STAGING),
        "run_id": local.run_id,
        "model_id": local.model_id,
        "model_hash": digest,
        "newly_registered": created,
    }
    write_json(out_path, record)
    console.print(
        f"promote: [green]{name} v{version}[/] → alias {registry.STAGING} ({record['uri']}) → {out_path}"
    )
    return record
