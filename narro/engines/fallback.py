"""A tier's fallback: when a clip's engine is unavailable, its fallback engine voice speaks it.

An engine voice may name a `fallback` (voices.yaml: `fallback: {engine: piper, model: ...}`).
When the engine raises EngineUnavailable (service unreachable, or still refusing after its own
retries) and the manifest allows it, the fallback voice renders the clip and the Synthesis
says so in `details["fallback"]`.

A fallback clip is not the audio the spec asked for, so it is published under the content key
of the voice that actually spoke (`published_key`). The planned key then does not match the
store, and the next render tries the primary engine again: once the service is back, fallback
clips are replaced; while it is away, they are re-made by the fallback (cheap, offline).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from narro.engines import Synthesis, engine_for
from narro.errors import EngineUnavailable
from narro.plan import ClipSpec, content_key
from narro.voices import EngineVoice

DETAIL = "fallback"


def label(voice: EngineVoice) -> str:
    return f"{voice.engine}:{voice.model}"


def synthesize_clip(spec: ClipSpec) -> Synthesis:
    """The spec's text spoken by its engine voice, or by the fallback voice when that is unavailable."""
    try:
        return engine_for(spec.engine_voice).synthesize(spec.text)
    except EngineUnavailable as error:
        if spec.engine_voice.fallback is None:
            raise
        if not spec.allow_fallback:
            raise EngineUnavailable(f"{error}; the manifest forbids the fallback voice for this clip "
                                    f"(fallback: false), so it was not rendered") from error
        return synthesize_fallback(spec, str(error))


def synthesize_fallback(spec: ClipSpec, reason: str) -> Synthesis:
    """Re-make a take with the tier's fallback engine voice (also for QA: a take that failed its checks).

    Raises EngineUnavailable when the spec's voice has no fallback or it cannot be used either.
    """
    fallback = spec.engine_voice.fallback
    if fallback is None:
        raise EngineUnavailable(f"{label(spec.engine_voice)} has no fallback voice in the registry")
    try:
        synthesis = engine_for(fallback).synthesize(spec.text)
    except EngineUnavailable as error:
        raise EngineUnavailable(f"{reason}; the fallback {label(fallback)} is unavailable too: {error}") from error
    synthesis.details[DETAIL] = {"from": label(spec.engine_voice), "to": label(fallback), "reason": reason}
    return synthesis


def used(synthesis: Synthesis) -> dict[str, Any] | None:
    """The fallback record of a take (from, to, reason), or None when the planned voice spoke."""
    record = synthesis.details.get(DETAIL)
    return record if isinstance(record, dict) else None


def effective_spec(spec: ClipSpec, fallback: dict[str, Any] | None) -> ClipSpec:
    """The spec as it was actually rendered: with the fallback voice and that voice's key."""
    if fallback is None or spec.engine_voice.fallback is None:
        return spec
    actual = replace(spec, engine_voice=spec.engine_voice.fallback, content_key="")
    return replace(actual, content_key=content_key(actual))
