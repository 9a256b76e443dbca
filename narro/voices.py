"""The voice registry: narro voice names mapped, per tier, to an engine and its own voice.

A course refers to voices by narro name (`narrator`); the registry decides which engine
speaks them, so a course never changes when an engine does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from narro.errors import ManifestError
from narro.yamlfile import load_located, validation_problems

Tier = Literal["fast", "quality"]
TIERS: tuple[Tier, ...] = ("fast", "quality")

REGISTRY_FILENAME = "voices.yaml"


class EngineVoice(BaseModel):
    """How one engine speaks a narro voice."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    engine: str
    """Engine name from the engine table (`piper`)."""
    model: str
    """The engine's own voice: for piper, a bundled voice id (`joe-us-medium`) or a path to an .onnx file."""
    length_scale: float = Field(default=1.0, gt=0.25, le=4.0)
    """Speaking pace multiplier: above 1 is slower."""
    rate: str = Field(default="+0%", pattern=r"^[+-]\d{1,3}%$")
    """edge voices: speaking rate relative to normal, `+10%` or `-20%`."""
    pitch: str = Field(default="+0Hz", pattern=r"^[+-]\d{1,3}Hz$")
    """edge voices: pitch shift, `+5Hz` or `-10Hz`."""
    volume: str = Field(default="+0%", pattern=r"^[+-]\d{1,3}%$")
    """edge voices: volume relative to normal (loudness is normalised afterwards anyway)."""
    fallback: EngineVoice | None = None
    """Engine voice to use when this one is unavailable or keeps failing (e.g. offline piper for edge)."""


class VoiceEntry(BaseModel):
    """A narro voice: a description and an engine voice for each tier it supports."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    description: str = ""
    """Shown by `narro voices` and the dashboard."""
    fast: EngineVoice | None = None
    """Engine voice for the fast tier."""
    quality: EngineVoice | None = None
    """Engine voice for the quality tier."""

    def for_tier(self, tier: Tier) -> EngineVoice | None:
        return self.fast if tier == "fast" else self.quality


class VoiceRegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    voices: dict[str, VoiceEntry]
    default: str = "narrator"
    """Voice used when neither a narration nor the course's defaults name one."""


# Used when no voices.yaml sits beside a manifest: the course still renders offline.
BUILTIN_REGISTRY = VoiceRegistryFile(
    voices={
        "narrator": VoiceEntry(
            description="Warm US English male voice (offline, piper joe-medium)",
            fast=EngineVoice(engine="piper", model="joe-us-medium"),
        )
    }
)


class VoiceRegistry:
    """The voices available to a manifest, and where they were defined."""

    def __init__(self, registry: VoiceRegistryFile, source: Path | None):
        self.registry = registry
        self.source = source

    @property
    def default_voice(self) -> str:
        return self.registry.default

    def names(self) -> list[str]:
        return sorted(self.registry.voices)

    def get(self, name: str) -> VoiceEntry | None:
        return self.registry.voices.get(name)

    def resolve(self, name: str, tier: Tier) -> EngineVoice:
        entry = self.registry.voices[name]
        engine_voice = entry.for_tier(tier)
        if engine_voice is None:
            raise KeyError(f"voice '{name}' has no {tier} tier")
        return engine_voice


def load_registry(path: Path) -> VoiceRegistry:
    """Load and validate a voices.yaml; every problem is reported with its line."""
    from narro.engines import ENGINES

    located = load_located(path, "voices")
    data: Any = located.data
    if not isinstance(data, dict):
        raise ManifestError([located.problem((), "expected a mapping with a 'voices' key")])
    try:
        registry = VoiceRegistryFile.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(validation_problems(located, exc, (), VoiceRegistryFile)) from None
    registry = _resolve_model_paths(registry, path.parent)
    problems = []
    for name, entry in registry.voices.items():
        for tier in TIERS:
            engine_voice = entry.for_tier(tier)
            if engine_voice and engine_voice.engine not in ENGINES:
                known = ", ".join(sorted(ENGINES))
                problems.append(
                    located.problem(("voices", name, tier, "engine"), f"unknown engine '{engine_voice.engine}'; known: {known}")
                )
    if registry.default not in registry.voices:
        problems.append(located.problem(("default",), f"default voice '{registry.default}' is not defined under voices"))
    if problems:
        raise ManifestError(problems)
    return VoiceRegistry(registry, path)


def _resolve_model_paths(registry: VoiceRegistryFile, folder: Path) -> VoiceRegistryFile:
    """A `model` naming a file beside voices.yaml means that file, wherever narro is run from."""
    voices = {}
    for name, entry in registry.voices.items():
        updates = {}
        for tier in TIERS:
            engine_voice = entry.for_tier(tier)
            if engine_voice and not Path(engine_voice.model).is_absolute() and (folder / engine_voice.model).is_file():
                updates[tier] = engine_voice.model_copy(update={"model": str((folder / engine_voice.model).resolve())})
        voices[name] = entry.model_copy(update=updates)
    return registry.model_copy(update={"voices": voices})


def registry_for(manifest_path: Path) -> VoiceRegistry:
    """The voices.yaml beside a manifest, or the built-in registry when there is none."""
    candidate = manifest_path.parent / REGISTRY_FILENAME
    if candidate.is_file():
        return load_registry(candidate)
    return VoiceRegistry(BUILTIN_REGISTRY, None)
