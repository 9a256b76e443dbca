"""Test doubles registered in the engine table the way an outside engine package would be."""

from __future__ import annotations

from narro.engines import ENGINES, EngineKind, Synthesis, engine_for
from narro.errors import SynthesisError
from narro.voices import EngineVoice

FAIL_MARKER = "unspeakable"


class BrokenOnMarkerKind(EngineKind):
    """Speaks with the real piper voice, but raises for any text containing FAIL_MARKER."""

    name = "broken-on-marker"

    @classmethod
    def identity(cls, voice: EngineVoice) -> dict[str, object]:
        return {"engine": "broken-on-marker", "model": voice.model}

    @classmethod
    def load(cls, voice: EngineVoice, settings: object) -> BrokenOnMarkerEngine:
        return BrokenOnMarkerEngine(voice, settings)


class BrokenOnMarkerEngine:
    def __init__(self, voice: EngineVoice, settings: object):
        self._piper = engine_for(EngineVoice(engine="piper", model=voice.model), settings)

    def synthesize(self, text: str) -> Synthesis:
        if FAIL_MARKER in text.lower():
            raise SynthesisError(f"engine refused the text (contains '{FAIL_MARKER}')")
        return self._piper.synthesize(text)


VOICES_WITH_BROKEN_ENGINE = """
default: narrator
voices:
  narrator:
    fast: {engine: broken-on-marker, model: joe-us-medium}
"""


def register(monkeypatch) -> None:  # noqa: ANN001 (pytest's MonkeyPatch)
    monkeypatch.setitem(ENGINES, BrokenOnMarkerKind.name, BrokenOnMarkerKind)
