"""A real S3-protocol server on loopback for tests: moto's threaded server, not a mock of boto3/s3fs.

Import the fixtures you use explicitly in a test module (non-root conftest files may not declare
``pytest_plugins``)::

    from tests.s3server import s3_bucket_fixture, s3_env_fixture, s3_server_fixture  # noqa: F401

The functions carry a ``_fixture`` suffix and register under the short names (``s3_server``,
``s3_env``, ``s3_bucket``), so a test's parameters do not shadow the imports (ruff F811).

``s3_server`` (session) starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 with a port the OS
picks, so parallel xdist workers each get their own. ``s3_bucket`` creates a fresh bucket per test.
``s3_env`` puts fake credentials and the endpoint in this process's environment (for s3fs/boto3
here); ``S3Server.env`` is the same mapping for subprocesses (stages, ``dvc push``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "autotrader-test",
    "AWS_SECRET_ACCESS_KEY": "autotrader-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never read a developer's real AWS config or ask an instance-metadata service.
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    env: dict[str, str] = field(default_factory=dict)

    def client(self):
        """A boto3 client for setup and inspection (creating buckets, reading objects back)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, prefix: str = "autotrader") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1:<free port> for the whole session (per xdist worker)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL_S3": endpoint}
    try:
        yield S3Server(endpoint_url=endpoint, env=env)
    finally:
        server.stop()


@pytest.fixture(name="s3_env")
def s3_env_fixture(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake credentials and the loopback endpoint in os.environ for this test only."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AUTOTRADER_S3_ENDPOINT_URL", raising=False)
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return dict(s3_server.env)


@pytest.fixture(name="s3_bucket")
def s3_bucket_fixture(s3_server: S3Server) -> str:
    """A new, empty bucket on the loopback server."""
    return s3_server.create_bucket()
