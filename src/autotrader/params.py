"""The one way to read params.yaml: a typed, strict loader.

Strict (unknown keys are errors) because a misspelt knob that is silently ignored is how a backtest
ends up running on the wrong window. DVC's ``-S key=value`` edits params.yaml, so this sees them too.

params.yaml is also the only place a default is written: the models below declare types and limits,
never values; what a model is not given comes from the packaged params.yaml (``DEFAULTS_FILE``), so
``Params()`` equals ``load_params("params.yaml")`` by construction (tests/test_params.py checks it).
A new knob goes into params.yaml and, typed and without a default, into its model here.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autotrader.errors import ConfigError

BROKERS = ("binance", "oanda", "ibkr")
Broker = Literal["binance", "oanda", "ibkr"]
Severity = Literal["fail", "warn"]


# The defaults ARE params.yaml: the repository's file, shipped in the package as autotrader/params.yaml
# (a symlink to it in the source tree, a copy in a wheel). A model built with keys left out (tests,
# a scratch params.yaml that sets a few knobs) takes them from the section of that file its
# ``_section`` names, so a default cannot disagree with params.yaml: it is never written twice.
DEFAULTS_FILE = Path(__file__).with_name("params.yaml")


@functools.cache
def _packaged_defaults() -> dict[str, Any]:
    try:
        raw = yaml.safe_load(DEFAULTS_FILE.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{DEFAULTS_FILE}: the packaged params.yaml (every knob's default) is missing; "
            "reinstall autotrader from the repository (pip install -e .)"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{DEFAULTS_FILE}: the packaged params.yaml is not a mapping")
    return raw


def defaults_at(section: tuple[str, ...]) -> dict[str, Any]:
    """The packaged params.yaml's mapping at ``section`` (``("train", "hgb")``); a copy, safe to change."""
    node: Any = _packaged_defaults()
    for key in section:
        node = node.get(key) if isinstance(node, dict) else None
    return copy.deepcopy(node) if isinstance(node, dict) else {}


def _submodel(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _fill(model: type[BaseModel], data: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with every key it leaves out taken from ``defaults``; nested models filled the same way."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        present = key if key in data else name if name in data else None
        if present is None:
            if key in defaults:
                data[key] = copy.deepcopy(defaults[key])
            continue
        sub = _submodel(field.annotation)
        if sub is not None and isinstance(data[present], Mapping) and isinstance(defaults.get(key), Mapping):
            data[present] = _fill(sub, dict(data[present]), defaults[key])
    return data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Where this model's keys sit in params.yaml; None: nothing to default (an item of a list).
    _section: ClassVar[tuple[str, ...] | None] = None

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_params_yaml(cls, data: Any) -> Any:
        if cls._section is None or not isinstance(data, Mapping):
            return data
        return _fill(cls, dict(data), defaults_at(cls._section))


class Paths(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("paths",)
    raw: str
    features: str
    prepared: str
    model: str
    reports: str
    metrics: str


class Instrument(_Strict):
    broker: Broker
    symbol: str = Field(min_length=1)

    @property
    def key(self) -> str:
        return f"{self.broker}/{self.symbol}"


class SimParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("data", "sim")
    seed: int
    # A number (0 = no signal at all), or the name of a calibrated preset of autotrader.sources.sim
    # ("realistic": a per-bar IC of a few hundredths, as real intraday signals show).
    signal_strength: Annotated[float, Field(ge=0.0)] | Literal["realistic"]
    epoch: str  # the simulated market begins here; bars after it never depend on the window
    regime_switching: bool  # false: calm volatility throughout (the health false-alarm bench)

    @property
    def epoch_ts(self) -> pd.Timestamp:
        ts = pd.Timestamp(self.epoch)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


class FileSpec(_Strict):
    path: str
    broker: Broker
    symbol: str = Field(min_length=1)
    timezone: str | None = None  # how to read naive timestamps; None = they must carry a zone


class LiveParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("data", "live")
    binance_url: str
    oanda_url: str
    ibkr_host: str
    ibkr_port: int
    ibkr_client_id: int
    timeout_s: float = Field(gt=0)  # per read
    deadline_s: float = Field(gt=0)  # the whole answer, per attempt (sources/http.py)
    max_attempts: int = Field(ge=1)
    backoff_s: float = Field(ge=0)


class DataParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("data",)
    source: Literal["sim", "files", "live"]
    interval: str
    end: str
    lookback_days: int = Field(gt=0)
    instruments: tuple[Instrument, ...]
    sim: SimParams
    files: tuple[FileSpec, ...]
    live: LiveParams

    @field_validator("interval")
    @classmethod
    def _interval_is_offset(cls, value: str) -> str:
        try:
            delta = pd.Timedelta(pd.tseries.frequencies.to_offset(value))
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"data.interval {value!r} is not a pandas offset alias such as 1min or 1h"
            ) from exc
        if delta <= pd.Timedelta(0) or delta > pd.Timedelta(days=1):
            raise ValueError(f"data.interval {value!r} must be between 1s and 1 day")
        return value

    @property
    def interval_td(self) -> pd.Timedelta:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(self.interval))

    def end_ts(self, now: datetime | None = None) -> pd.Timestamp:
        """The logical end of the window (UTC, exclusive). Only ``now`` reads the clock, and only when asked."""
        if self.end == "now":
            moment = pd.Timestamp(now or datetime.now(UTC))
            return moment.tz_convert("UTC").floor(self.interval_td)
        ts = pd.Timestamp(self.end)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    def start_ts(self, now: datetime | None = None) -> pd.Timestamp:
        return self.end_ts(now) - pd.Timedelta(days=self.lookback_days)

    def active_instruments(self) -> tuple[Instrument, ...]:
        if self.source == "files":
            # several files (e.g. monthly dumps) may feed one instrument: list it once, in params order
            return tuple(dict.fromkeys(Instrument(broker=f.broker, symbol=f.symbol) for f in self.files))
        return self.instruments


class ValidateSeverity(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("validate", "severity")
    schema_: Severity = Field(alias="schema")
    completeness: Severity
    anomalies: Severity
    gaps: Severity

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def of(self, family: str) -> Severity:
        return self.schema_ if family == "schema" else getattr(self, family)


class RunBars(_Strict):
    """Bars in a row, per asset class (``calendars.BROKER_PROFILES``), that make a run suspicious; 0 = off.

    Per asset class because how often a real bar repeats depends on the market: crypto trades 24/7,
    FX 24/5 in ticks, NYSE equities in sessions with halts (docs/validation.md gives the reasoning).
    """

    _section: ClassVar[tuple[str, ...]] = ("validate", "frozen_bars")

    crypto: int = Field(ge=0)
    fx: int = Field(ge=0)
    equity: int = Field(ge=0)

    @field_validator("crypto", "fx", "equity")
    @classmethod
    def _off_or_a_run(cls, value: int) -> int:
        if value == 1:
            raise ValueError("a run needs at least 2 bars (0 turns the rule off)")
        return value

    def of(self, asset_class: str) -> int:
        return int(getattr(self, asset_class))


class ValidateParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("validate",)
    min_session_coverage: float = Field(ge=0, le=1)
    spike_sigma: float = Field(gt=0)
    frozen_bars: RunBars  # N bars in a row with identical OHLC = a frozen feed
    zero_volume_bars: RunBars  # N zero-volume bars in a row while the market is open
    max_abs_value: float = Field(gt=0)  # |any number| beyond this is absurd
    max_spread_ratio: float = Field(gt=0)  # spread / close beyond this is a unit error
    market_hours_grace: str  # a bar may lie this far outside a calendar session
    severity: ValidateSeverity
    processes: int = Field(ge=1)  # processes that validate at once (validation/helper.py)
    parallel_min_mb: float = Field(ge=0)  # below this much raw Parquet, one process validates alone

    @field_validator("market_hours_grace")
    @classmethod
    def _grace_is_a_duration(cls, value: str) -> str:
        try:
            delta = pd.Timedelta(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"validate.market_hours_grace {value!r} is not a duration such as 1h") from exc
        if delta < pd.Timedelta(0):
            raise ValueError(f"validate.market_hours_grace {value!r} must not be negative")
        return value

    @property
    def grace_td(self) -> pd.Timedelta:
        return pd.Timedelta(self.market_hours_grace)


class MacdParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("features", "macd")
    fast: int
    slow: int
    signal: int


class FeatureParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("features",)
    version: str
    return_horizons: tuple[int, ...]
    rsi_window: int
    macd: MacdParams
    bollinger_window: int
    atr_window: int
    vol_windows: tuple[int, ...]
    volume_z_window: int
    amihud_window: int
    parkinson_window: int
    signed_volume_window: int
    regime_window: int
    trend_window: int
    # core = technical + microstructure + regime (today's features); alpha158 = qlib's 158 factors
    # (autotrader.features.alpha158). Left out of the fingerprint while it is the default.
    families: tuple[Literal["core", "alpha158"], ...] = Field(min_length=1)


class ArchiveParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("archive",)
    url: str
    replace: bool  # true: a changed archived object is replaced, its old content kept
    connect_timeout_s: float = Field(gt=0)  # S3: botocore connect timeout per attempt
    read_timeout_s: float = Field(gt=0)  # S3: botocore read timeout per attempt
    max_attempts: int = Field(ge=1, le=10)  # S3: attempts per call (retries + 1), standard mode


class HealthParams(_Strict):
    """Knobs of the health stage; docs/archive_health.md says why each default is what it is."""

    _section: ClassVar[tuple[str, ...]] = ("health",)

    method: Literal["psi"]  # Evidently's drift method for every column (its PSI)
    reference_days: int = Field(gt=0)  # trading days before the current window
    current_days: int = Field(gt=0)  # the latest trading day(s), in the broker's bars
    psi_threshold: float = Field(gt=0)  # floor of every column's threshold
    alpha: float = Field(gt=0, lt=0.5)  # per signal: false-alarm rate of its threshold
    drilldown_alpha: float = Field(gt=0, lt=0.5)  # per feature (reported, not alarmed)
    memories_per_window: int = Field(ge=1)  # feature windows hold ≥ this many lookbacks
    top_features: int = Field(ge=0)
    max_gap_bars: int = Field(ge=0)  # longest hole inside the current window, in bars
    max_jump_sigma: float = Field(gt=0)  # |return| beyond this many robust σ: a jump
    fail_on_drift: bool
    max_rows: int = Field(gt=0)
    max_staleness_bars: int = Field(ge=0)


class HgbParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("train", "hgb")
    max_iter: int
    learning_rate: float
    max_leaf_nodes: int
    min_samples_leaf: int
    l2_regularization: float


class LogregParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("train", "logreg")
    C: float
    max_iter: int


class TrainParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("train",)
    lookback_days: int = Field(gt=0)
    test_days: int = Field(gt=0)
    validation_fraction: float = Field(gt=0, lt=1)
    horizon: int = Field(gt=0)
    cost_threshold_bps: float = Field(ge=0)
    embargo: int = Field(ge=0)
    cv_folds: int = Field(ge=2)
    cv_metric: str
    seed: int
    candidates: tuple[Literal["hgb", "logreg"], ...]
    # Walk-forward out-of-sample evaluation: this many consecutive test windows of test_days each,
    # the chosen configuration refitted before each (as the weekly retraining would).
    oos_windows: int = Field(ge=1)
    bootstrap_samples: int = Field(ge=100)  # stationary bootstrap of the OOS Sharpe
    ci_level: float = Field(gt=0, lt=1)
    hgb: HgbParams
    logreg: LogregParams


class CostParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("costs",)
    fees_bps: dict[Broker, float]
    default_spread_bps: dict[Broker, float]
    fill: Literal["next_open", "close"]  # where an order decided at a close fills


class GateParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("gates",)
    min_sharpe: float
    max_drawdown: float
    min_win_rate: float
    min_trades: int
    max_regression: float
    min_dsr: float = Field(ge=0, le=1)  # deflated Sharpe ratio, over every trial counted


class MlflowParams(_Strict):
    _section: ClassVar[tuple[str, ...]] = ("mlflow",)
    tracking_uri: str
    artifact_location: str
    experiment: str
    model_name: str

    def resolved_tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` from the environment wins over params (remote servers, CI)."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri


class Params(_Strict):
    _section: ClassVar[tuple[str, ...]] = ()
    paths: Paths
    data: DataParams
    validate_: ValidateParams = Field(alias="validate")
    features: FeatureParams
    archive: ArchiveParams
    health: HealthParams
    train: TrainParams
    costs: CostParams
    gates: GateParams
    mlflow: MlflowParams

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and check params.yaml; a ConfigError names the key and the rule it broke."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: not found (run from the repository root)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}{_did_you_mean(err)}"
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"{path}: {problems}") from exc


def _did_you_mean(err: Any) -> str:
    """For an unknown key, the closest known key at that level (``train.horizn`` → ``horizon``)."""
    if err.get("type") != "extra_forbidden":
        return ""
    model: Any = Params
    for part in err["loc"][:-1]:
        if isinstance(part, int):  # an item of a list of models (data.instruments[2])
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        inner = getattr(field, "annotation", None) if field is not None else None
        inner = next((a for a in get_args(inner) if isinstance(a, type)), inner)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ""
        model = inner
    known = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
