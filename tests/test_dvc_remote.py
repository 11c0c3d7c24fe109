"""``dvc push`` / ``dvc pull`` round trip through an S3 remote on loopback (moto's server, real dvc-s3)."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import tree_hashes
from tests.s3server import S3Server, s3_bucket_fixture, s3_server_fixture  # noqa: F401
from tests.test_archive import write_sim_raw

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("s3")]


def test_dvc_push_and_pull_through_an_s3_remote(project, s3_server: S3Server, s3_bucket: str) -> None:
    # Real bars (simulated market, raw-store layout) tracked as external history, as a team would
    # `dvc add` broker exports under data/external for the files source.
    raw = write_sim_raw(project.root / "data" / "external" / "history", days=2)
    original = tree_hashes(raw)
    assert len(original) >= 4

    # The README recipe: a default S3 remote, the endpoint in config, credentials only in the env.
    project.dvc("remote", "add", "-d", "s3", f"s3://{s3_bucket}/dvc")
    project.dvc("remote", "modify", "s3", "endpointurl", s3_server.endpoint_url)
    env = {k: v for k, v in s3_server.env.items() if k != "AWS_ENDPOINT_URL_S3"}
    config = (project.root / ".dvc" / "config").read_text()
    assert "autotrader-test-secret" not in config and "access_key" not in config

    project.dvc("add", "data/external/history", env=env)
    project.dvc("push", "data/external/history.dvc", env=env)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert keys and all(k.startswith("dvc/files/md5/") for k in keys)
    assert len(keys) == len(original) + 1  # every file plus the directory listing (.dir)

    shutil.rmtree(project.root / ".dvc" / "cache")
    shutil.rmtree(raw)

    project.dvc("pull", "data/external/history.dvc", env=env)
    assert tree_hashes(raw) == original
