"""The archive is write-once and keeps only validated bars (issue 9, item 2), in a folder and in S3.

- The archive stage refuses bars whose validation failed, or whose verdict is missing or stale (the bars
  changed since, or another window): the reproduction of issue 9 (a ×100 close replacing a good
  archived day) ends in a clear error and a byte-identical archive.
- An archived object is never overwritten with other content: an error names it and nothing is written;
  ``--replace`` keeps the old content (dated sibling in a folder or an unversioned bucket, the previous
  object version in a versioned bucket).
- S3 calls have deadlines: an endpoint that accepts connections and never answers fails the archive
  with an error carrying the code, in seconds (the time is printed for the closing note).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from autotrader import rawstore
from autotrader.archive import ArchiveError, archive_raw, partition_key, read_archived_bytes
from autotrader.atomic import write_parquet
from tests.conftest import BIN, tree_hashes
from tests.s3server import S3Server, s3_bucket_fixture, s3_env_fixture, s3_server_fixture  # noqa: F401
from tests.test_archive import small_window, write_sim_raw


def _day(raw: Path, broker: str = "binance", symbol: str = "BTCUSDT", index: int = 1) -> tuple[Path, str]:
    path = rawstore.partition_files(raw, broker, symbol)[index]
    return path, path.parent.name.split("=", 1)[1]


@pytest.mark.slow
def test_archive_stage_refuses_failed_missing_and_stale_verdicts_and_is_write_once(
    project_factory, tmp_path: Path
) -> None:
    project = project_factory(with_dvc=False)
    raw = write_sim_raw(project.root / "data" / "raw")
    archive = tmp_path / "archive"
    project.set_params(**{"archive.url": str(archive)})
    small_window(project)

    # No verdict yet: refused.
    proc = project.stage("archive", check=False)
    assert proc.returncode == 1 and "validation.json: not found" in proc.stderr, proc.stderr
    assert not archive.exists()

    project.stage("validate")
    project.stage("archive")
    good = tree_hashes(archive)
    assert good, "the validated bars were archived"

    # Issue 9's reproduction: a ×100 close fails validation; the archive must not take it.
    day, date = _day(raw)
    pristine = day.read_bytes()
    frame = pd.read_parquet(day)
    frame.loc[10, "close"] *= 100
    write_parquet(day, frame)
    assert project.stage("validate", check=False).returncode != 0
    proc = project.stage("archive", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "validation failed (binance/BTCUSDT)" in proc.stderr and "refusing to archive" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert tree_hashes(archive) == good

    # A passing verdict about other bars is stale: the day changed after validation.
    day.write_bytes(pristine)
    project.stage("validate")
    frame = pd.read_parquet(day)
    frame.loc[0, "volume"] += 1.0  # a plausible correction, but nobody validated it
    write_parquet(day, frame)
    proc = project.stage("archive", check=False)
    assert (
        proc.returncode == 1
        and "stale verdict" in proc.stderr
        and "changed since it was validated" in proc.stderr
    )
    assert tree_hashes(archive) == good

    # ... and so is one about another window.
    day.write_bytes(pristine)
    project.set_params(**{"data.lookback_days": 4})
    proc = project.stage("archive", check=False)
    assert proc.returncode == 1 and "stale verdict: it is about window" in proc.stderr, proc.stderr
    project.set_params(**{"data.lookback_days": 3})

    # The corrected day validated: still refused, because the archived day would change (write-once).
    write_parquet(day, frame)
    project.stage("validate")
    key = partition_key("binance", "BTCUSDT", date)
    proc = project.stage("archive", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "1 archived object(s) would change" in proc.stderr and key in proc.stderr.replace("\n", "")
    assert tree_hashes(archive) == good

    # An explicit --replace writes it and keeps the old version beside it.
    old = read_archived_bytes(str(archive), "binance", "BTCUSDT", date)
    proc = project.run(str(BIN / "python"), "stages/archive.py", "--replace")
    metrics = json.loads((project.root / "metrics" / "archive.json").read_text())
    assert metrics["objects_written"] == metrics["objects_replaced"] == 1, proc.stderr
    sibling = metrics["replaced"][0]["old_version"]
    assert metrics["replaced"][0]["key"] == key and sibling.startswith(key.removesuffix("bars.csv.gz"))
    assert (archive / sibling).read_bytes() == old
    after = tree_hashes(archive)
    assert {k: v for k, v in after.items() if k not in (key, sibling)} == {
        k: v for k, v in good.items() if k != key
    }


# --------------------------------------------------------------------------- S3 (moto on loopback)


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return write_sim_raw(tmp_path / "raw")


def _versions(server: S3Server, bucket: str, key: str) -> list[bytes]:
    client = server.client()
    listed = client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    return [
        client.get_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])["Body"].read()
        # LastModified has one-second resolution, so two writes in the same second tie;
        # the current version is the one S3 marks IsLatest.
        for v in sorted(listed, key=lambda v: (v["IsLatest"], v["LastModified"]))
        if v["Key"] == key
    ]


@pytest.mark.xdist_group("s3")
def test_s3_archive_never_overwrites_and_replace_keeps_a_dated_sibling(
    raw: Path, s3_server: S3Server, s3_bucket: str, s3_env: dict
) -> None:
    url = f"s3://{s3_bucket}/bars"
    archive_raw(raw, url, show_progress=False)
    client = s3_server.client()
    day, date = _day(raw)
    key = partition_key("binance", "BTCUSDT", date)
    old = client.get_object(Bucket=s3_bucket, Key=f"bars/{key}")["Body"].read()
    before = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}

    frame = pd.read_parquet(day)
    frame.loc[0, "volume"] += 1.0
    write_parquet(day, frame)
    with pytest.raises(ArchiveError, match=rf"would change: s3://{s3_bucket}/bars/{key}"):
        archive_raw(raw, url, show_progress=False)
    assert {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]} == before

    result = archive_raw(
        raw, url, show_progress=False, replace=True, now=datetime(2026, 11, 29, 20, 0, 0, tzinfo=UTC)
    )
    sibling = key.replace("bars.csv.gz", "bars.replaced-20261129T200000Z.csv.gz")
    assert result.written == [key] and result.kept == [sibling]
    assert client.get_object(Bucket=s3_bucket, Key=f"bars/{sibling}")["Body"].read() == old
    assert read_archived_bytes(url, "binance", "BTCUSDT", date) != old


@pytest.mark.xdist_group("s3")
def test_s3_replace_in_a_versioned_bucket_relies_on_the_previous_version(
    raw: Path, s3_server: S3Server, s3_bucket: str, s3_env: dict
) -> None:
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    url = f"s3://{s3_bucket}/bars"
    archive_raw(raw, url, show_progress=False)
    day, date = _day(raw)
    key = partition_key("binance", "BTCUSDT", date)
    old = read_archived_bytes(url, "binance", "BTCUSDT", date)
    frame = pd.read_parquet(day)
    frame.loc[0, "volume"] += 1.0
    write_parquet(day, frame)
    with pytest.raises(ArchiveError, match="write-once"):
        archive_raw(raw, url, show_progress=False)
    assert _versions(s3_server, s3_bucket, f"bars/{key}") == [old]

    result = archive_raw(raw, url, show_progress=False, replace=True)
    assert result.kept == ["bucket-versioning"]
    versions = _versions(s3_server, s3_bucket, f"bars/{key}")
    assert len(versions) == 2 and versions[0] == old and versions[1] != old
    assert not [o for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"] if "replaced-" in o["Key"]]


# --------------------------------------------------------------------------- S3 deadlines


@pytest.fixture
def stalled_endpoint() -> Iterator[str]:
    """A TCP server on loopback that accepts every connection and never sends a byte."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.timeout(120)
def test_a_stalled_s3_endpoint_fails_the_archive_with_the_code_instead_of_hanging(
    raw: Path, stalled_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autotrader.archive import Deadlines
    from tests.s3server import FAKE_CREDENTIALS

    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTOTRADER_S3_ENDPOINT_URL", stalled_endpoint)
    deadlines = Deadlines(connect_timeout_s=1.0, read_timeout_s=1.0, max_attempts=2)
    started = time.monotonic()
    with pytest.raises(ArchiveError) as info:
        archive_raw(raw, "s3://stalled-bucket/bars", show_progress=False, deadlines=deadlines)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "s3://stalled-bucket/bars" in message
    assert "S3 code ReadTimeoutError" in message, message
    assert "read timeout 1s, 2 attempt(s)" in message
    print(
        f"\nS3 deadline: a stalled endpoint failed the archive after {elapsed:.2f} s ({deadlines.describe()})"
    )
