"""What an engine is: the one seam every speech engine plugs into, narro's own included.

This module imports nothing from narro, so an engine package (or narro's own engines) can
import it at its top without pulling in the half-built `narro.engines` package.

An engine is an `EngineKind` subclass registered under the `narro.engines` entry point group:

- `name`: the value of `engine:` in voices.yaml.
- `Options`: a pydantic model of the engine's own voice options, written as flat keys beside
  `engine` and `model` in voices.yaml and validated (with FILE:LINE) when the registry loads.
- `identity(voice)`: everything about the engine and voice that shapes the audio, cheap (loads
  no model); it goes into every content key.
- `load(voice, settings)`: the ready engine, once per worker process (narro caches it).
- `voices(settings)`: the engine's own voice names, for `narro voices`.
- `variants(voice)`: re-takes that make sense when a take fails the quality gate.
- `pace_control`, `paced(voice, speed)`: speaking speed, for a narration's `pace:` and markup spans.
- `probe(voice, settings)`: whether an online voice answers now (offline engines: always).
- `rate_limit`, `resources`: how the flow schedules the engine's clips.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict


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

    sample_rate: int

    def synthesize(self, text: str) -> Synthesis: ...


class StreamingEngine(Engine, Protocol):
    """An engine that can hand out audio while it is still generating (`narro say`)."""

    def stream(self, text: str) -> Iterator[np.ndarray]:
        """Mono float32 chunks at `sample_rate`, in order; their concatenation is the utterance."""
        ...


class NoOptions(BaseModel):
    """An engine without voice options of its own: any extra key in voices.yaml is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass(frozen=True)
class Variant:
    """A re-take: what differs (shown in the sidecar and catalogue) and the voice that makes it."""

    label: str
    """E.g. 'pace x1.04', 'seed 8'."""
    voice: Any
    """The engine voice (narro.voices.EngineVoice) with the varied options."""


class EngineKind:
    """Base of every engine: subclass it, set `name` and `Options`, implement `identity` and `load`.

    `voice` arguments are `narro.voices.EngineVoice` objects (engine, model, fallback and the
    engine's own options); `options(voice)` gives those options validated as `Options`.
    `settings` is the run's `narro.settings.Settings`.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    rate_limit: ClassVar[str | None] = None
    """Name of a concurrency limit shared by every worker (requests to an online service)."""
    resources: ClassVar[Mapping[str, float]] = {}
    """What a worker must offer to run this engine's clips, e.g. {"GPU": 1}."""
    path_options: ClassVar[tuple[str, ...]] = ()
    """Options that name files or folders; relative ones are resolved against voices.yaml, like `model`."""
    phonemes: ClassVar[bool] = False
    """Takes IPA phonemes inline as `[[ ... ]]` (a lexicon's `ipa:` entries); otherwise respellings only."""
    pace_control: ClassVar[bool] = False
    """Speaks at another speed: `paced` gives a voice at a narration's `pace:`, and the loaded engine's
    `synthesize(text, speed=...)` says one part of a script faster or slower (markup's [slow]/[fast] spans)."""
    clones_voice: ClassVar[bool] = False
    """Speaks as whoever is heard in a reference recording (`references`): every synthesis is checked against
    the voice's consent record and audited (narro.consent), and its Synthesis says which recording prompted it
    in `details["reference_sha256"]`."""

    @classmethod
    def options(cls, voice: Any) -> Any:
        """The voice's engine options, validated (defaults filled in)."""
        return cls.Options.model_validate(dict(voice.model_extra or {}))

    @classmethod
    def paced(cls, voice: Any, speed: float) -> Any:
        """The voice at `speed` times normal speed, in place of its own pace (engines with `pace_control`)."""
        return voice

    @classmethod
    def identity(cls, voice: Any) -> dict[str, object]:
        """Everything about this engine and voice that shapes the audio; cheap, loads nothing."""
        raise NotImplementedError

    @classmethod
    def load(cls, voice: Any, settings: Any) -> Engine:
        raise NotImplementedError

    @classmethod
    def voices(cls, settings: Any) -> list[dict[str, str]]:
        """The engine's own voices (name, locale, gender), for `narro voices`; may raise EngineUnavailable."""
        return []

    @classmethod
    def references(cls, voice: Any) -> list[Path]:
        """The recordings of a person a cloning engine's voice is prompted with; none for other engines."""
        return []

    @classmethod
    def variants(cls, voice: Any) -> list[Variant]:
        """Re-takes for a take that failed the quality gate, best first; none by default."""
        return []

    @classmethod
    def probe(cls, voice: Any, settings: Any) -> None:
        """Raise EngineUnavailable if the voice cannot speak now (an online service that does not answer).

        A render asks once, before rendering, whether clips its fallback voice spoke can have
        their own voice back. Offline engines are always available: the default does nothing.
        """
