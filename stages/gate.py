"""Stage ``gate``: decide whether the evaluated model may be promoted; write ``metrics/gates.json``.

Every gate in ``params.gates`` must pass at portfolio level on the pooled walk-forward returns (the
deflated Sharpe over every trial counted included); when the registry has a ``champion``, it and the
candidate are backtested on the same rows — the last test window, the one the shipped model never
saw — and the candidate may trail its Sharpe by at most ``gates.max_regression``. ``verdict`` is
``pass``, ``fail`` or ``insufficient_evidence`` (the window cannot hold ``min_trades`` bets). A failed gate is an outcome, not an error: the stage exits 0 and records
``"promote": false``. gates.json carries the content hash of the model folder it judged, so
``promote`` can refuse a model that changed since.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from autotrader import registry
from autotrader.atomic import write_json
from autotrader.console import console, stage_main
from autotrader.errors import ModelError
from autotrader.faults import fault_point
from autotrader.jsonfiles import read_json
from autotrader.metrics_files import write_headline
from autotrader.modeling.dataset import read_prepared, window_spans
from autotrader.modeling.evaluation import backtest_model
from autotrader.modeling.gates import decide, evaluate_gates, failures, verdict
from autotrader.modeling.lineage import model_hash
from autotrader.modeling.tracking import LocalModel, load_local_model, load_registered_model
from autotrader.modeling.walkforward import window_of
from autotrader.params import Params, load_params


def champion_result(
    params: Params, features: list[str], test: pd.DataFrame, candidate: LocalModel
) -> dict | None:
    """The champion's and the candidate's Sharpe on the same rows, or why not comparable; None if no champion."""
    name = params.mlflow.model_name
    version = registry.version_for_alias(name, registry.CHAMPION)
    if version is None:
        return None
    champion = load_registered_model(registry.model_uri(name, version))
    if champion.inputs != features:
        return {"version": version, "skipped": f"champion v{version} takes other features than the candidate"}
    result = backtest_model(champion.model, test, features, params)
    mine = backtest_model(candidate.model, test, features, params)
    return {
        "version": version,
        "sharpe": result.metrics["portfolio"]["sharpe"],
        "candidate_sharpe": mine.metrics["portfolio"]["sharpe"],
        "rows": len(test),
    }


def main() -> int:
    params = load_params()
    fault_point("gate", "start")
    paths = params.paths
    evaluate_path = Path(paths.metrics) / "evaluate.json"
    evaluation = read_json(evaluate_path, ModelError, "run the evaluate stage first")
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
    test = prepared.parts["test"]
    spans = window_spans(prepared.info)
    last = test[window_of(test["timestamp"], spans) == len(spans) - 1].reset_index(drop=True)
    with console.status("gate: checking the champion"):
        champion = champion_result(params, features, last, local)
    fault_point("gate", "middle")
    results = evaluate_gates(
        evaluation["portfolio"],
        params.gates,
        champion,
        dsr=evaluation.get("dsr"),
        capacity=evaluation.get("capacity"),
    )
    promote = decide(results)
    record = {
        "promote": promote,
        "verdict": verdict(results),
        "gates": results,
        "failed": failures(results),
        "champion": champion,
        "model_hash": current_hash,
        "run_id": local.run_id or evaluation.get("run_id"),
        "model_id": local.model_id,
        "model_name": params.mlflow.model_name,
        "features": features,
        "trials": (evaluation.get("dsr") or {}).get("trials"),
        "windows": evaluation.get("windows"),
    }
    fault_point("gate", "end")
    write_json(Path(paths.metrics) / "gates.json", record)
    write_headline(paths.metrics, "gates", record)
    if promote:
        console.print("gate: [green]all gates pass[/] → promote")
    else:
        console.print(f"gate: [yellow]not promoted ({record['verdict']})[/]: {'; '.join(record['failed'])}")
    return 0


if __name__ == "__main__":
    stage_main(main)
