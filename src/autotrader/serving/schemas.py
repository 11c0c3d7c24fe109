"""The wire format of ``POST /predict``: what a client may send and what it gets back.

Validation is strict on purpose. A string where a number belongs, a bool, ``NaN``/``Infinity``
tokens, an overflow to infinity, an unknown field or a timestamp without a zone is a client bug
that must come back as a 422 naming the field, not a prediction made on garbage. A feature value of
JSON ``null`` is allowed and means "missing" (NaN for the model): the feature store itself has
legitimate gaps (relative spread where a broker quotes none, warm-up rows), and the models handle
them (HistGradientBoosting natively, the linear baseline through its imputer).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autotrader.params import Broker

MAX_BATCH = 1024
SIGNAL_LABELS: dict[int, str] = {-1: "short", 0: "flat", 1: "long"}
LABEL_SIGNALS: dict[str, int] = {label: signal for signal, label in SIGNAL_LABELS.items()}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class Instance(_Strict):
    """One bar of one instrument with its features, as the feature store holds it."""

    broker: Broker
    symbol: str = Field(min_length=1, max_length=64)
    # Lax only here: JSON has no datetime type, so an ISO-8601 string must be parsed.
    timestamp: datetime = Field(strict=False)
    close: float = Field(gt=0)
    features: dict[str, float | None]

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp must carry a time zone, e.g. 2026-11-19T23:55:00Z")
        return value.astimezone(UTC)


class PredictRequest(_Strict):
    instances: list[Instance]


class Prediction(_Strict):
    broker: str
    symbol: str
    timestamp: str
    signal: Literal[-1, 0, 1]
    label: Literal["short", "flat", "long"]


class PredictResponse(_Strict):
    model_version: str
    predictions: list[Prediction]


class RequestError(Exception):
    """A request the server refuses: ``status`` is the HTTP code, ``reason`` says what is wrong."""

    def __init__(self, status: int, reason: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"detail": self.reason}
        if self.errors:
            out["errors"] = self.errors
        return out


def iso_utc(value: datetime) -> str:
    """``2026-11-19T23:55:00Z``: the one timestamp spelling the server writes."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _errors(exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[dict[str, Any]]:
    return [
        {"loc": _where(prefix + tuple(err["loc"])), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def parse_request(body: bytes, max_batch: int = MAX_BATCH) -> list[Instance]:
    """Body bytes → validated instances, or a RequestError (413/422) that says why.

    Accepts ``{"instances": [...]}`` or one bare instance object. The batch size is checked before
    any instance is validated, so an oversized batch costs a JSON parse, not a validation.
    """
    if not body.strip():
        raise RequestError(422, 'empty body: send a JSON object {"instances": [...]}')
    try:
        # allow_inf_nan=False: the NaN/Infinity tokens Python's json would accept are errors here.
        payload = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise RequestError(422, f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise RequestError(422, f"body must be a JSON object, got {type(payload).__name__}")
    if "instances" in payload:
        raw = payload["instances"]
        if not isinstance(raw, list):
            raise RequestError(422, "instances must be a list of instance objects")
        if len(payload) > 1:
            extra = sorted(k for k in payload if k != "instances")
            raise RequestError(422, f"unknown top-level field(s): {', '.join(extra)}")
        if len(raw) > max_batch:
            raise RequestError(413, f"batch of {len(raw)} instances exceeds the limit of {max_batch}")
        if not raw:
            raise RequestError(422, "instances is empty: send at least one instance")
        try:
            return PredictRequest.model_validate(payload).instances
        except ValidationError as exc:
            errors = _errors(exc)
            raise RequestError(422, f"invalid request: {_summary(errors)}", errors) from exc
    try:
        return [Instance.model_validate(payload)]
    except ValidationError as exc:
        errors = _errors(exc)
        raise RequestError(422, f"invalid instance: {_summary(errors)}", errors) from exc


def _summary(errors: list[dict[str, Any]], limit: int = 3) -> str:
    parts = [f"{e['loc']}: {e['msg']}" for e in errors[:limit]]
    if len(errors) > limit:
        parts.append(f"… and {len(errors) - limit} more")
    return "; ".join(parts)
