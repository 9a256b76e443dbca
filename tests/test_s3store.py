"""The S3 store against a real S3-compatible server on loopback (rclone serve s3)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from narro.catalogue import Catalogue
from narro.cli import main
from narro.errors import StoreError
from narro.s3store import S3Store
from narro.store import open_store
from tests.conftest import write_manifest
from tests.s3_server import S3Server, s3_env, s3_server  # noqa: F401 (fixtures)

COURSE = """
course: s3-test
title: S3 test
narrations:
  - id: one
    title: One
    text: The first clip goes to the bucket.
  - id: two
    title: Two
    text: The second clip follows it.
  - id: three
    title: Three
    text: And the third one closes the batch.
"""


def sidecar_for(mp3: bytes, key: str = "k" * 64) -> dict:
    return {"content_key": key, "mp3": {"bytes": len(mp3), "sha256": hashlib.sha256(mp3).hexdigest()},
            "watermark": {"payload": "6e123456"}}


def test_publish_writes_objects_with_metadata_and_checksums(s3_env: S3Server):
    s3_env.bucket("unit")
    store = open_store("s3://unit/pre/fix", s3_env.endpoint)
    assert isinstance(store, S3Store)
    store.check()
    mp3 = b"\xff\xfb" + bytes(range(256)) * 10
    store.publish("c", "a", mp3, sidecar_for(mp3), captions=b"WEBVTT\n")
    head = store._client.head_object(Bucket="unit", Key="pre/fix/c/a.mp3")
    metadata = {k.lower(): v for k, v in head["Metadata"].items()}  # rclone capitalises the keys
    assert metadata["content-key"] == "k" * 64 and metadata["narration-id"] == "a"
    assert metadata["watermark"] == "6e123456" and metadata["mp3-sha256"] == hashlib.sha256(mp3).hexdigest()
    assert (s3_env.root / "unit/pre/fix/c/a.mp3").read_bytes() == mp3
    assert (s3_env.root / "unit/pre/fix/c/a.vtt").read_bytes() == b"WEBVTT\n"
    assert store.published_key("c", "a") == "k" * 64
    assert store.read_mp3("c", "a") == mp3
    with urllib.request.urlopen(store.audio_url("c", "a"), timeout=10) as answer:  # presigned: no credentials sent
        assert answer.read() == mp3
    # A new MP3 without its sidecar (an interrupted re-render) is not trusted.
    newer = mp3 + b"more"
    store._put("pre/fix/c/a.mp3", newer, "audio/mpeg", {"mp3-sha256": hashlib.sha256(newer).hexdigest()})
    assert store.published_key("c", "a") is None
    store.publish("c", "a", newer, sidecar_for(newer, "n" * 64))  # the retry completes it; captions gone
    assert store.published_key("c", "a") == "n" * 64 and not (s3_env.root / "unit/pre/fix/c/a.vtt").exists()
    with pytest.raises(StoreError, match="does not describe"):
        store.publish("c", "b", mp3, sidecar_for(newer))
    assert store.read_sidecar("c", "b") is None and store.published_key("c", "missing") is None


def test_bad_checksum_is_refused_by_the_server(s3_env: S3Server):
    s3_env.bucket("unit")
    store = S3Store("s3://unit", s3_env.endpoint)
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="BadDigest"):
        store._client.put_object(Bucket="unit", Key="x.bin", Body=b"abc", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    assert not (s3_env.root / "unit/x.bin").exists()


# Every clip has captions (piper gives no word timings: they come from the gate's ASR pass).
EXPECTED = sorted(["index.json"] + [f"{n}.{e}" for n in ("one", "two", "three") for e in ("mp3", "json", "vtt", "srt")])


def clip_objects(folder: Path) -> list[str]:
    """Clip objects, the index and anything partial (other features may add reports beside them)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".mp3", ".json", ".vtt", ".srt", ".part", ".tmp")
                  or p.name.startswith("."))


def render(*args: str):
    return CliRunner().invoke(main, ["render", *args])


@pytest.mark.usefixtures("prefect_harness")
def test_course_renders_to_s3_verifies_and_rerenders(s3_env: S3Server, tmp_path: Path, isolated_catalogue: str):
    bucket = s3_env.bucket("course")
    manifest = write_manifest(tmp_path / "m", COURSE)
    result = render(str(manifest), "--store", "s3://course/narro", "--endpoint-url", s3_env.endpoint)
    assert result.exit_code == 0, result.output
    folder = bucket / "narro" / "s3-test"
    assert clip_objects(folder) == EXPECTED
    index = json.loads((folder / "index.json").read_text())
    assert [c["id"] for c in index["clips"]] == ["one", "two", "three"]
    verified = CliRunner().invoke(main, ["verify", *(str(folder / f"{n}.mp3") for n in ("one", "two", "three"))])
    assert verified.exit_code == 0, verified.output
    assert "s3-test/one" in verified.output  # the payload is found in the catalogue
    sidecar = json.loads((folder / "two.json").read_text())
    assert sidecar["watermark"]["payload"] and sidecar["mp3"]["sha256"] == hashlib.sha256(
        (folder / "two.mp3").read_bytes()).hexdigest()
    # Nothing changed: nothing is uploaded again.
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.mp3")}
    again = render(str(manifest), "--store", "s3://course/narro")
    assert again.exit_code == 0 and {p.name: p.stat().st_mtime_ns for p in folder.glob("*.mp3")} == before
    # A changed text overwrites that clip only, and the index follows.
    manifest.write_text(COURSE.replace("follows it", "follows it closely"), encoding="utf-8")
    changed = render(str(manifest), "--store", "s3://course/narro")
    assert changed.exit_code == 0, changed.output
    assert (folder / "one.mp3").stat().st_mtime_ns == before["one.mp3"]
    assert (folder / "two.mp3").stat().st_mtime_ns != before["two.mp3"]
    index = json.loads((folder / "index.json").read_text())
    two = json.loads((folder / "two.json").read_text())
    assert [c["content_key"] for c in index["clips"] if c["id"] == "two"] == [two["content_key"]]


@pytest.mark.usefixtures("prefect_harness")
def test_server_stopped_mid_batch_retries_and_publishes_each_clip_once(
        s3_env: S3Server, tmp_path: Path, isolated_catalogue: str):
    bucket = s3_env.bucket("outage")
    manifest = write_manifest(tmp_path / "m", COURSE)
    folder = bucket / "s3-test"
    stopped = threading.Event()

    def outage() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(folder.glob("*.mp3")):
            time.sleep(0.02)
        s3_env.stop()  # the first object has landed: take the server away mid-batch
        stopped.set()
        time.sleep(3)
        s3_env.start()

    watcher = threading.Thread(target=outage, daemon=True)
    watcher.start()
    result = render(str(manifest), "--store", "s3://outage", "--concurrency", "1")
    watcher.join()
    assert stopped.is_set()
    assert result.exit_code == 0, result.output
    assert clip_objects(folder) == EXPECTED  # each clip once, whole, nothing half-written beside it
    for name in ("one", "two", "three"):
        sidecar = json.loads((folder / f"{name}.json").read_text())
        assert sidecar["mp3"]["sha256"] == hashlib.sha256((folder / f"{name}.mp3").read_bytes()).hexdigest()
    states = Catalogue(isolated_catalogue).clips("s3-test")
    assert all(s.status == "rendered" and s.attempts == 1 for s in states)


@pytest.mark.parametrize("problem", ["wrong-secret", "missing-bucket"])
def test_bad_credentials_or_bucket_fail_before_anything_is_written(
        s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str):
    s3_env.bucket("present")
    manifest = write_manifest(tmp_path / "m", COURSE)
    target = "s3://present/x"
    if problem == "wrong-secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong-secret")
        expected = "the secret access key is wrong"
    else:
        target, expected = "s3://absent/x", "bucket does not exist"
    result = render(str(manifest), "--store", target)
    assert result.exit_code == 2, result.output
    assert expected in result.output and "definitely-wrong-secret" not in result.output
    assert list((s3_env.root / "present").iterdir()) == [] and not (s3_env.root / "absent").exists()
