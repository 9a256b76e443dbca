"""Content keys: the same spec always gives the same key; anything audible gives a new one."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import shutil
from itertools import count
from pathlib import Path

import pytest
import yaml

from narro.audio import PostSettings
from narro.engines.piper import BUNDLED_VOICES, PiperKind, model_path
from narro.manifest import load_course
from narro.plan import ClipSpec, plan
from narro.voices import EngineVoice

TEXT = "Codecs compress audio into tokens."
VOICES = {
    "default": "narrator",
    "voices": {
        "narrator": {
            "fast": {"engine": "piper", "model": "joe-us-medium"},
            "quality": {"engine": "piper", "model": "joe-us-medium"},
        },
        "unhurried": {"fast": {"engine": "piper", "model": "joe-us-medium", "length_scale": 1.2}},
    },
}


def manifest(**narration: object) -> dict:
    """A one-narration course; keyword arguments replace the narration's fields."""
    entry = {"id": "intro", "title": "Welcome", "text": TEXT, **narration}
    return {"course": "demo", "title": "Demo course", "narrations": [{k: v for k, v in entry.items() if v is not None}]}


class Planner:
    """Writes each manifest into a fresh folder (with voices.yaml and scripts) and plans it."""

    def __init__(self, root: Path):
        self.root = root
        self.folders = count()

    def specs(self, course: dict, voices: dict | None = VOICES, files: dict[str, str] | None = None,
              post: PostSettings | None = None) -> list[ClipSpec]:
        folder = self.root / f"course-{next(self.folders)}"
        folder.mkdir()
        (folder / "course.yaml").write_text(yaml.safe_dump(course, sort_keys=False), encoding="utf-8")
        if voices is not None:
            (folder / "voices.yaml").write_text(yaml.safe_dump(voices), encoding="utf-8")
        for name, content in (files or {}).items():
            (folder / name).write_text(content, encoding="utf-8")
        return plan(load_course(folder / "course.yaml"), post)

    def key(self, course: dict, **options: object) -> str:
        [spec] = self.specs(course, **options)
        return spec.content_key


@pytest.fixture
def planner(tmp_path: Path) -> Planner:
    return Planner(tmp_path)


def test_key_is_64_hex_characters(planner):
    assert re.fullmatch(r"[0-9a-f]{64}", planner.key(manifest()))


def test_same_spec_gives_the_same_key_across_loads_and_folders(planner):
    assert planner.key(manifest()) == planner.key(manifest())


def test_key_does_not_depend_on_the_other_narrations(planner):
    alone = planner.key(manifest())
    course = manifest()
    course["narrations"].insert(0, {"id": "before", "text": "Something else first."})

    specs = planner.specs(course)

    assert [s.narration_id for s in specs] == ["before", "intro"]
    assert specs[1].content_key == alone
    assert specs[0].content_key != alone


@pytest.mark.parametrize(
    ("narration", "files"),
    [
        ({"text": "  Codecs   compress\naudio  into tokens .\n"}, None),
        ({"text": "Codecs\u00a0compress audio into tokens."}, None),
        ({"text": None, "script": "intro.md"}, {"intro.md": "Codecs **compress** audio into [tokens](t.md)."}),
        ({"text": None, "script": "intro.md"}, {"intro.md": "# Codecs compress audio into tokens\n"}),
        ({"text": None, "script": "intro.md"}, {"intro.md": "<!-- draft 2 -->\nCodecs compress\r\naudio into `tokens`\n"}),
    ],
    ids=["whitespace", "no-break-space", "emphasis-and-link", "heading", "comment-crlf-code"],
)
def test_formatting_that_does_not_change_the_words_keeps_the_key(planner, narration, files):
    assert planner.key(manifest(**narration), files=files) == planner.key(manifest())


def test_default_post_settings_are_the_ones_plan_uses(planner):
    assert planner.key(manifest(), post=PostSettings()) == planner.key(manifest())


@pytest.mark.parametrize(
    "change",
    [
        {"text": "Codecs compress speech into tokens."},
        {"text": "Codecs compress audio into tokens!"},
        {"voice": "unhurried"},
        {"tier": "quality"},
        {"id": "intro-2"},
    ],
    ids=["word", "punctuation", "voice", "tier", "id"],
)
def test_an_audible_or_tagged_change_gives_a_new_key(planner, change):
    assert planner.key(manifest(**change)) != planner.key(manifest())


@pytest.mark.parametrize("field", ["course", "title"])
def test_course_slug_and_title_are_in_the_key(planner, field):
    changed = {**manifest(), field: "other-course" if field == "course" else "Another title"}

    assert planner.key(changed) != planner.key(manifest())


def test_voice_name_alone_changes_the_key(planner):
    twin = {"default": "narrator", "voices": {**VOICES["voices"], "twin": VOICES["voices"]["narrator"]}}

    assert planner.key(manifest(voice="twin"), voices=twin) != planner.key(manifest(voice="narrator"), voices=twin)


def test_voice_registry_edit_to_the_engine_voice_changes_the_key(planner):
    slower = {"default": "narrator", "voices": {"narrator": {"fast": {"engine": "piper", "model": "joe-us-medium",
                                                                     "length_scale": 1.1}}}}

    assert planner.key(manifest(), voices=slower) != planner.key(manifest())


def test_builtin_registry_and_equal_voices_yaml_give_the_same_key(planner):
    assert planner.key(manifest(), voices=None) == planner.key(manifest())


@pytest.mark.parametrize(
    "change",
    [{"target_lufs": -19.0}, {"true_peak_dbtp": -1.0}, {"bitrate_kbps": 128}, {"pad_s": 0.5}, {"silence_floor_db": 50.0},
     {"watermark_org": 0x12}],
    ids=lambda change: next(iter(change)),
)
def test_post_settings_are_in_the_key(planner, change):
    assert planner.key(manifest(), post=PostSettings(**change)) != planner.key(manifest())


def test_every_post_setting_is_covered_above():
    assert {f.name for f in dataclasses.fields(PostSettings)} == {
        "target_lufs", "true_peak_dbtp", "bitrate_kbps", "pad_s", "silence_floor_db", "watermark_org"
    }


def test_engine_version_is_in_the_key(planner, monkeypatch):
    before = planner.key(manifest())
    version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "99.0" if name == "piper-tts" else version(name))

    assert planner.key(manifest()) != before


def test_engine_identity_is_in_the_key(planner, monkeypatch):
    before = planner.key(manifest())
    identity = PiperKind.identity
    monkeypatch.setattr(PiperKind, "identity", staticmethod(lambda voice: {**identity(voice), "sentence_pause_s": 0.5}))

    assert planner.key(manifest()) != before


def test_model_bytes_not_model_path_are_in_the_key(planner, tmp_path):
    bundled = model_path(EngineVoice(engine="piper", model=next(iter(BUNDLED_VOICES))))
    copy, altered = tmp_path / "copy.onnx", tmp_path / "altered.onnx"
    shutil.copyfile(bundled, copy)
    shutil.copyfile(bundled, altered)
    with altered.open("r+b") as handle:  # one byte inside the weights, same size
        handle.seek(copy.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))

    def voices_for(model: Path) -> dict:
        return {"voices": {"narrator": {"fast": {"engine": "piper", "model": str(model)}}}}

    bundled_key = planner.key(manifest())
    assert planner.key(manifest(), voices=voices_for(copy)) == bundled_key
    assert planner.key(manifest(), voices=voices_for(altered)) != bundled_key


def test_plan_resolves_each_narration_in_course_order(planner):
    course = manifest()
    course["narrations"].append({"id": "outro", "text": "Thanks for listening.", "voice": "unhurried"})

    intro, outro = planner.specs(course)

    assert (intro.object_name, outro.object_name) == ("demo/intro", "demo/outro")
    assert (intro.text, intro.voice, intro.tier) == (TEXT, "narrator", "fast")
    assert outro.engine_voice == EngineVoice(engine="piper", model="joe-us-medium", length_scale=1.2)
    assert outro.tags() == {"title": "outro", "album": "Demo course", "artist": "narro voice unhurried",
                            "narro_course": "demo", "narro_id": "outro"}
