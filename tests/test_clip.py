"""narro.clip.render_clip through plain calls: real piper, a real local store, a SQLite catalogue, no Prefect."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from narro import clip, render
from narro.catalogue import Catalogue
from narro.errors import QualityError, StoreError
from narro.manifest import load_course
from narro.plan import ClipSpec, plan
from narro.render import RunContext
from narro.settings import QaSettings, Settings
from narro.store import LocalStore
from tests.conftest import write_manifest

VOICES = """
default: narrator
voices:
  narrator:
    fast: {engine: piper, model: joe-us-medium}
"""

COURSE = """
course: clip-test
title: Clip test
narrations:
  - id: codec
    title: Codec
    text: A neural audio codec turns sound into a short list of numbers, about seventy five frames every second.
"""

CONTEXT = RunContext("run-1", "course.yaml", "0" * 64)


@pytest.fixture
def spec(tmp_path: Path) -> ClipSpec:
    return plan(load_course(write_manifest(tmp_path / "course", COURSE, VOICES)))[0]


@pytest.fixture
def catalogue(tmp_path: Path, spec: ClipSpec) -> Catalogue:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'clips.db'}")
    catalogue.start_run(CONTEXT.run_id, spec.course)
    catalogue.register(spec.course, spec.narration_id, title=spec.title, voice=spec.voice, tier=spec.tier,
                       content_key=spec.content_key)
    return catalogue


def test_a_passing_take_is_published_and_recorded(spec: ClipSpec, catalogue: Catalogue, tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    sidecar = clip.render_clip(spec, CONTEXT, store, catalogue, Settings())
    folder = tmp_path / "store" / "clip-test"
    mp3 = (folder / "codec.mp3").read_bytes()
    assert json.loads((folder / "codec.json").read_text()) == sidecar
    assert sidecar["mp3"]["sha256"] == hashlib.sha256(mp3).hexdigest() and sidecar["content_key"] == spec.content_key
    assert sidecar["qa"]["take"] == 1 and sidecar["qa"]["passed"] and sidecar["watermark"]["payload"]
    assert store.published_key("clip-test", "codec") == spec.content_key
    state = catalogue.clip("clip-test", "codec")
    assert state.status == "rendered" and state.attempts == 1 and state.published_key == spec.content_key
    [attempt] = catalogue.attempts("clip-test", "codec")
    assert attempt.status == "rendered" and attempt.metrics["passed"] and attempt.metrics["wer"] < 0.2


def test_a_quality_gate_refusal_publishes_nothing_and_records_every_take(spec: ClipSpec, catalogue: Catalogue,
                                                                         tmp_path: Path):
    # No speech is this fast: every take fails the speech-rate check.
    strict = Settings(qa=QaSettings(min_wpm=1000, max_wpm=2000, min_rate_words=0, asr=False, max_takes=2))
    with pytest.raises(QualityError, match="no take passed") as refused:
        clip.render_clip(spec, CONTEXT, LocalStore(tmp_path / "store"), catalogue, strict)
    assert "take 1 (as asked)" in str(refused.value) and "take 2 (pace x1.04)" in str(refused.value)
    assert not (tmp_path / "store").exists()
    state = catalogue.clip("clip-test", "codec")
    assert state.status == "failed" and state.published_key is None and "speech_rate" in state.last_error
    attempts = catalogue.attempts("clip-test", "codec")
    assert [a.status for a in attempts] == ["failed", "failed"]
    assert all(a.metrics["failed"] == ["speech_rate"] for a in attempts)


def test_a_store_that_cannot_take_the_clip_fails_its_attempt(spec: ClipSpec, catalogue: Catalogue, tmp_path: Path):
    not_a_folder = tmp_path / "store"
    not_a_folder.write_text("")
    with pytest.raises(StoreError, match="cannot write"):
        clip.render_clip(spec, CONTEXT, LocalStore(not_a_folder), catalogue, Settings(qa=QaSettings(asr=False)))
    state = catalogue.clip("clip-test", "codec")
    assert state.status == "failed" and "cannot write" in state.last_error
    [attempt] = catalogue.attempts("clip-test", "codec")
    assert attempt.status == "failed" and attempt.metrics["passed"]  # the take was good; the store was not


def test_an_unexpected_error_fails_the_clip_with_its_type(spec: ClipSpec, catalogue: Catalogue, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    def broken(*args: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(render, "post_process", broken)
    with pytest.raises(ZeroDivisionError):
        clip.render_clip(spec, CONTEXT, LocalStore(tmp_path / "store"), catalogue, Settings())
    state = catalogue.clip("clip-test", "codec")
    assert state.status == "failed" and state.last_error == "ZeroDivisionError: a bug"
    assert [a.status for a in catalogue.attempts("clip-test", "codec")] == ["failed"]
