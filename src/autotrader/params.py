"""The one way to read params.yaml: a typed, strict loader.

Strict (unknown keys are errors) because a misspelt knob that is silently ignored is how a backtest
ends up running on the wrong window. DVC's ``-S key=value`` edits params.yaml, so this sees them too.
"""

from __future__ import annotations

import difflib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autotrader.errors import ConfigError

BROKERS = ("binance", "oanda", "ibkr")
Broker = Literal["binance", "oanda", "ibkr"]
Severity = Literal["fail", "warn"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(_Strict):
    raw: str = "data/raw"
    features: str = "data/features"
    prepared: str = "data/prepared"
    model: str = "models/model"
    reports: str = "reports"
    metrics: str = "metrics"


class Instrument(_Strict):
    broker: Broker
    symbol: str = Field(min_length=1)

    @property
    def key(self) -> str:
        return f"{self.broker}/{self.symbol}"


class SimParams(_Strict):
    seed: int = 7
    # A number (0 = no signal at all), or the name of a calibrated preset of autotrader.sources.sim
    # ("realistic": a per-bar IC of a few hundredths, as real intraday signals show).
    signal_strength: Annotated[float, Field(ge=0.0)] | Literal["realistic"] = 4.0
    epoch: str = "2026-01-01"  # the simulated market begins here; bars after it never depend on the window
    regime_switching: bool = True  # false: calm volatility throughout (the health false-alarm bench)

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
    binance_url: str = "https://api.binance.com"
    oanda_url: str = "https://api-fxpractice.oanda.com"
    ibkr_host: str = "127.0.0.1"
    ibkr_port: int = 4002
    ibkr_client_id: int = 17
    timeout_s: float = Field(default=10.0, gt=0)  # per read
    deadline_s: float = Field(default=60.0, gt=0)  # the whole answer, per attempt (sources/http.py)
    max_attempts: int = Field(default=5, ge=1)
    backoff_s: float = Field(default=0.5, ge=0)


class DataParams(_Strict):
    source: Literal["sim", "files", "live"] = "sim"
    interval: str = "5min"
    end: str = "2026-11-20"
    lookback_days: int = Field(default=120, gt=0)
    instruments: tuple[Instrument, ...] = ()
    sim: SimParams = SimParams()
    files: tuple[FileSpec, ...] = ()
    live: LiveParams = LiveParams()

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
    schema_: Severity = Field(default="fail", alias="schema")
    completeness: Severity = "fail"
    anomalies: Severity = "fail"
    gaps: Severity = "warn"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def of(self, family: str) -> Severity:
        return self.schema_ if family == "schema" else getattr(self, family)


class RunBars(_Strict):
    """Bars in a row, per asset class (``calendars.BROKER_PROFILES``), that make a run suspicious; 0 = off.

    Per asset class because how often a real bar repeats depends on the market: crypto trades 24/7,
    FX 24/5 in ticks, NYSE equities in sessions with halts (docs/validation.md gives the reasoning).
    """

    crypto: int = Field(default=12, ge=0)
    fx: int = Field(default=6, ge=0)
    equity: int = Field(default=6, ge=0)

    @field_validator("crypto", "fx", "equity")
    @classmethod
    def _off_or_a_run(cls, value: int) -> int:
        if value == 1:
            raise ValueError("a run needs at least 2 bars (0 turns the rule off)")
        return value

    def of(self, asset_class: str) -> int:
        return int(getattr(self, asset_class))


class ValidateParams(_Strict):
    min_session_coverage: float = Field(default=0.9, ge=0, le=1)
    spike_sigma: float = Field(default=25.0, gt=0)
    frozen_bars: RunBars = RunBars()  # N bars in a row with identical OHLC = a frozen feed
    zero_volume_bars: RunBars = RunBars()  # N zero-volume bars in a row while the market is open
    max_abs_value: float = Field(default=1e15, gt=0)  # |any number| beyond this is absurd
    max_spread_ratio: float = Field(default=0.05, gt=0)  # spread / close beyond this is a unit error
    market_hours_grace: str = "1h"  # a bar may lie this far outside a calendar session
    severity: ValidateSeverity = ValidateSeverity()

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
    fast: int = 12
    slow: int = 26
    signal: int = 9


class FeatureParams(_Strict):
    version: str = "1"
    return_horizons: tuple[int, ...] = (1, 3, 12, 48)
    rsi_window: int = 14
    macd: MacdParams = MacdParams()
    bollinger_window: int = 20
    atr_window: int = 14
    vol_windows: tuple[int, ...] = (12, 48)
    volume_z_window: int = 96
    amihud_window: int = 48
    parkinson_window: int = 48
    signed_volume_window: int = 12
    regime_window: int = 288
    trend_window: int = 96
    # core = technical + microstructure + regime (today's features); alpha158 = qlib's 158 factors
    # (autotrader.features.alpha158). Left out of the fingerprint while it is the default.
    families: tuple[Literal["core", "alpha158"], ...] = Field(default=("core",), min_length=1)


class ArchiveParams(_Strict):
    url: str = "data/archive"
    replace: bool = False  # true: a changed archived object is replaced, its old content kept
    connect_timeout_s: float = Field(default=5.0, gt=0)  # S3: botocore connect timeout per attempt
    read_timeout_s: float = Field(default=15.0, gt=0)  # S3: botocore read timeout per attempt
    max_attempts: int = Field(default=3, ge=1, le=10)  # S3: attempts per call (retries + 1), standard mode


class HealthParams(_Strict):
    """Knobs of the health stage; docs/archive_health.md says why each default is what it is."""

    method: Literal["psi"] = "psi"  # Evidently's drift method for every column (its PSI)
    reference_days: int = Field(default=14, gt=0)  # trading days before the current window
    current_days: int = Field(default=1, gt=0)  # the latest trading day(s), in the broker's bars
    psi_threshold: float = Field(default=0.2, gt=0)  # floor of every column's threshold
    alpha: float = Field(default=0.001, gt=0, lt=0.5)  # per signal: false-alarm rate of its threshold
    drilldown_alpha: float = Field(default=0.01, gt=0, lt=0.5)  # per feature (reported, not alarmed)
    memories_per_window: int = Field(default=40, ge=1)  # feature windows hold ≥ this many lookbacks
    top_features: int = Field(default=3, ge=0)
    max_gap_bars: int = Field(default=3, ge=0)  # longest hole inside the current window, in bars
    max_jump_sigma: float = Field(default=25.0, gt=0)  # |return| beyond this many robust σ: a jump
    fail_on_drift: bool = False
    max_rows: int = Field(default=20000, gt=0)
    max_staleness_bars: int = Field(default=3, ge=0)


class HgbParams(_Strict):
    max_iter: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 200
    l2_regularization: float = 1.0


class LogregParams(_Strict):
    C: float = 0.1
    max_iter: int = 1000


class TrainParams(_Strict):
    lookback_days: int = Field(default=90, gt=0)
    test_days: int = Field(default=20, gt=0)
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    horizon: int = Field(default=12, gt=0)
    cost_threshold_bps: float = Field(default=5.0, ge=0)
    embargo: int = Field(default=24, ge=0)
    cv_folds: int = Field(default=5, ge=2)
    cv_metric: str = "log_loss"
    seed: int = 42
    candidates: tuple[Literal["hgb", "logreg"], ...] = ("hgb", "logreg")
    # Walk-forward out-of-sample evaluation: this many consecutive test windows of test_days each,
    # the chosen configuration refitted before each (as the weekly retraining would).
    oos_windows: int = Field(default=4, ge=1)
    bootstrap_samples: int = Field(default=2000, ge=100)  # stationary bootstrap of the OOS Sharpe
    ci_level: float = Field(default=0.9, gt=0, lt=1)
    hgb: HgbParams = HgbParams()
    logreg: LogregParams = LogregParams()


class CostParams(_Strict):
    fees_bps: dict[Broker, float] = Field(default_factory=lambda: {"binance": 7.5, "oanda": 0.5, "ibkr": 0.5})
    default_spread_bps: dict[Broker, float] = Field(
        default_factory=lambda: {"binance": 1.0, "oanda": 1.0, "ibkr": 1.0}
    )
    fill: Literal["next_open", "close"] = "next_open"  # where an order decided at a close fills


class GateParams(_Strict):
    min_sharpe: float = 2.0
    max_drawdown: float = 0.15
    min_win_rate: float = 0.55
    min_trades: int = 100
    max_regression: float = 0.10
    min_dsr: float = Field(default=0.95, ge=0, le=1)  # deflated Sharpe ratio, over every trial counted


class MlflowParams(_Strict):
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "autotrader"
    model_name: str = "autotrader-signal"

    def resolved_tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` from the environment wins over params (remote servers, CI)."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri


class Params(_Strict):
    paths: Paths = Paths()
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    features: FeatureParams = FeatureParams()
    archive: ArchiveParams = ArchiveParams()
    health: HealthParams = HealthParams()
    train: TrainParams = TrainParams()
    costs: CostParams = CostParams()
    gates: GateParams = GateParams()
    mlflow: MlflowParams = MlflowParams()

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
