"""Honest trial counting for the deflated Sharpe, against a real (sqlite) MLflow tracking store."""

from __future__ import annotations

import pytest

from autotrader.modeling.trials import MODEL_TAG, STAGE_TAG, candidates_of, count_trials

pytestmark = pytest.mark.xdist_group("trials")


def test_trials_count_every_earlier_training_run_of_this_model(tmp_path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("autotrader", artifact_location=str(tmp_path / "artifacts"))
    fresh = count_trials(client, experiment, "signal", 2)
    assert fresh["total"] == 2 and fresh["prior_runs"] == 0 and "only" in fresh["source"]

    def run(tags: dict[str, str], candidates: str | None, status: str = "FINISHED") -> str:
        r = client.create_run(experiment, tags=tags)
        if candidates is not None:
            client.log_param(r.info.run_id, "train.candidates", candidates)
        client.set_terminated(r.info.run_id, status=status)
        return r.info.run_id

    run({STAGE_TAG: "train", MODEL_TAG: "signal"}, "hgb,logreg")  # 2
    run({STAGE_TAG: "train", MODEL_TAG: "signal"}, "hgb", status="FAILED")  # 1: a crashed run still looked
    run({STAGE_TAG: "train"}, "hgb,logreg")  # 2: logged before the model-name tag existed
    run({STAGE_TAG: "train", MODEL_TAG: "other-model"}, "hgb,logreg")  # another model: not counted
    run({STAGE_TAG: "evaluate", MODEL_TAG: "signal"}, None)  # not a training run
    current = run({STAGE_TAG: "train", MODEL_TAG: "signal"}, "hgb,logreg")

    trials = count_trials(client, experiment, "signal", 2, exclude_run_id=current)
    assert trials["prior_runs"] == 3 and trials["prior_candidates"] == 5
    assert trials["total"] == 7 and trials["this_run"] == 2
    assert "3 earlier training run(s)" in trials["source"]


def test_candidates_of_a_run_without_the_param_count_once() -> None:
    assert candidates_of({"train.candidates": "hgb,logreg"}) == 2
    assert candidates_of({}) == 1
