"""A course that did not change costs one listing of the store; a title-only change costs no synthesis.

Against real stores: a local folder and SeaweedFS on loopback (tests/seaweed_server.py), with
botocore's own event hooks counting every request narro sends.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from narro.batch import conclude, plan_batch, prepare
from narro.catalogue import Catalogue
from narro.index import known_entries
from narro.manifest import load_course
from narro.plan import ClipSpec, RunContext, plan
from narro.retag import audio_part
from narro.s3store import S3Store
from narro.settings import QaSettings
from narro.store import LocalStore, Store
from tests.conftest import write_manifest
from tests.seaweed_server import BUCKET, seaweed, seaweed_env  # noqa: F401 (fixtures)
from tests.stand_ins import publish_stand_ins

VOICES = "default: narrator\nvoices:\n  narrator:\n    fast: {engine: piper, model: joe-us-medium}\n"
CLIPS = 30


def course_text(slug: str, clips: int = CLIPS) -> str:
    lines = [f"course: {slug}", "title: No-op at scale", "narrations:"]
    for n in range(clips):
        lines += [f"  - id: c{n:03d}", f"    title: Clip {n}", f"    text: Clip number {n} says something short."]
    return "\n".join(lines) + "\n"


def counted(store: S3Store) -> Counter[str]:
    """Every S3 operation `store` sends from now on, by name (botocore's before-call event)."""
    calls: Counter[str] = Counter()
    store._client.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    return calls


def render_nothing(manifest: Path, store: Store, catalogue: Catalogue):  # noqa: ANN201 (batch, summary)
    """What `narro render` does when nothing changed: plan and record, then close the run and the index."""
    batch = prepare(manifest, store, catalogue)
    return batch, conclude(batch, store, catalogue, QaSettings(), store_wait_s=0)


@pytest.fixture
def s3_course(tmp_path: Path, seaweed_env, isolated_catalogue: str):  # noqa: ANN001, ANN201, F811
    manifest = write_manifest(tmp_path / "course", course_text("noop-s3"), VOICES)
    store = S3Store(f"s3://{BUCKET}/{tmp_path.name}", seaweed_env.endpoint)
    specs = plan(load_course(manifest))
    publish_stand_ins(store, specs, threads=4)
    return manifest, store, specs, Catalogue(isolated_catalogue)


def test_an_unchanged_course_on_s3_costs_one_listing_and_the_index(s3_course):  # noqa: ANN001
    manifest, store, specs, catalogue = s3_course
    render_nothing(manifest, store, catalogue)  # the first run reads each sidecar and writes the index

    calls = counted(store)
    batch, summary = render_nothing(manifest, store, catalogue)

    assert len(summary.cached) == CLIPS and not batch.to_render and not summary.failed and summary.ok
    # One page lists up to 1,000 objects; the index is read once; no HEAD or GET per clip, and no write.
    assert calls == Counter({"ListObjectsV2": 1, "GetObject": 1})


def test_the_index_is_built_reading_each_sidecar_at_most_once(s3_course):  # noqa: ANN001
    manifest, store, specs, catalogue = s3_course
    calls, keys = counted(store), Counter()
    store._client.meta.events.register("provide-client-params.s3.GetObject",
                                       lambda params, **_: keys.update([params["Key"]]))

    published = store.published_clips(specs[0].course, {})

    assert {clip.content_key for clip in published.values()} == {spec.content_key for spec in specs}
    assert max(keys.values()) == 1 and calls["GetObject"] == CLIPS and calls["HeadObject"] == 0  # the ETag is the md5


def break_uploads(store: Store, specs: list[ClipSpec]) -> set[str]:
    """Leave three clips as interrupted uploads would; returns their ids."""
    course = specs[0].course
    gone_sidecar, new_mp3, gone_mp3 = (spec.narration_id for spec in specs[:3])
    if isinstance(store, S3Store):
        client = store._client
        client.delete_object(Bucket=store.bucket, Key=store._key(course, f"{gone_sidecar}.json"))
        # A new take's MP3 went up, the run died before its sidecar: the old sidecar names other bytes.
        client.put_object(Bucket=store.bucket, Key=store._key(course, f"{new_mp3}.mp3"), Body=b"another take")
        client.delete_object(Bucket=store.bucket, Key=store._key(course, f"{gone_mp3}.mp3"))
    else:
        folder = Path(store.url) / course
        (folder / f"{gone_sidecar}.json").unlink()
        (folder / f"{new_mp3}.mp3").write_bytes(b"another take")
        (folder / f"{gone_mp3}.mp3").unlink()
    return {gone_sidecar, new_mp3, gone_mp3}


def test_an_interrupted_upload_is_never_trusted_on_s3(s3_course):  # noqa: ANN001
    manifest, store, specs, catalogue = s3_course
    render_nothing(manifest, store, catalogue)  # the index now vouches for every clip
    broken = break_uploads(store, specs)

    published = store.published_clips(specs[0].course, known_entries(store, specs[0].course))
    batch = plan_batch(manifest, store, catalogue)

    assert set(published) == {spec.narration_id for spec in specs} - broken
    assert {spec.narration_id for spec in batch.to_render} == broken and len(batch.cached) == CLIPS - 3


def test_an_interrupted_upload_is_never_trusted_in_a_folder(tmp_path: Path, isolated_catalogue: str):
    manifest = write_manifest(tmp_path / "course", course_text("noop-local"), VOICES)
    store, specs, catalogue = LocalStore(tmp_path / "store"), plan(load_course(manifest)), Catalogue(isolated_catalogue)
    publish_stand_ins(store, specs)
    render_nothing(manifest, store, catalogue)
    index = (tmp_path / "store" / "noop-local" / "index.json").read_bytes()
    _, summary = render_nothing(manifest, store, catalogue)
    assert (tmp_path / "store" / "noop-local" / "index.json").read_bytes() == index  # a no-op rewrites nothing

    broken = break_uploads(store, specs)
    batch = plan_batch(manifest, store, catalogue)

    assert {spec.narration_id for spec in batch.to_render} == broken and len(summary.cached) == CLIPS


# ---------------------------------------------------------------- a title-only change (issue 15, item 7)

TITLED = """
course: retag-test
title: Retag test
narrations:
  - id: codec
    title: {title}
    text: A neural audio codec turns sound into a short list of numbers.
"""


def test_a_title_only_change_retags_without_synthesis(tmp_path: Path, isolated_catalogue: str,
                                                     monkeypatch: pytest.MonkeyPatch):
    from mutagen.id3 import ID3

    from narro import clip
    from narro.cli import main
    from narro.encode import decode
    from narro.engines import fallback
    from narro.settings import Settings
    from narro.watermark import payload_for, verify_encoded

    manifest = write_manifest(tmp_path / "course", TITLED.format(title="Codec"), VOICES)
    [spec] = plan(load_course(manifest))
    store, folder = LocalStore(tmp_path / "store"), tmp_path / "store" / "retag-test"
    catalogue = Catalogue(isolated_catalogue)
    catalogue.start_run("r1", spec.course)
    catalogue.register(spec.course, spec.narration_id, title=spec.title, voice=spec.voice, tier=spec.tier,
                       content_key=spec.content_key)
    clip.render_clip(spec, RunContext("r1", str(manifest), "0" * 64), store, catalogue, Settings(qa=QaSettings(asr=False)))
    before = (folder / "codec.mp3").read_bytes()
    assert str(ID3(folder / "codec.mp3")["TIT2"]) == "Codec"

    manifest.write_text(TITLED.format(title="Codec tokens, explained – part 1"), encoding="utf-8")
    [renamed] = plan(load_course(manifest))
    assert renamed.content_key == spec.content_key  # the title is not in the key: the audio is the same
    synthesised = []
    real = fallback.synthesize_clip
    monkeypatch.setattr(fallback, "synthesize_clip", lambda *a, **k: synthesised.append(a) or real(*a, **k))
    store_flag = ["--store", str(tmp_path / "store")]

    dry = CliRunner().invoke(main, ["render", str(manifest), *store_flag, "--dry-run"])
    assert "would retag retag-test/codec: title changed: 'Codec' → 'Codec tokens, explained – part 1'" in dry.output
    assert "0 to render, 1 to retag, 0 unchanged" in dry.output and (folder / "codec.mp3").read_bytes() == before

    result = CliRunner().invoke(main, ["render", str(manifest), *store_flag])

    assert result.exit_code == 0, result.output
    assert "retagged 1 (title changed; new ID3 title, same audio): codec" in result.output
    assert synthesised == []
    after = (folder / "codec.mp3").read_bytes()
    assert str(ID3(folder / "codec.mp3")["TIT2"]) == "Codec tokens, explained – part 1"
    assert audio_part(after) == audio_part(before) and after != before
    sidecar = json.loads((folder / "codec.json").read_text())
    assert sidecar["title"] == "Codec tokens, explained – part 1" and sidecar["content_key"] == spec.content_key
    assert sidecar["mp3"]["sha256"] == hashlib.sha256(after).hexdigest() and sidecar["retagged"]["from_title"] == "Codec"
    assert store.published_key("retag-test", "codec") == spec.content_key
    verified = verify_encoded(after, decode(after, 22050), 22050, payload_for(spec.content_key))
    assert verified.payload == payload_for(spec.content_key)
    [entry] = json.loads((folder / "index.json").read_text())["clips"]
    assert entry["current"] and entry["published_title"] == "Codec tokens, explained – part 1"

    again = CliRunner().invoke(main, ["render", str(manifest), *store_flag])
    assert again.exit_code == 0 and "retagged" not in again.output and synthesised == []


def test_the_index_follows_what_a_run_published(tmp_path: Path, isolated_catalogue: str):
    manifest = write_manifest(tmp_path / "course", course_text("noop-follow", 3), VOICES)
    store, specs, catalogue = LocalStore(tmp_path / "store"), plan(load_course(manifest)), Catalogue(isolated_catalogue)
    publish_stand_ins(store, specs[:2])
    render_nothing(manifest, store, catalogue)
    batch = prepare(manifest, store, catalogue)
    assert [spec.narration_id for spec in batch.to_render] == ["c002"]

    publish_stand_ins(store, specs[2:])  # what the flow's worker publishes
    conclude(batch, store, catalogue, QaSettings(), store_wait_s=0)

    index = json.loads((tmp_path / "store" / "noop-follow" / "index.json").read_text())
    assert [(clip["id"], clip["content_key"]) for clip in index["clips"]] == [(s.narration_id, s.content_key)
                                                                              for s in specs]
