"""Course manifests: YAML validated once, at the edge, into typed objects.

Every problem is collected (not just the first) and located as FILE:LINE: field: message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from narro import markup
from narro.errors import ManifestError, Problem
from narro.lexicon import Lexicon, lexicon_terms, load_shared, merged, parse
from narro.settings import QaSettings
from narro.text import control_characters, normalise, strip_markdown, without_code
from narro.voices import Tier, VoiceRegistry, registry_for
from narro.yamlfile import FieldPath, LocatedYaml, dotted, load_located, read_text, validation_problems

SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
# About 20 minutes of speech: longer than any lesson clip should be, short enough to render.
MAX_TEXT_CHARS = 20_000


class Defaults(BaseModel):
    """Settings every narration inherits unless it names its own."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    voice: str | None = None
    """Voice from the registry; the registry's default voice when absent."""
    tier: Tier = "fast"
    """`fast` (online voice with offline fallback) or `quality` (codec language model)."""
    fallback: bool = True
    """Allow the voice's fallback engine (e.g. offline piper for edge) when its engine is unavailable."""
    qa: QaSettings | None = None
    """Quality gate thresholds for every narration, over the run's `qa` settings (e.g. `max_wer: 0.4`)."""


class NarrationEntry(BaseModel):
    """One narration as written in the manifest."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    id: str = Field(pattern=SLUG, max_length=80)
    """Slug, unique within the course; names the output files."""
    title: str = ""
    """Lesson title, written into the MP3's ID3 title."""
    text: str | None = None
    """The words to speak. Exactly one of `text` and `script`."""
    script: str | None = None
    """Path to a markdown or text file, relative to the manifest; markdown is stripped to speech."""
    voice: str | None = None
    """Voice from the registry; overrides the course default."""
    tier: Tier | None = None
    """`fast` or `quality`; overrides the course default."""
    fallback: bool | None = None
    """`false` makes the clip fail rather than use the fallback voice; overrides the course default."""
    qa: QaSettings | None = None
    """This narration's quality gate thresholds (e.g. a glossary-heavy one: `max_wer: 0.45`), over `defaults.qa`."""
    pace: float | None = Field(default=None, ge=0.5, le=2.0)
    """Speaking speed for this narration, over the voice's own pace: 1 normal, 0.9 a tenth slower, 1.1 faster."""


class ManifestFile(BaseModel):
    """The whole manifest as written."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    course: str = Field(pattern=SLUG, max_length=80)
    """Course slug; the folder the clips land in."""
    title: str = ""
    """Course title, written into each MP3's ID3 album."""
    organisation: str | None = Field(None, pattern=SLUG, max_length=80)
    """Slug of the organisation the course belongs to; a cloned voice's consent may name it in its scope."""
    defaults: Defaults = Defaults()
    """Voice and tier for narrations that do not name their own."""
    narrations: list[NarrationEntry] = Field(min_length=1)
    """The clips to render, in course order."""
    lexicon: dict[str, Any] = {}
    """How to say terms: `term: respelling` or `term: {say: ..., ipa: ..., ignore_case: ...}` (narro.lexicon);
    over the entries of a lexicon.yaml beside the manifest."""


@dataclass(frozen=True)
class Narration:
    """A validated narration with its text resolved and normalised."""

    id: str
    title: str
    text: str
    """Normalised speakable text."""
    voice: str
    tier: Tier
    line: int | None
    source: str
    """Where the words came from: `inline` or the script's path relative to the manifest."""
    allow_fallback: bool = True
    """Whether the fallback engine voice may speak this narration when its own engine is unavailable."""
    written: str = ""
    """The words as the author wrote them (markdown stripped, markup kept): what the lexicon matches, and,
    without the markup (narro.text.Speech.written), what captions show."""
    qa: tuple[tuple[str, Any], ...] = ()
    """Quality gate thresholds the manifest sets for it (`defaults.qa`, then its own `qa`), over the settings'."""
    pace: float | None = None
    """Speaking speed over the voice's own pace (1 normal, below 1 slower); None: the voice's."""


@dataclass(frozen=True)
class Course:
    slug: str
    title: str
    manifest_path: Path
    manifest_sha256: str
    narrations: tuple[Narration, ...]
    voices: VoiceRegistry
    lexicon: Lexicon = Lexicon()
    organisation: str | None = None

    def narration(self, narration_id: str) -> Narration:
        for narration in self.narrations:
            if narration.id == narration_id:
                return narration
        raise KeyError(narration_id)


def load_course(path: Path | str) -> Course:
    """Load, validate and resolve a manifest, or raise ManifestError listing every problem."""
    path = Path(path)
    located = load_located(path, "manifest")
    if not isinstance(located.data, dict):
        empty = "the file is empty; " if located.data is None else ""
        raise ManifestError([located.problem((), f"{empty}expected a mapping with 'course' and 'narrations' keys")])
    problems: list[Problem] = []
    manifest: ManifestFile | None = None
    try:
        manifest = ManifestFile.model_validate(located.data)
        defaults: Defaults | None = manifest.defaults
        entries = list(enumerate(manifest.narrations))
    except ValidationError as exc:
        problems.extend(validation_problems(located, exc, (), ManifestFile))
        # Go on checking the parts that are valid on their own, so that one run reports everything.
        defaults, entries = _valid_parts(located.data)
    try:
        voices: VoiceRegistry | None = registry_for(path)
    except ManifestError as exc:
        problems.extend(exc.problems)
        voices = None
    shared, shared_problems = load_shared(path.parent)
    own = located.data.get("lexicon")
    own_entries, own_problems = parse(own if isinstance(own, dict) else None, located, ("lexicon",))
    problems += shared_problems + own_problems
    lexicon = merged(shared, own_entries)

    narrations = []
    seen: dict[str, int] = {}
    used: dict[tuple[str, Tier], None] = {}
    for index, entry in entries:
        where = ("narrations", index)
        if entry.id in seen:
            first = ("narrations", seen[entry.id], "id")
            problems.append(
                located.problem(
                    where + ("id",),
                    f"duplicate id '{entry.id}' (first used at {dotted(first[:2])}, line {located.line_of(first)})",
                )
            )
        seen.setdefault(entry.id, index)
        written, source = _resolve_text(entry, located, where, problems)
        if voices is None or defaults is None:
            continue
        voice = entry.voice or defaults.voice or voices.default_voice
        tier = entry.tier or defaults.tier
        voice_problems = _check_voice(voices, voice, tier, located, *_voice_fields(entry, where, located))
        problems.extend(voice_problems)
        if not voice_problems:
            used[voice, tier] = None
            if entry.pace is not None:
                problems.extend(_check_pace(voices, voice, tier, located, where + ("pace",)))
        if written is not None and lexicon and not voice_problems:
            try:  # an IPA-only entry the narration's engines cannot say is an error at the entry
                lexicon_terms(lexicon, written, voice, voices.resolve(voice, tier))
            except ManifestError as exc:
                problems.extend(exc.problems)
        if written is not None:
            narrations.append(
                Narration(entry.id, entry.title, normalise(written), voice, tier, located.line_of(where), source,
                          allow_fallback=defaults.fallback if entry.fallback is None else entry.fallback,
                          written=written, qa=tuple({**_set_fields(defaults.qa), **_set_fields(entry.qa)}.items()),
                          pace=entry.pace)
            )
    if voices is not None:
        for voice, tier in used:  # each voice the course uses can be spoken here
            problems.extend(voices.model_problems(voice, tier))
    if problems:
        # In file order, and once each: defaults shared by many narrations would repeat theirs.
        raise ManifestError(sorted(dict.fromkeys(problems), key=lambda p: (str(p.file), p.line or 0)))
    assert manifest is not None and voices is not None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Course(manifest.course, manifest.title, path, digest, tuple(narrations), voices, lexicon,
                  manifest.organisation)


def _set_fields(model: BaseModel | None) -> dict[str, Any]:
    """The fields written in the manifest (not their defaults): only those override the settings."""
    return {name: getattr(model, name) for name in sorted(model.model_fields_set)} if model is not None else {}


def _valid_parts(data: dict[str, Any]) -> tuple[Defaults | None, list[tuple[int, NarrationEntry]]]:
    """The defaults (None if invalid) and the narrations that validate on their own, by index."""
    try:
        defaults: Defaults | None = Defaults.model_validate(data.get("defaults", {}))
    except ValidationError:
        defaults = None
    raw = data.get("narrations")
    entries = []
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            entries.append((index, NarrationEntry.model_validate(item)))
        except ValidationError:
            pass
    return defaults, entries


def _voice_fields(entry: NarrationEntry, where: FieldPath, located: LocatedYaml) -> tuple[FieldPath, FieldPath]:
    """Where to point for an unknown voice, and for a voice that lacks the tier asked for."""
    voice_field = where + ("voice",) if entry.voice else ("defaults", "voice")
    if entry.tier:
        return voice_field, where + ("tier",)
    if entry.voice:
        return voice_field, voice_field
    for written in (("defaults", "tier"), ("defaults", "voice")):
        if written in located.lines:
            return voice_field, written
    return voice_field, where


def _resolve_text(
    entry: NarrationEntry, located: LocatedYaml, where: tuple[Any, ...], problems: list[Problem]
) -> tuple[str | None, str]:
    """The narration's words as written (markdown stripped) and where they came from; None when invalid."""
    if (entry.text is None) == (entry.script is None):
        problems.append(located.problem(where, "give exactly one of 'text' and 'script'"))
        return None, ""
    if entry.text is not None:
        raw, source, field = entry.text, "inline", where + ("text",)
        markup_problems = _inline_markup_problems(raw, located, field)
    else:
        field = where + ("script",)
        script_path = _script_path(entry.script or "", located, field, problems)
        if script_path is None:
            return None, ""
        try:
            written = read_text(script_path, "script")
            raw = strip_markdown(written)
        except ManifestError as exc:
            problems.extend(
                located.problem(field, f"{p.message} ({p.file}{':' + str(p.line) if p.line else ''})") for p in exc.problems
            )
            return None, ""
        source = entry.script or ""
        shown = located.file.parent / source  # the script's path as the author wrote it
        prose = without_code(written)
        markup_problems = [Problem(shown, markup.line_of(prose, p.offset), dotted(field), p.message)
                           for p in markup.parse(prose)[1]]
    if markup_problems:
        problems.extend(markup_problems)
        return None, ""
    bad = control_characters(raw)
    if bad:
        problems.append(located.problem(field, f"contains control characters {', '.join(bad)}; remove them"))
        return None, ""
    if len(raw) > MAX_TEXT_CHARS:
        problems.append(
            located.problem(
                field, f"text is {len(raw):,} characters; the limit is {MAX_TEXT_CHARS:,}: split it into several narrations"
            )
        )
        return None, ""
    if not any(ch.isalnum() for ch in normalise(raw)):
        problems.append(located.problem(field, "is empty: there is nothing to speak"))
        return None, ""
    return raw, source


def _inline_markup_problems(text: str, located: LocatedYaml, field: FieldPath) -> list[Problem]:
    """Markup problems in a `text:` value, at the manifest line where each tag is written.

    YAML folds and unescapes a value, so its offsets are not the file's: each tag is found in the
    file instead, as its n-th occurrence from the field's line on.
    """
    found = markup.parse(text)[1]
    if not found:
        return []
    lines = located.file.read_text(encoding="utf-8-sig").splitlines()
    first = located.line_of(field) or 1
    below = "\n".join(lines[first - 1:])
    out = []
    for problem in found:
        tag = text[problem.offset:].split("]", 1)[0] + "]"
        nth = text.count(tag, 0, problem.offset)
        at = -1
        for _ in range(nth + 1):
            at = below.find(tag, at + 1)
        line = first + below.count("\n", 0, at) if at >= 0 else first
        out.append(Problem(located.file, line, dotted(field), problem.message))
    return out


def _check_pace(voices: VoiceRegistry, voice: str, tier: Tier, located: LocatedYaml, field: FieldPath) -> list[Problem]:
    """A narration's `pace:` needs an engine that can change its speed."""
    from narro.engines import engine_kind

    engine = voices.resolve(voice, tier).engine
    if engine_kind(engine).pace_control:
        return []
    return [located.problem(field, f"voice '{voice}' ({tier} tier) speaks with engine '{engine}', which has no pace "
                                   "control; remove `pace:` or choose a piper or edge voice")]


def _script_path(script: str, located: LocatedYaml, field: tuple[Any, ...], problems: list[Problem]) -> Path | None:
    if not script.strip():
        problems.append(located.problem(field, "is empty: give a path relative to the manifest"))
        return None
    base = located.file.parent.resolve()
    candidate = (base / script).resolve()
    if Path(script).is_absolute() or not candidate.is_relative_to(base):
        problems.append(located.problem(field, f"'{script}' is outside the manifest's folder; keep scripts beside it"))
        return None
    if candidate.is_dir():
        problems.append(located.problem(field, f"'{script}' is a directory; give the path of a script file"))
        return None
    if not candidate.is_file():
        problems.append(located.problem(field, f"'{script}' does not exist (looked for {candidate})"))
        return None
    return candidate


def _check_voice(
    voices: VoiceRegistry, voice: str, tier: Tier, located: LocatedYaml, voice_field: FieldPath, tier_field: FieldPath
) -> list[Problem]:
    entry = voices.get(voice)
    registry = voices.source or "the built-in voice registry"
    if entry is None:
        return [located.problem(voice_field, f"unknown voice '{voice}'; {registry} defines: {', '.join(voices.names())}")]
    if entry.for_tier(tier) is None:
        return [located.problem(tier_field, f"voice '{voice}' has no {tier}-tier engine in {registry}")]
    if (voice, tier) in voices.unusable:
        return [located.problem(voice_field, f"voice '{voice}' ({tier} tier): {voices.unusable[voice, tier]}")]
    return []
