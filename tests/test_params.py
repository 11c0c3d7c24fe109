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
