"""The voice registry: narro voice names mapped, per tier, to an engine and its own voice.

A course refers to voices by narro name (`narrator`); the registry decides which engine
speaks them, so a course never changes when an engine does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from narro.errors import ManifestError, Problem
from narro.yamlfile import FieldPath, LocatedYaml, dotted, load_located, validation_problems

Tier = Literal["fast", "quality"]
TIERS: tuple[Tier, ...] = ("fast", "quality")

REGISTRY_FILENAME = "voices.yaml"


class EngineVoice(BaseModel):
    """How one engine speaks a narro voice: the engine, its own voice, and the engine's options.

    The options are flat keys beside `engine` and `model` (`length_scale: 1.1` for piper,
    `rate: "+10%"` for edge), kept as pydantic extras; the registry checks them against the
    engine's `Options` when it loads, and engines read them through `EngineKind.options(voice)`.
    """

    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)

    engine: str
    """Engine name from the engine table (`piper`, `edge`, or a plugin's; see `narro voices`)."""
    model: str
    """The engine's own voice: for piper, a bundled voice id (`joe-us-medium`) or a path to an .onnx file."""
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

    def __init__(self, registry: VoiceRegistryFile, source: Path | None,
                 unusable: dict[tuple[str, Tier], str] | None = None, located: LocatedYaml | None = None):
        self.registry = registry
        self.source = source
        self.unusable = unusable or {}
        """Why a voice's tier cannot be used here (its engine's plugin is broken), by (voice, tier)."""
        self.located = located
        """The voices.yaml as parsed, for the lines of its fields (None: the built-in registry)."""

    def model_problems(self, name: str, tier: Tier) -> list[Problem]:
        """What stops a voice's tier from being spoken on this machine: a model or file its engine cannot find.

        Checked for the voices a course uses (not at load, so a voice nobody uses costs nothing),
        through each engine voice's identity (fallbacks too), which finds its files without loading
        them; each problem points at the voice's `model` in voices.yaml.
        """
        from narro.engines import ENGINES
        from narro.errors import NarroError

        entry = self.get(name)
        voice = entry.for_tier(tier) if entry else None
        where: tuple[str, ...] = ("voices", name, tier)
        problems = []
        while voice is not None:
            kind = ENGINES.get(voice.engine)  # unknown or broken engines are reported elsewhere
            try:
                if kind is not None:
                    kind.identity(voice)
            except NarroError as error:
                field = where + (_option_named(voice, kind, str(error)),)
                if self.located is not None:
                    problems.append(self.located.problem(field, str(error)))
                else:
                    problems.append(Problem(self.source or Path("(built-in voices)"), None, dotted(field), str(error)))
            voice, where = voice.fallback, where + ("fallback",)
        return problems

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
    """Load and validate a voices.yaml; every problem is reported with its line.

    A voice whose engine plugin is broken is not a problem of the file: it is recorded in
    `unusable`, and only a course that uses that voice fails (narro.manifest).
    """
    located = load_located(path, "voices")
    data: Any = located.data
    if not isinstance(data, dict):
        raise ManifestError([located.problem((), "expected a mapping with a 'voices' key")])
    problems = _engine_problems(data, located)
    try:
        registry = VoiceRegistryFile.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(problems + validation_problems(located, exc, (), VoiceRegistryFile)) from None
    registry = _resolve_model_paths(registry, path.parent)
    if registry.default not in registry.voices:
        problems.append(located.problem(("default",), f"default voice '{registry.default}' is not defined under voices"))
    if problems:
        raise ManifestError(problems)
    return VoiceRegistry(registry, path, _unusable(registry), located)


def _written_engine_voices(data: dict[str, Any]) -> Iterator[tuple[FieldPath, dict[str, Any]]]:
    """Every engine voice as written (fallbacks included), with its field path, however wrong the rest is."""
    voices = data.get("voices")
    for name, entry in voices.items() if isinstance(voices, dict) else ():
        for tier in TIERS:
            where: FieldPath = ("voices", name, tier)
            written = entry.get(tier) if isinstance(entry, dict) else None
            while isinstance(written, dict):
                yield where, written
                written, where = written.get("fallback"), where + ("fallback",)


def _engine_problems(data: dict[str, Any], located: LocatedYaml) -> list[Problem]:
    """Unknown engines, and options their engine's `Options` rejects (unknown keys included).

    Checked on the YAML as written, so an option's problems are reported beside the others.
    """
    # Imported here, not at the top: narro.voices is the data model engine modules use as a type,
    # and the engine table is needed only to check a registry.
    from narro.engines import ENGINES

    problems = []
    for where, written in _written_engine_voices(data):
        engine = written.get("engine")
        kind = ENGINES.get(engine) if isinstance(engine, str) else None
        if kind is None:
            if isinstance(engine, str) and engine not in ENGINES.broken:  # a broken plugin stops only its courses
                known = ", ".join(sorted(ENGINES)) or "none (is narro installed? pip install -e .)"
                problems.append(located.problem(where + ("engine",), f"unknown engine '{engine}'; known: {known}"))
            continue
        try:
            kind.Options.model_validate({k: v for k, v in written.items() if k not in EngineVoice.model_fields})
        except ValidationError as exc:
            problems.extend(validation_problems(located, exc, where, _written_fields(kind.Options)))
    return problems


@functools.cache
def _written_fields(options: type[BaseModel]) -> type[BaseModel]:
    """A model with every key an engine voice may have: its own fields and its engine's options ('did you mean')."""
    fields: dict[str, Any] = {name: (Any, None) for name in EngineVoice.model_fields}
    return create_model(f"Written{options.__name__}", __base__=options, **fields)


def _unusable(registry: VoiceRegistryFile) -> dict[tuple[str, Tier], str]:
    """The voices' tiers whose engine (or fallback engine) is a broken plugin, with the plugin's error."""
    from narro.engines import ENGINES

    broken = ENGINES.broken
    found: dict[tuple[str, Tier], str] = {}
    for name, entry in registry.voices.items():
        for tier in TIERS:
            engine_voice = entry.for_tier(tier)
            while engine_voice is not None and (name, tier) not in found:
                if engine_voice.engine in broken:
                    found[name, tier] = f"engine '{engine_voice.engine}' cannot be used: {broken[engine_voice.engine]}"
                engine_voice = engine_voice.fallback
    return found


def _option_named(voice: EngineVoice, kind: Any, message: str) -> str:
    """The file option an engine's error is about (the one whose value it quotes), else `model`.

    An engine's identity() only raises; quoting the path is what every engine's message does.
    """
    named = [(len(value), name) for name in (kind.path_options if kind else ())
             if isinstance(value := getattr(voice, name, None), str) and value and value in message]
    return max(named)[1] if named else "model"


def _resolve_model_paths(registry: VoiceRegistryFile, folder: Path) -> VoiceRegistryFile:
    """A `model` (or an engine's path option) naming a file or folder beside voices.yaml means that one,
    wherever narro is run from."""
    from narro.engines import ENGINES

    def resolved(voice: EngineVoice) -> EngineVoice:
        kind = ENGINES.get(voice.engine)
        names = ("model", *(kind.path_options if kind else ()))
        updates: dict[str, object] = {}
        for name in names:
            value = getattr(voice, name, None)
            if isinstance(value, str) and not Path(value).is_absolute() and (folder / value).exists():
                updates[name] = str((folder / value).resolve())
        if voice.fallback is not None:
            updates["fallback"] = resolved(voice.fallback)
        return voice.model_copy(update=updates) if updates else voice

    voices = {}
    for name, entry in registry.voices.items():
        updates: dict[str, EngineVoice] = {
            tier: resolved(voice) for tier in TIERS if (voice := entry.for_tier(tier)) is not None}
        voices[name] = entry.model_copy(update=updates)
    return registry.model_copy(update={"voices": voices})


def registry_for(manifest_path: Path) -> VoiceRegistry:
    """The voices.yaml beside a manifest, or the built-in registry when there is none."""
    candidate = manifest_path.parent / REGISTRY_FILENAME
    if candidate.is_file():
        return load_registry(candidate)
    return VoiceRegistry(BUILTIN_REGISTRY, None, _unusable(BUILTIN_REGISTRY))
