"""``autotrader.jsonfiles.read_json``: a missing or torn JSON input names the file and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotrader.errors import ModelError, StoreError
from autotrader.jsonfiles import read_json


def test_reads_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "evaluate.json"
    path.write_text('{"sharpe": 1.5, "gates": [1, 2]}')
    assert read_json(path, ModelError) == {"sharpe": 1.5, "gates": [1, 2]}


def test_a_missing_file_raises_the_callers_error_with_the_hint(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "evaluate.json"
    with pytest.raises(ModelError, match=r"evaluate\.json: not found; run the evaluate stage first$"):
        read_json(path, ModelError, "run the evaluate stage first")
    assert read_json(path, ModelError, missing_ok=True) is None


def test_a_torn_file_is_not_valid_json_with_the_hint(tmp_path: Path) -> None:
    path = tmp_path / "_metadata.json"
    path.write_text('{"rows": 12, "time_ra')  # a write cut short
    with pytest.raises(StoreError, match=r"_metadata\.json: not valid JSON \(.+\); delete the store") as err:
        read_json(path, StoreError, "delete the store to rebuild it", missing_ok=True)
    assert isinstance(err.value.__cause__, ValueError)


def test_bytes_that_are_not_text_are_named(tmp_path: Path) -> None:
    path = tmp_path / "gates.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelError, match=r"gates\.json: (unreadable|not valid JSON)"):
        read_json(path, ModelError)
