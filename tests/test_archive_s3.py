"""The archive against a real S3-protocol server on loopback (moto's server; boto3/s3fs untouched)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from autotrader import rawstore
from autotrader.archive import (
    ArchiveError,
    archive_raw,
    archived_dates,
    encode_bars,
    partition_key,
    read_archived,
    read_archived_bytes,
)
from tests.s3server import S3Server, s3_bucket_fixture, s3_env_fixture, s3_server_fixture  # noqa: F401
from tests.test_archive import all_partitions, small_window, write_sim_raw

pytestmark = pytest.mark.xdist_group("s3")


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return write_sim_raw(tmp_path / "raw")


def _objects(server: S3Server, bucket: str, prefix: str) -> dict[str, dict]:
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def test_archive_to_s3_matches_local_bytes_and_reads_back(
    raw: Path, tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3_env: dict
) -> None:
    url = f"s3://{s3_bucket}/bars/v1"
    result = archive_raw(raw, url, show_progress=False)
    local = archive_raw(raw, str(tmp_path / "local"), show_progress=False)
    parts = all_partitions(raw)
    assert result.as_metrics()["objects_written"] == len(parts) == len(local.written)
    assert result.as_metrics()["url"] == url

    objects = _objects(s3_server, s3_bucket, "bars/v1/")
    assert sorted(objects) == sorted(f"bars/v1/{partition_key(*p)}" for p in parts)
    client = s3_server.client()
    for broker, symbol, date in parts:
        key = partition_key(broker, symbol, date)
        body = client.get_object(Bucket=s3_bucket, Key=f"bars/v1/{key}")["Body"].read()
        assert body == (tmp_path / "local" / key).read_bytes()
        assert body == encode_bars(rawstore.read_instrument(raw, broker, symbol, dates=[date]))
    # Reading back through the library (s3fs) gives the same bytes and the raw rows exactly.
    broker, symbol, date = parts[-1]
    assert (
        read_archived_bytes(url, broker, symbol, date)
        == (tmp_path / "local" / partition_key(*parts[-1])).read_bytes()
    )
    pd.testing.assert_frame_equal(
        read_archived(url, broker, symbol, date),
        rawstore.read_instrument(raw, broker, symbol, dates=[date]),
        check_exact=True,
    )
    assert archived_dates(url, "oanda", "EUR_USD") == sorted(d for b, _, d in parts if b == "oanda")


def test_second_run_uploads_nothing(raw: Path, s3_server: S3Server, s3_bucket: str, s3_env: dict) -> None:
    url = f"s3://{s3_bucket}/archive"
    archive_raw(raw, url, show_progress=False)
    before = {k: (o["ETag"], o["LastModified"]) for k, o in _objects(s3_server, s3_bucket, "").items()}
    again = archive_raw(raw, url, show_progress=False)
    assert again.written == [] and len(again.skipped) == len(before)
    assert again.as_metrics()["bytes_written"] == 0
    after = {k: (o["ETag"], o["LastModified"]) for k, o in _objects(s3_server, s3_bucket, "").items()}
    assert after == before

    # An object changed behind our back (same key, different content) is never overwritten silently:
    # the archive is write-once, so this is an error naming it; --replace repairs it, keeping what was there.
    victim = sorted(before)[0]
    s3_server.client().put_object(Bucket=s3_bucket, Key=victim, Body=b"not the archive")
    with pytest.raises(ArchiveError, match=rf"would change: s3://{s3_bucket}/{victim}"):
        archive_raw(raw, url, show_progress=False)
    third = archive_raw(raw, url, show_progress=False, replace=True)
    assert third.written == [victim.removeprefix("archive/")]


def test_missing_bucket_is_a_clear_error(raw: Path, s3_env: dict) -> None:
    with pytest.raises(ArchiveError, match=r"s3://no-such-bucket-autotrader"):
        archive_raw(raw, "s3://no-such-bucket-autotrader/x", show_progress=False)


def test_missing_credentials_are_a_clear_error_not_a_traceback(
    raw: Path, s3_bucket: str, s3_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ArchiveError, match=rf"s3://{s3_bucket}/x: .*Credentials"):
        archive_raw(raw, f"s3://{s3_bucket}/x", show_progress=False)


def test_stage_archives_to_s3_in_a_subprocess_with_an_explicit_endpoint(
    project_factory, s3_server: S3Server, s3_bucket: str
) -> None:
    project = project_factory(with_dvc=False)
    write_sim_raw(project.root / "data" / "raw")
    url = f"s3://{s3_bucket}/stage"
    project.set_params(**{"archive.url": url})
    small_window(project)
    project.stage("validate")
    # Only AUTOTRADER_S3_ENDPOINT_URL names the server: the stage must pass it to s3fs explicitly.
    env = {k: v for k, v in s3_server.env.items() if k != "AWS_ENDPOINT_URL_S3"}
    env["AUTOTRADER_S3_ENDPOINT_URL"] = s3_server.endpoint_url
    project.stage("archive", env=env)
    metrics = json.loads((project.root / "metrics" / "archive.json").read_text())
    assert metrics["url"] == url
    assert "autotrader-test-secret" not in json.dumps(metrics)
    assert (
        metrics["objects_written"]
        == metrics["objects_total"]
        == len(_objects(s3_server, s3_bucket, "stage/"))
    )
    assert metrics["objects_total"] > 0
