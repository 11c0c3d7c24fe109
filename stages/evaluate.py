"""Stage ``evaluate``: walk-forward out-of-sample backtest; metrics, plots and the model card.

The chosen configuration is refitted before each of the ``train.oos_windows`` test windows except the
last, which the shipped model predicts (``autotrader.modeling.walkforward``); the pooled returns are
what the gates judge.

Writes ``metrics/evaluate.json``, ``reports/plots/`` (CSV for ``dvc plots`` + PNG) and
``reports/model_card.md``, each atomically, and logs them to the training run in MLflow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from autotrader import registry
from autotrader.atomic import atomic_dir, write_json, write_text
from autotrader.console import console, stage_main
from autotrader.errors import ModelError
from autotrader.faults import fault_point
from autotrader.jsonfiles import read_json
from autotrader.metrics_files import write_headline
from autotrader.modeling.dataset import read_prepared, window_spans
from autotrader.modeling.evaluation import evaluate, local_trials
from autotrader.modeling.lineage import file_md5, model_hash
from autotrader.modeling.model_card import card_summary, render
from autotrader.modeling.plots import write_all
from autotrader.modeling.tracking import (
    CARD_ARTIFACT,
    NOTE_TAG,
    check_inputs,
    finite_metrics,
    load_local_model,
    log_test_split,
)
from autotrader.modeling.walkforward import predict_out_of_sample
from autotrader.params import load_params

if TYPE_CHECKING:
    from mlflow import MlflowClient


def read_training(path: Path) -> dict:
    return dict(read_json(path, ModelError, "run the train stage first"))


def main() -> int:
    params = load_params()
    fault_point("evaluate", "start")
    paths = params.paths
    client = registry.connect(params)
    prepared = read_prepared(paths.prepared)
    features = list(prepared.info["features"])
    local = load_local_model(paths.model)
    check_inputs(local, features, f"{paths.prepared}/test.parquet")
    training = read_training(Path(paths.metrics) / "train.json")
    run_id = local.run_id or training.get("run_id")
    if not run_id:
        raise ModelError(f"{paths.model}: the model names no MLflow run (run the train stage)")
    uri = registry.tracking_uri(params)
    with registry.mlflow_errors(f"finding the training run {run_id} of {paths.model}", uri):
        client.get_run(run_id)

    history = pd.concat([prepared.parts["train"], prepared.parts["valid"]], ignore_index=True)
    with console.status("evaluate: walk-forward refits and the out-of-sample backtest"):
        oos = predict_out_of_sample(
            history,
            prepared.parts["test"],
            features,
            params.train,
            str(training.get("chosen")),
            window_spans(prepared.info),
            last_model=local.model,
        )
        trials = training.get("trials") or local_trials(params)
        result = evaluate(local.model, prepared.parts["test"], features, params, oos=oos, trials=trials)
    metrics = {
        **result.metrics,
        "run_id": run_id,
        "model_id": local.model_id,
        "model_hash": model_hash(paths.model),
    }
    fault_point("evaluate", "middle")
    card = render(params, training=training, prepared=prepared.info, evaluation=metrics)

    # Log first, from the not-yet-visible plots folder: if MLflow fails, no output has changed.
    with atomic_dir(Path(paths.reports) / "plots") as plots:
        write_all(plots, result.plots)
        with registry.mlflow_errors(f"logging the evaluation to run {run_id}", uri):
            log_evaluation(client, run_id, metrics, card, plots)
            test_path = f"{paths.prepared}/test.parquet"  # its md5 is the one DVC lists for it
            log_test_split(
                client, run_id, test_path, file_md5(test_path), features, len(prepared.parts["test"])
            )
    fault_point("evaluate", "end")
    write_text(Path(paths.reports) / "model_card.md", card)
    write_json(Path(paths.metrics) / "evaluate.json", metrics)
    write_headline(paths.metrics, "evaluate", metrics)
    p = metrics["portfolio"]
    console.print(
        f"evaluate: {len(metrics['windows'])} OOS windows pooled: Sharpe {p['sharpe']:.2f}, max DD "
        f"{p['max_drawdown']:.1%}, win rate {p['win_rate']:.1%}, {p['n_trades']} trades; IC {metrics['ic']:.3f}; "
        f"DSR {metrics['dsr']['dsr']:.3f} ({metrics['dsr']['n_trials']:.0f} trials) → {paths.metrics}/evaluate.json"
    )
    return 0


def log_evaluation(client: MlflowClient, run_id: str, metrics: dict, card: str, plots: Path) -> None:
    """Test-window metrics, the final model card (its summary as the run's description), the plots and
    evaluate.json, into the training run."""
    from mlflow.entities import Metric

    flat = {f"test.{k}": v for k, v in metrics["portfolio"].items()}
    for key, inst in metrics["instruments"].items():
        flat.update(
            {f"test.{key}.{k}": v for k, v in inst.items() if k in ("sharpe", "win_rate", "n_trades")}
        )
    flat.update({f"test.{k}": v for k, v in metrics["classification"].items()})
    flat.update(
        {"test.ic": metrics["ic"], "test.rank_ic": metrics["rank_ic"], "test.dsr": metrics["dsr"]["dsr"]}
    )
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in finite_metrics(flat).items()])
    client.log_text(run_id, card, CARD_ARTIFACT)
    client.set_tag(run_id, NOTE_TAG, card_summary(card))  # the run's description: the final summary
    client.log_artifacts(run_id, str(plots), "plots")
    client.log_dict(run_id, metrics, "evaluate.json")


if __name__ == "__main__":
    stage_main(main)
