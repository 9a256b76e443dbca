"""A tier's fallback: when a clip's engine is unavailable, its fallback engine voice speaks it.

An engine voice may name a `fallback` (voices.yaml: `fallback: {engine: piper, model: ...}`).
When the engine raises EngineUnavailable (service unreachable, or still refusing after its own
retries) and the manifest allows it, the fallback voice renders the clip and the Synthesis
says so in `details["fallback"]`.

A fallback clip is not the audio the spec asked for, so it is published under the content key
of the voice that actually spoke (`published_key`). The planned key then does not match the
store, and the next render tries the primary engine again: once the service is back, fallback
clips are replaced; while it is away, they are re-made by the fallback (cheap, offline):
narro.plan.effective_spec gives that spec and key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from narro.engines import Synthesis, engine_for, engine_kind
from narro.engines.marked import speak_marked
from narro.errors import ConsentError, EngineUnavailable

if TYPE_CHECKING:
    from narro.consent import ConsentGate
    from narro.plan import ClipSpec
    from narro.settings import Settings
    from narro.voices import EngineVoice

DETAIL = "fallback"


def label(voice: EngineVoice) -> str:
    return f"{voice.engine}:{voice.model}"


def speak(spec: ClipSpec, voice: EngineVoice, settings: Settings, gate: ConsentGate | None) -> Synthesis:
    """`voice` speaks the spec's text (script markup included): the one call of an engine for every take.

    A voice whose engine clones a speaker speaks only through the run's consent `gate`
    (narro.consent.ConsentGate: its rules checked now, the synthesis audited); without one it is refused.
    """
    kind = engine_kind(voice.engine)
    if not kind.clones_voice:
        return speak_marked(engine_for(voice, settings), spec.text, kind.pace_control)
    if gate is None:
        raise ConsentError(f"consent refused for voice '{spec.voice}' (rule: record): a cloned voice speaks only "
                           "where its consent is checked and its synthesis audited (a course render)")
    return gate.speak(spec, voice, lambda: speak_marked(engine_for(voice, settings), spec.text, kind.pace_control))


def synthesize_clip(spec: ClipSpec, settings: Settings, gate: ConsentGate | None = None) -> Synthesis:
    """The spec's text spoken by its engine voice, or by the fallback voice when that is unavailable."""
    try:
        return speak(spec, spec.engine_voice, settings, gate)
    except EngineUnavailable as error:
        if spec.engine_voice.fallback is None:
            raise
        if not spec.allow_fallback:
            raise EngineUnavailable(f"{error}; the manifest forbids the fallback voice for this clip "
                                    f"(fallback: false), so it was not rendered") from error
        return synthesize_fallback(spec, str(error), settings, gate)


def synthesize_fallback(spec: ClipSpec, reason: str, settings: Settings, gate: ConsentGate | None = None) -> Synthesis:
    """Re-make a take with the tier's fallback engine voice (also for QA: a take that failed its checks).

    Raises EngineUnavailable when the spec's voice has no fallback or it cannot be used either.
    """
    fallback = spec.engine_voice.fallback
    if fallback is None:
        raise EngineUnavailable(f"{label(spec.engine_voice)} has no fallback voice in the registry")
    try:
        synthesis = speak(spec, fallback, settings, gate)
    except EngineUnavailable as error:
        raise EngineUnavailable(f"{reason}; the fallback {label(fallback)} is unavailable too: {error}") from error
    synthesis.details[DETAIL] = {"from": label(spec.engine_voice), "to": label(fallback), "reason": reason}
    return synthesis


def used(synthesis: Synthesis) -> dict[str, Any] | None:
    """The fallback record of a take (from, to, reason), or None when the planned voice spoke."""
    record = synthesis.details.get(DETAIL)
    return record if isinstance(record, dict) else None
