"""Stage ``train``: select and fit the model, log the run to MLflow, write the model folder.

Fails fast (before any work) when the tracking server is unreachable. The model folder
(``params.paths.model``) is a download of exactly the model logged to the run, written atomically;
``metrics/train.json`` names the run and logged model so evaluate/gate/promote report to them.

The new model folder is swapped in only after it loads and takes exactly the prepared features, and
the output is ``persist: true`` in dvc.yaml: a failed or killed training keeps the last good model.
The run holds ``models/.model.lock``, sweeps what a killed run left beside the model, and marks
the training runs a killed process left RUNNING in MLflow as FAILED.
"""

from __future__ import annotations

from pathlib import Path

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
from autotrader.modeling.models import hyperparameters
from autotrader.modeling.tracking import (
    CARD_ARTIFACT,
    check_inputs,
    download_model,
    fail_abandoned_runs,
    finite_metrics,
    flat_params,
    load_local_model,
    log_model,
    log_replay_rows,
    replay_rows,
    run_owner_tags,
)
from autotrader.modeling.trials import MODEL_TAG, count_trials
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
    with registry.mlflow_errors("failing runs a killed training left RUNNING", registry.tracking_uri(params)):
        for run_id in fail_abandoned_runs(
            mlflow.MlflowClient(), experiment_id, registry.tracking_uri(params)
        ):
            console.print(f"train: marked run {run_id} FAILED (its process was killed)", soft_wrap=True)
    prepared = read_prepared(paths.prepared)
    features = list(prepared.info["features"])
    # The shipped model is the one the last walk-forward window tests: it also learns from the
    # earlier OOS windows (purged and embargoed against the last one), as the weekly retraining would.
    last_window = window_spans(prepared.info)[-1].start
    earlier_oos = training.rows_before(prepared.parts.pop("test"), last_window, params.train.embargo)
    lineage = {**data_version(paths.features), **git_commit()}

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
    with registry.mlflow_errors("counting earlier trials of this model", registry.tracking_uri(params)):
        trials = count_trials(
            mlflow.MlflowClient(), experiment_id, params.mlflow.model_name, len(params.train.candidates)
        )

    fault_point("train", "middle")
    summary = {
        "chosen": result.chosen,
        "cv_metric": params.train.cv_metric,
        "cv": {
            name: {"mean": cand.mean, "folds": cand.fold_scores} for name, cand in result.candidates.items()
        },
        "valid": result.valid_scores,
        "counts": result.counts,
        "features": len(features),
        "trials": trials,
        **lineage,
    }
    uri = registry.tracking_uri(params)
    with (
        registry.mlflow_errors("logging the training run", uri),
        mlflow.start_run(
            experiment_id=experiment_id, run_name=f"train-{result.chosen}", tags=run_owner_tags()
        ) as run,
    ):
        mlflow.set_tags(
            {
                "autotrader.stage": "train",
                "autotrader.candidate": result.chosen,
                MODEL_TAG: params.mlflow.model_name,
                "data_version": lineage["data_version"],
                "data_version_source": lineage["data_version_source"],
                "git_commit": lineage["git_commit"] or "none",
                "git_dirty": str(lineage["git_dirty"]),
            }
        )
        logged = {**flat_params("train", params.train.model_dump(exclude={"hgb", "logreg"}))}
        for name in params.train.candidates:
            logged.update(hyperparameters(name, params.train))
        logged.update(
            {
                "chosen": result.chosen,
                "n_features": len(features),
                "window_start": prepared.info["boundaries"]["start"],
                "valid_start": prepared.info["boundaries"]["valid_start"],
                "test_start": prepared.info["boundaries"]["test_start"],
                "window_end": prepared.info["boundaries"]["end"],
                "data_version": lineage["data_version"],
            }
        )
        mlflow.log_params(logged)
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


if __name__ == "__main__":
    stage_main(main)
