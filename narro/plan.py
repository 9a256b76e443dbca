"""From a course to clip specs, each with a content key.

The content key is the sha256 of the canonical JSON of everything that shapes the published
audio: normalised text, voice, tier, engine identity (name, version, model hash, settings),
post-processing settings, the watermark version and the tags other than the title. Same key,
same sound: a clip whose key is already in the store is not rendered again. The narration's
title is left out on purpose: it lives only in the ID3 title and the sidecar, so a title-only
change re-tags the published MP3 (narro.retag) instead of synthesising it again, and the
watermark, whose payload is a tag of the key, stays valid.

Only light modules are imported here: `narro render` plans (and finds nothing to do) without
loading numpy-heavy audio code, Prefect or any engine's runtime (tests/test_imports.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from narro.engines import engine_kind
from narro.lexicon import lexicon_terms
from narro.manifest import Course, Narration
from narro.post import PostSettings
from narro.settings import QaSettings
from narro.text import Speech, speech
from narro.voices import EngineVoice, Tier
from narro.watermark_version import VERSION as WATERMARK_VERSION

# Bump when the pipeline changes what it produces for the same inputs.
PIPELINE_VERSION = 1


@dataclass(frozen=True)
class RunContext:
    """Facts about the run that every sidecar records."""

    run_id: str
    manifest_path: str
    manifest_sha256: str


def manifest_label(path: Path) -> str:
    """The manifest's path as sidecars record it: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip, independent of any other clip."""

    course: str
    course_title: str
    narration_id: str
    title: str
    text: str
    voice: str
    tier: Tier
    engine_voice: EngineVoice
    post: PostSettings
    content_key: str = field(default="")
    allow_fallback: bool = True
    """The manifest allows the engine voice's fallback (not part of the key: it shapes no audio by itself)."""
    speech: Speech | None = None
    """The script as written and as spoken, piece by piece (`text` is its spoken side, lexicon applied):
    captions show its written words; None for a spec made from spoken text alone."""
    qa: tuple[tuple[str, Any], ...] = ()
    """Quality gate thresholds the manifest sets for this clip (not part of the key: they judge, not shape, audio)."""
    voices_file: str | None = None
    """The voices.yaml the voice comes from: the consent.yaml beside it governs a cloned voice (narro.consent)."""
    organisation: str | None = None
    """The manifest's organisation, which a consent's scope may name."""

    def thresholds(self, base: QaSettings) -> QaSettings:
        """The quality gate's thresholds for this clip: the run's, with the manifest's `qa` on top."""
        return base.model_copy(update=dict(self.qa)) if self.qa else base

    @property
    def script(self) -> Speech:
        """The script as pieces: `speech` while `text` is its spoken side, else `text` as written and spoken."""
        if self.speech is not None and self.speech.spoken == self.text:
            return self.speech
        return speech(self.text)

    @property
    def heard(self) -> str:
        """What the quality gate expects to hear: the spoken text, with lexicon phonemes as words."""
        return self.script.heard

    @property
    def object_name(self) -> str:
        return f"{self.course}/{self.narration_id}"

    def tags(self) -> dict[str, str]:
        """ID3 tags: title, album (course), and narro's ids for tracing a file back."""
        return {
            "title": self.title or self.narration_id,
            "album": self.course_title or self.course,
            "artist": f"narro voice {self.voice}",
            "narro_course": self.course,
            "narro_id": self.narration_id,
        }


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PlanLookups:
    """What every clip of one plan looks up alike, worked out once: engine voice identities, the voices file.

    An identity may read package metadata and hash a model file: asked per clip it was most of
    the time a 10,000-narration course took to plan. Voices are told apart by object, as the
    course's registry hands out one object per voice and tier; each is kept, so its id stays its own.
    """

    def __init__(self) -> None:
        self._known: dict[int, tuple[EngineVoice, dict[str, object]]] = {}
        self._paths: dict[Path, str] = {}

    def voices_file(self, course: Course) -> str | None:
        """The absolute path of the course's voices.yaml (resolved once: it was a second per 10,000 clips)."""
        source = course.voices.source
        if not source:
            return None
        if source not in self._paths:
            self._paths[source] = str(Path(source).resolve())
        return self._paths[source]

    def __call__(self, voice: EngineVoice) -> dict[str, object]:
        known = self._known.get(id(voice))
        if known is None:
            known = self._known[id(voice)] = (voice, engine_kind(voice.engine).identity(voice))
        return known[1]


def content_key(spec: ClipSpec, identities: PlanLookups | None = None) -> str:
    canonical = {
        "pipeline": PIPELINE_VERSION,
        "text": spec.text,
        "voice": spec.voice,
        "tier": spec.tier,
        "engine": (identities or PlanLookups())(spec.engine_voice),
        "post": spec.post.as_dict(),
        "tags": {name: value for name, value in spec.tags().items() if name != "title"},
        "watermark": WATERMARK_VERSION,
    }
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def clip_spec(course: Course, narration: Narration, post: PostSettings,
              identities: PlanLookups | None = None) -> ClipSpec:
    engine_voice = course.voices.resolve(narration.voice, narration.tier)
    if narration.pace is not None:  # in the engine's identity, so in the key
        engine_voice = paced(engine_voice, narration.pace)
    # The lexicon's entries that occur in the script change its spoken text, and so the key.
    script = speech(narration.written or narration.text,
                    lexicon_terms(course.lexicon, narration.written, narration.voice, engine_voice))
    spec = ClipSpec(
        course=course.slug,
        course_title=course.title,
        narration_id=narration.id,
        title=narration.title,
        text=script.spoken,
        voice=narration.voice,
        tier=narration.tier,
        engine_voice=engine_voice,
        post=post,
        allow_fallback=narration.allow_fallback,
        speech=script,
        voices_file=(identities or PlanLookups()).voices_file(course),
        organisation=course.organisation,
        qa=narration.qa,
    )
    return ClipSpec(**{**spec.__dict__, "content_key": content_key(spec, identities)})


def paced(voice: EngineVoice, speed: float) -> EngineVoice:
    """An engine voice, and its fallback, at a narration's `pace:` (where their engines have a pace control)."""
    kind = engine_kind(voice.engine)
    voice = kind.paced(voice, speed) if kind.pace_control else voice
    if voice.fallback is not None:
        voice = voice.model_copy(update={"fallback": paced(voice.fallback, speed)})
    return voice


def effective_spec(spec: ClipSpec, fallback: dict[str, Any] | None) -> ClipSpec:
    """The spec as it was actually rendered: with the fallback voice and that voice's key.

    `fallback` is the take's fallback record (narro.engines.fallback.used); None when the planned voice spoke.
    """
    if fallback is None or spec.engine_voice.fallback is None:
        return spec
    actual = replace(spec, engine_voice=spec.engine_voice.fallback, content_key="")
    return replace(actual, content_key=content_key(actual))


def plan(course: Course, post: PostSettings | None = None) -> list[ClipSpec]:
    """One spec per narration, in course order."""
    settings, identities = post or PostSettings(), PlanLookups()
    return [clip_spec(course, narration, settings, identities) for narration in course.narrations]
