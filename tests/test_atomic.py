"""Atomic writes: a failure inside the block leaves the old content, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from autotrader.atomic import atomic_dir, atomic_path, write_json, write_parquet


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_directory_build_keeps_the_old_tree(tmp_path: Path) -> None:
    target = tmp_path / "tree"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("new")
        raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def test_directory_swap_replaces_the_tree(tmp_path: Path) -> None:
    target = tmp_path / "tree"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_parquet_rewrite_is_byte_identical(tmp_path: Path) -> None:
    frame = pd.DataFrame({"t": pd.date_range("2026-01-01", periods=5, freq="h", tz="UTC"), "x": range(5)})
    write_parquet(tmp_path / "a.parquet", frame)
    write_parquet(tmp_path / "b.parquet", frame)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    import os

    write_json(tmp_path / "x.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~mask
