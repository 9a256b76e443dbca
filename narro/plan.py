"""From a course to clip specs, each with a content key.

The content key is the sha256 of the canonical JSON of everything that shapes the published
file: normalised text, voice, tier, engine identity (name, version, model hash, settings),
post-processing settings and tags. Same key, same bytes: a clip whose key is already in the
store is not rendered again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from narro.audio import PostSettings
from narro.engines import engine_kind
from narro.lexicon import lexicon_terms
from narro.manifest import Course, Narration
from narro.settings import QaSettings
from narro.text import Speech, speech
from narro.voices import EngineVoice, Tier
from narro.watermark import VERSION as WATERMARK_VERSION

# Bump when the pipeline changes what it produces for the same inputs.
PIPELINE_VERSION = 1


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


def content_key(spec: ClipSpec) -> str:
    canonical = {
        "pipeline": PIPELINE_VERSION,
        "text": spec.text,
        "voice": spec.voice,
        "tier": spec.tier,
        "engine": engine_kind(spec.engine_voice.engine).identity(spec.engine_voice),
        "post": spec.post.as_dict(),
        "tags": spec.tags(),
        "watermark": WATERMARK_VERSION,
    }
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def clip_spec(course: Course, narration: Narration, post: PostSettings) -> ClipSpec:
    engine_voice = course.voices.resolve(narration.voice, narration.tier)
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
        voices_file=str(Path(course.voices.source).resolve()) if course.voices.source else None,
        organisation=course.organisation,
        qa=narration.qa,
    )
    return ClipSpec(**{**spec.__dict__, "content_key": content_key(spec)})


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
    settings = post or PostSettings()
    return [clip_spec(course, narration, settings) for narration in course.narrations]
