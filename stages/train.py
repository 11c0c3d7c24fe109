"""Stage ``train``: select and fit the model, log the run to MLflow, write the model folder.

Fails fast (before any work) when the tracking server is unreachable. The fit runs inside the
MLflow run (a real duration; a failed fit leaves a FAILED run carrying the error and the params it
tried), whose input dataset is the feature store with DVC's hash as digest. The model folder
(``params.paths.model``) is a download of exactly the model logged to the run, written atomically;
``metrics/train.json`` names the run and logged model so evaluate/gate/promote report to them.

The new model folder is swapped in only after it loads and takes exactly the prepared features, and
the output is ``persist: true`` in dvc.yaml: a failed or killed training keeps the last good model.
The run holds ``models/.model.lock``, sweeps what a killed run left beside the model, and marks
the training runs a killed process left RUNNING in MLflow as FAILED.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotrader import registry
from autotrader.atomic import atomic_dir, guard_output, write_json
from autotrader.console import console, progress, stage_main
from autotrader.faults import fault_point
from autotrader.features.contract import feature_set_record
from autotrader.metrics_files import write_headline
from autotrader.modeling import train as training
from autotrader.modeling.dataset import read_prepared, window_spans
from autotrader.modeling.lineage import data_version, git_commit, model_hash
from autotrader.modeling.model_card import render
from autotrader.modeling.model_card import summary as summary_text
from autotrader.modeling.models import hyperparameters
from autotrader.modeling.tracking import (
    CARD_ARTIFACT,
    NOTE_TAG,
    check_inputs,
    download_model,
    fail_abandoned_runs,
    finite_metrics,
    flat_params,
    load_local_model,
    log_feature_store,
    log_model,
    log_replay_rows,
    replay_rows,
    run_owner_tags,
    training_run,
)
from autotrader.modeling.trials import FIT_PENDING, FIT_STARTED, FIT_TAG, MODEL_TAG, count_trials
from autotrader.params import Params, load_params


def main() -> int:
    params = load_params()
    with guard_output(
        params.paths.model, tempdirs=True, also=(Path(params.paths.metrics) / "train.json",)
    ) as swept:
        for path in swept:
            console.print(f"train: removed {path} (left by a killed run)", soft_wrap=True)
        return train(params)


def train(params: Params) -> int:
    import mlflow

    paths = params.paths
    fault_point("train", "start")
    registry.connect(params)
    experiment_id = registry.ensure_experiment(params)
    uri = registry.tracking_uri(params)
    with registry.mlflow_errors("failing runs a killed training left RUNNING", uri):
        for run_id in fail_abandoned_runs(mlflow.MlflowClient(), experiment_id, uri):
            console.print(f"train: marked run {run_id} FAILED (its process was killed)", soft_wrap=True)
    prepared = read_prepared(paths.prepared)
    features = list(prepared.info["features"])
    # The shipped model is the one the last walk-forward window tests: it also learns from the
    # earlier OOS windows (purged and embargoed against the last one), as the weekly retraining would.
    last_window = window_spans(prepared.info)[-1].start
    earlier_oos = training.rows_before(prepared.parts.pop("test"), last_window, params.train.embargo)
    lineage = {**data_version(paths.features), **git_commit()}

    # The fit runs inside the MLflow run: its duration is the training's, and a failed fit leaves a
    # FAILED run with the error (tracking.training_run) and the configuration it tried.
    with (
        registry.mlflow_errors("logging the training run", uri),
        training_run(experiment_id, "train", {**run_owner_tags(), **run_tags(params, lineage)}) as run,
    ):
        mlflow.log_params(logged_params(params, prepared.info, features, lineage))
        log_feature_store(
            paths.features, lineage["data_version"], features, digest_source=lineage["data_version_source"]
        )
        mlflow.set_tag(FIT_TAG, FIT_STARTED)
        with progress() as bar:
            task = bar.add_task("train", total=training.steps(params.train))
            result = training.fit(
                prepared.parts["train"],
                prepared.parts["valid"],
                features,
                params.train,
                advance=lambda label: bar.update(task, advance=1, description=label),
                where=f"{paths.prepared}/train.parquet",
                extra=earlier_oos,
                final_before=last_window,
            )
        client = mlflow.MlflowClient()
        client.update_run(run.info.run_id, name=f"train-{result.chosen}")
        mlflow.set_tag("autotrader.candidate", result.chosen)
        mlflow.log_param("chosen", result.chosen)
        trials = count_trials(
            client,
            experiment_id,
            params.mlflow.model_name,
            len(params.train.candidates),
            exclude_run_id=run.info.run_id,
        )

        fault_point("train", "middle")
        summary = {
            "chosen": result.chosen,
            "cv_metric": params.train.cv_metric,
            "cv": {
                name: {"mean": cand.mean, "folds": cand.fold_scores}
                for name, cand in result.candidates.items()
            },
            "valid": result.valid_scores,
            "counts": result.counts,
            "features": len(features),
            "trials": trials,
            **lineage,
        }
        for name, cand in result.candidates.items():
            for step, scores in enumerate(cand.fold_scores, start=1):
                mlflow.log_metrics(
                    finite_metrics({f"cv.{name}.{k}": v for k, v in scores.items()}), step=step
                )
            mlflow.log_metric(f"cv.{name}.{params.train.cv_metric}_mean", cand.mean)
        mlflow.log_metrics(finite_metrics({f"valid.{k}": v for k, v in result.valid_scores.items()}))
        X = prepared.parts["train"][features]
        model_info = log_model(result.model, X, feature_set=feature_set_record(prepared.info))
        summary.update(run_id=run.info.run_id, model_id=model_info.model_id, model_uri=model_info.model_uri)
        mlflow.log_text(render(params, training=summary, prepared=prepared.info), CARD_ARTIFACT)
        # the run's description until evaluate replaces it: the card's summary, training part
        mlflow.set_tag(NOTE_TAG, summary_text(params, training=summary, prepared=prepared.info))
        mlflow.log_dict(prepared.info, "prepared/splits.json")
        log_replay_rows(replay_rows(prepared.parts["valid"], features))

        with atomic_dir(paths.model) as tmp:  # swapped in last: a failure above leaves the old model
            download_model(model_info.model_uri, tmp)
            check_inputs(load_local_model(tmp), features, f"{paths.prepared}/train.parquet")  # it loads
            summary["model_hash"] = model_hash(tmp)
            mlflow.set_tag("model_hash", summary["model_hash"])
            fault_point("train", "end")  # complete and checked aside, not yet swapped in

    write_json(Path(paths.metrics) / "train.json", summary)
    write_headline(paths.metrics, "train", summary)
    console.print(
        f"train: chose {result.chosen} (CV {params.train.cv_metric} "
        + ", ".join(f"{n} {c.mean:.4f}" for n, c in result.candidates.items())
        + f"); valid {', '.join(f'{k} {v:.3f}' for k, v in result.valid_scores.items())}; "
        f"run {summary['run_id']} → {paths.model}"
    )
    return 0


def run_tags(params: Params, lineage: dict[str, Any]) -> dict[str, str]:
    """Tags set when the run starts, before the fit: a failed run still says what it trained on."""
    return {
        "autotrader.stage": "train",
        MODEL_TAG: params.mlflow.model_name,
        FIT_TAG: FIT_PENDING,  # a run that fails before the fit counts as no trial
        "data_version": lineage["data_version"],
        "data_version_source": lineage["data_version_source"],
        "git_commit": lineage["git_commit"] or "none",
        "git_dirty": str(lineage["git_dirty"]),
    }


def logged_params(
    params: Params, info: dict[str, Any], features: list[str], lineage: dict[str, Any]
) -> dict[str, Any]:
    """The run's params: train knobs, every candidate's hyper-parameters, the window boundaries."""
    logged = {**flat_params("train", params.train.model_dump(exclude={"hgb", "logreg"}))}
    for name in params.train.candidates:
        logged.update(hyperparameters(name, params.train))
    logged.update(
        {
            "n_features": len(features),
            "window_start": info["boundaries"]["start"],
            "valid_start": info["boundaries"]["valid_start"],
            "test_start": info["boundaries"]["test_start"],
            "window_end": info["boundaries"]["end"],
            "data_version": lineage["data_version"],
        }
    )
    return logged


if __name__ == "__main__":
    stage_main(main)
