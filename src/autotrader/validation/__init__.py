"""Data validation of the raw bars with Great Expectations 1.x, per broker/symbol.

Four expectation families, each with a severity from ``validate.severity`` (fail | warn):
schema, completeness, anomalies and gaps (see ``rules``). ``validate_raw`` runs them all with one
ephemeral GE context; ``write_outputs`` writes the per-instrument JSON results, the Data Docs site
and ``metrics/validation.json``.
"""

from __future__ import annotations

from autotrader.validation.report import Finding, InstrumentResult
from autotrader.validation.rules import FAMILIES
from autotrader.validation.run import (
    ValidationRun,
    Window,
    show,
    validate_instrument,
    validate_raw,
    write_outputs,
)

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
