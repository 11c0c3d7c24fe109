"""Honest trial counting for the deflated Sharpe ratio: every candidate ever evaluated for this model.

A Sharpe that beats a threshold after N configurations were tried is weaker evidence than the same
Sharpe after one. The seed counted only this run's two candidates; but every weekly retraining, every
earlier configuration and every re-run is another draw. So the count is:

* every earlier ``train`` run in the MLflow experiment that was logged for this model name (tag
  ``autotrader.model_name``; runs from before the tag existed count too), each contributing the
  candidates it evaluated (its ``train.candidates`` param; 1 when it logged none) — finished,
  failed or killed alike, since a crashed run may still have looked at its CV scores; only a run
  that failed before its fit began (tag ``autotrader.fit`` = ``pending``: it saw no score) is left out;
* plus this run's candidates.

With an empty, local registry that is just this run's candidates, and the record says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

STAGE_TAG = "autotrader.stage"
MODEL_TAG = "autotrader.model_name"
FIT_TAG = "autotrader.fit"  # "pending" from the run's start until the fit begins, then "started"
FIT_PENDING = "pending"
FIT_STARTED = "started"
PAGE = 1000


def candidates_of(params: dict[str, str]) -> int:
    """How many candidates a run evaluated, from its logged ``train.candidates`` (comma-separated)."""
    raw = params.get("train.candidates", "")
    names = [n for n in raw.split(",") if n.strip()]
    return max(len(names), 1)


def count_trials(
    client: MlflowClient,
    experiment_id: str,
    model_name: str,
    this_run_candidates: int,
    exclude_run_id: str | None = None,
) -> dict[str, Any]:
    """The trial count (``total``) and where it came from, for metrics/train.json and the model card."""
    prior_runs = 0
    prior_candidates = 0
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{STAGE_TAG}` = 'train'",
            max_results=PAGE,
            page_token=token,
        )
        for run in page:
            if run.info.run_id == exclude_run_id:
                continue
            tagged = run.data.tags.get(MODEL_TAG)
            if tagged is not None and tagged != model_name:
                continue
            if run.data.tags.get(FIT_TAG) == FIT_PENDING:
                continue  # ended before fitting anything
            prior_runs += 1
            prior_candidates += candidates_of(run.data.params)
        token = page.token
        if not token:
            break
    total = prior_candidates + this_run_candidates
    if prior_runs:
        source = (
            f"MLflow experiment history: {prior_runs} earlier training run(s) of {model_name} evaluated "
            f"{prior_candidates} candidate(s), plus this run's {this_run_candidates}"
        )
    else:
        source = (
            f"this run's {this_run_candidates} candidate(s) only: the experiment holds no earlier training "
            f"run of {model_name} (a fresh, local registry)"
        )
    return {
        "total": total,
        "this_run": this_run_candidates,
        "prior_runs": prior_runs,
        "prior_candidates": prior_candidates,
        "source": source,
    }
