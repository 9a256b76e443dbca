"""Speech engines behind one protocol, named in one table.

An engine turns normalised text into mono float PCM. Each engine class describes itself
cheaply (`identity`, used in content keys, must not load a model) and loads its model only in
`load`, once per worker process: `engine_for` caches loaded engines.
"""

from __future__ import annotations

import importlib.metadata
import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from narro.errors import EngineUnavailable
from narro.voices import EngineVoice


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float
    end_s: float


@dataclass
class Synthesis:
    """What an engine produced for one clip."""

    samples: np.ndarray
    """Mono float32 PCM in [-1, 1]."""
    sample_rate: int
    engine: str
    """Engine identity that produced it (name and version)."""
    words: list[WordTiming] | None = None
    """Word timings, where the engine gives them."""
    details: dict[str, object] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


class Engine(Protocol):
    """A loaded engine voice, ready to synthesise. Must be safe to call from several threads."""

    def synthesize(self, text: str) -> Synthesis: ...


class EngineKind(Protocol):
    """An entry of the ENGINES table."""

    name: str

    @staticmethod
    def identity(voice: EngineVoice) -> dict[str, object]:
        """Everything about this engine and voice that shapes the audio; cheap, loads nothing."""
        ...

    @staticmethod
    def load(voice: EngineVoice) -> Engine: ...


ENTRY_POINT_GROUP = "narro.engines"


def _discover_engines() -> dict[str, EngineKind]:
    """Engines declared under the `narro.engines` entry point group; narro's own included."""
    return {point.name: point.load() for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


ENGINES: dict[str, EngineKind] = _discover_engines()

_loaded: dict[EngineVoice, Engine] = {}
# Re-entrant: an engine may wrap another and load it from inside its own load.
_loading = threading.RLock()


def engine_kind(name: str) -> EngineKind:
    try:
        return ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES)) or "none (is narro installed? pip install -e .)"
        raise EngineUnavailable(f"unknown engine '{name}'; known: {known}") from None


def engine_for(voice: EngineVoice) -> Engine:
    """The loaded engine for a voice; loads it on first use in this process, then reuses it."""
    engine = _loaded.get(voice)
    if engine is None:
        with _loading:
            engine = _loaded.get(voice)
            if engine is None:
                engine = engine_kind(voice.engine).load(voice)
                _loaded[voice] = engine
    return engine
