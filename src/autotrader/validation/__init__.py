"""Data validation of the raw bars with Great Expectations 1.x, per broker/symbol.

Four expectation families, each with a severity from ``validate.severity`` (fail | warn):
schema, completeness, anomalies and gaps (see ``rules``). ``validate_raw`` runs them all with one
ephemeral GE context (and forked helper processes for big stores, ``helper``); ``write_outputs``
writes the per-instrument JSON results, the Data Docs site and ``metrics/validation.json``.
"""

from __future__ import annotations

from typing import Any

from autotrader.validation.derive import Window
from autotrader.validation.report import FAMILIES, Finding, InstrumentResult
from autotrader.validation.run import ValidationRun, show, validate_raw, write_outputs


def __getattr__(name: str) -> Any:
    """``validate_instrument`` on first use: it imports Great Expectations (~1.5 s), the rest does not."""
    if name == "validate_instrument":
        from autotrader.validation.instrument import validate_instrument

        return validate_instrument
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FAMILIES",
    "Finding",
    "InstrumentResult",
    "ValidationRun",
    "Window",
    "show",
    "validate_instrument",
    "validate_raw",
    "write_outputs",
]
