"""Errors that carry a message a person can act on.

Every failure the pipeline expects (bad input, a broken rule, a refused promotion) is an
``AutoTraderError``; the stage runner and the CLI print its message and exit non-zero without a
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AutoTraderError(Exception):
    """An expected failure with a message naming the file, symbol or rule at fault."""

    exit_code: int = 1


class ConfigError(AutoTraderError):
    """params.yaml (or an environment variable) is missing, misspelt or out of range."""

    exit_code = 2


class SourceError(AutoTraderError):
    """A bar source could not deliver: unreadable file, broker error after the last retry."""


class ValidationFailed(AutoTraderError):
    """Data broke a rule whose severity is ``fail``."""


class StoreError(AutoTraderError):
    """The feature store is missing, inconsistent or cannot answer the query."""


class ModelError(AutoTraderError):
    """Training, evaluation or loading a model cannot go on."""


class RegistryError(AutoTraderError):
    """The model registry refused or could not be reached."""


class PromotionRefused(AutoTraderError):
    """A promotion or rollback was refused; the reason says which rule."""


class DeployError(AutoTraderError):
    """A manifest, a pin or a deployment check failed."""
