"""The typed params loader: the repository's params.yaml loads, and mistakes are named, not ignored."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from autotrader.errors import ConfigError
from autotrader.params import load_params

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_load_with_the_documented_defaults() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "sim"
    assert params.data.end_ts() == pd.Timestamp("2026-11-20", tz="UTC")
    assert params.data.start_ts() == params.data.end_ts() - pd.Timedelta(days=params.data.lookback_days)
    assert {i.broker for i in params.data.instruments} == {"binance", "oanda", "ibkr"}
    assert params.gates.min_sharpe == 2.0 and params.gates.min_trades == 100
    assert params.validate_.severity.of("schema") == "fail"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_misspelt_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda p: p["data"].update({"lookback_dayz": 3}))
    with pytest.raises(ConfigError, match=r"data\.lookback_dayz"):
        load_params(path)


def test_an_unknown_broker_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda p: p["data"]["instruments"].append({"broker": "kraken", "symbol": "XBT"}))
    with pytest.raises(ConfigError, match="broker"):
        load_params(path)


def test_a_bad_interval_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda p: p["data"].update({"interval": "fortnightly"}))
    with pytest.raises(ConfigError, match="interval"):
        load_params(path)


def test_now_is_read_only_when_asked(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda p: p["data"].update({"end": "now", "interval": "1h"}))
    params = load_params(path)
    moment = pd.Timestamp("2026-11-26 05:47:13", tz="UTC").to_pydatetime()
    assert params.data.end_ts(now=moment) == pd.Timestamp("2026-11-26 05:00", tz="UTC")


def test_files_source_takes_its_instruments_from_the_files(tmp_path: Path) -> None:
    def mutate(p):
        p["data"]["source"] = "files"
        p["data"]["files"] = [{"path": "x.csv", "broker": "oanda", "symbol": "EUR_USD", "timezone": "UTC"}]

    params = load_params(_write(tmp_path, mutate))
    assert [i.key for i in params.data.active_instruments()] == ["oanda/EUR_USD"]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- params.yaml is the only default


def _models() -> list[type]:
    import autotrader.params as p

    return [
        v for v in vars(p).values() if isinstance(v, type) and issubclass(v, p._Strict) and v is not p._Strict
    ]


def test_no_model_writes_a_default_of_its_own() -> None:
    """Every knob is required in params.py; its default lives in params.yaml only (list items aside)."""
    with_defaults = [
        f"{model.__name__}.{name}"
        for model in _models()
        if model._section is not None
        for name, field in model.model_fields.items()
        if not field.is_required()
    ]
    assert not with_defaults, f"defaults written in params.py (put them in params.yaml): {with_defaults}"


def test_params_yaml_spells_out_every_knob() -> None:
    """Each model's keys are all present at its section of params.yaml, so nothing is left implicit."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    missing = []
    for model in _models():
        if model._section is None:
            continue
        node = raw
        for key in model._section:
            node = node[key]
        missing += [
            f"{'.'.join(model._section)}.{field.alias or name}"
            for name, field in model.model_fields.items()
            if (field.alias or name) not in node
        ]
    assert not missing, f"keys missing from params.yaml: {missing}"


def test_the_defaults_are_the_repository_params_yaml() -> None:
    from autotrader.params import DEFAULTS_FILE, HgbParams, Params, TrainParams

    assert DEFAULTS_FILE.read_bytes() == (REPO / "params.yaml").read_bytes()
    assert Params() == load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert TrainParams().horizon == raw["train"]["horizon"]
    assert HgbParams().max_iter == raw["train"]["hgb"]["max_iter"]


def test_a_key_left_out_takes_the_value_of_its_own_section(tmp_path: Path) -> None:
    """A partial params file keeps what it sets; the rest comes from params.yaml, from the same path."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump({"train": {"hgb": {"max_iter": 7}}, "validate": {"zero_volume_bars": {"crypto": 2}}})
    )
    params = load_params(path)
    assert params.train.hgb.max_iter == 7
    assert params.train.hgb.learning_rate == raw["train"]["hgb"]["learning_rate"]
    assert params.train.horizon == raw["train"]["horizon"]
    assert params.validate_.zero_volume_bars.crypto == 2
    assert params.validate_.zero_volume_bars.fx == raw["validate"]["zero_volume_bars"]["fx"]
    assert params.validate_.frozen_bars.crypto == raw["validate"]["frozen_bars"]["crypto"]
    with pytest.raises(ConfigError, match=r"train\.hgb\.max_iterr.*did you mean 'max_iter'"):
        path.write_text(yaml.safe_dump({"train": {"hgb": {"max_iterr": 7}}}))
        load_params(path)
