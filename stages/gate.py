"""Stage ``gate``: decide whether the evaluated model may be promoted; write ``metrics/gates.json``.

Every gate in ``params.gates`` must pass at portfolio level; when the registry has a ``champion``, it is
backtested on the same test window and the candidate may trail its Sharpe by at most
``gates.max_regression``. A failed gate is an outcome, not an error: the stage exits 0 and records
``"promote": false``. gates.json carries the content hash of the model folder it judged, so
``promote`` can refuse a model that changed since.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from autotrader import registry
from autotrader.atomic import write_json
from autotrader.console import console, stage_main
from autotrader.errors import ModelError
from autotrader.modeling.dataset import read_prepared
from autotrader.modeling.evaluation import backtest_model
from autotrader.modeling.gates import decide, evaluate_gates, failures
from autotrader.modeling.lineage import model_hash
from autotrader.modeling.tracking import load_local_model, load_registered_model
from autotrader.params import Params, load_params


def champion_result(params: Params, features: list[str], test: pd.DataFrame) -> dict | None:
    """The champion's Sharpe on the same test rows, or why it could not be compared; None if no champion."""
    name = params.mlflow.model_name
    version = registry.version_for_alias(name, registry.CHAMPION)
    if version is None:
        return None
    champion = load_registered_model(registry.model_uri(name, version))
    if champion.inputs != features:
        return {"version": version, "skipped": f"champion v{version} takes other features than the candidate"}
    result = backtest_model(champion.model, test, features, params)
    return {"version": version, "sharpe": result.metrics["portfolio"]["sharpe"]}


def main() -> int:
    params = load_params()
    paths = params.paths
    evaluate_path = Path(paths.metrics) / "evaluate.json"
    try:
        evaluation = json.loads(evaluate_path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{evaluate_path}: not found (run the evaluate stage first)") from exc
    except ValueError as exc:
        raise ModelError(f"{evaluate_path}: not valid JSON ({exc})") from exc
    current_hash = model_hash(paths.model)
    if evaluation.get("model_hash") != current_hash:
        raise ModelError(
            f"{evaluate_path} was computed for another model than {paths.model} (model hash differs); "
            "run the evaluate stage again"
        )
    local = load_local_model(paths.model)
    registry.connect(params)
    prepared = read_prepared(paths.prepared, names=("test",))
    features = list(prepared.info["features"])
    with console.status("gate: checking the champion"):
        champion = champion_result(params, features, prepared.parts["test"])
    results = evaluate_gates(evaluation["portfolio"], params.gates, champion)
    promote = decide(results)
    verdict = {
        "promote": promote,
        "gates": results,
        "failed": failures(results),
        "champion": champion,
        "model_hash": current_hash,
        "run_id": local.run_id or evaluation.get("run_id"),
        "model_id": local.model_id,
        "model_name": params.mlflow.model_name,
        "features": features,
    }
    write_json(Path(paths.metrics) / "gates.json", verdict)
    if promote:
        console.print("gate: [green]all gates pass[/] → promote")
    else:
        console.print(f"gate: [yellow]not promoted[/]: {'; '.join(verdict['failed'])}")
    return 0


if __name__ == "__main__":
    stage_main(main)
