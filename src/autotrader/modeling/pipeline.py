"""The modelling half of the pipeline in one call, in memory: prepare → train → walk-forward → gates.

The DVC stages run these same functions one stage at a time with files between them; this chains
them without files or MLflow, for ``bench/gate_power.py`` (the gates' operating characteristic) and
the leakage tests — so what they measure is what the stages do, not a re-implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from autotrader.modeling.dataset import prepare_frame, window_spans
from autotrader.modeling.evaluation import Evaluation, evaluate
from autotrader.modeling.gates import decide, evaluate_gates, verdict
from autotrader.modeling.train import TrainResult, fit, rows_before
from autotrader.modeling.walkforward import predict_out_of_sample
from autotrader.params import Params


@dataclass
class Outcome:
    training: TrainResult
    evaluation: Evaluation
    gates: list[dict[str, Any]]

    @property
    def promote(self) -> bool:
        return decide(self.gates)

    @property
    def verdict(self) -> str:
        return verdict(self.gates)


def run_modelling(
    frame: pd.DataFrame,
    params: Params,
    features: list[str],
    *,
    trials: dict[str, Any] | None = None,
    with_importance: bool = False,
) -> Outcome:
    """Bars+features (``dataset.features_in_memory``) → the gate decision, as the stages would reach it."""
    prepared = prepare_frame(frame, params, features)
    spans = window_spans(prepared.info)
    train, valid, test = (prepared.parts[k] for k in ("train", "valid", "test"))
    last = spans[-1].start
    result = fit(
        train,
        valid,
        features,
        params.train,
        extra=rows_before(test, last, params.train.embargo),
        final_before=last,
    )
    history = pd.concat([train, valid], ignore_index=True)
    oos = predict_out_of_sample(
        history, test, features, params.train, result.chosen, spans, last_model=result.model
    )
    evaluation = evaluate(
        result.model, test, features, params, oos=oos, trials=trials, with_importance=with_importance
    )
    m = evaluation.metrics
    gates = evaluate_gates(m["portfolio"], params.gates, dsr=m["dsr"], capacity=m["capacity"])
    return Outcome(training=result, evaluation=evaluation, gates=gates)
