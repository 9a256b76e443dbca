"""Cloned voices only with consent: the records, the rules, and the gate every clone synthesis passes.

A voice whose engine `clones_voice` (codec-lm: it speaks as whoever is heard in its reference
recording) has a consent record in `consent.yaml` beside `voices.yaml`, keyed by the narro voice
name (`narro voices add-clone` writes both; `narro voices revoke` marks a record revoked):

    consent:
      ada:
        id: consent-20260115-3f9a0c1d
        speaker: Ada Example
        collected_by: Jo Producer
        collected_at: 2026-01-15
        scope: [course:intro-speech, organisation:acme]
        expires: 2027-01-15
        references: [<sha256 of each recording it covers>]
        document_sha256: <sha256 of the signed consent form>
        revoked: {at: 2026-06-01T09:30:00Z, reason: withdrawn by the speaker}   # once revoked

A clone speaks only when every rule holds (`RULES`, checked in this order): its record exists;
its speaker is not a public figure (narro.figures); the record is not revoked; it has not
expired (it holds through its `expires` day, UTC); the course, or the course's organisation, is
in its scope; and every reference recording on disk hashes to one the record covers.

`clear` applies them at synthesis time; a refusal is a ConsentError naming the rule. It then
appends the synthesis to the course's audit trail (narro.audit) before the engine runs, and
`confirm` checks afterwards that the recording the engine was prompted with is one the record
covers. A run's `ConsentGate` does all three; narro.engines.fallback, the one place every
pipeline take's engine is called, hands each cloned voice's synthesis to it and refuses a clone
when there is no gate. `narro say` clears its line the same way (narro.cli_voices.say_gate).
`course_problems` and `spec_problems` report the same rules earlier, as FILE:LINE problems
(`narro validate`, and every render before it starts), because time passes between the two.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from narro.errors import ConsentError, ManifestError, Problem
from narro.figures import PublicFigures, public_figures
from narro.files import replace_file
from narro.yamlfile import FieldPath, LocatedYaml, load_located, validation_problems

if TYPE_CHECKING:
    from narro.audit import AuditTrail
    from narro.engines.base import Synthesis
    from narro.manifest import Course
    from narro.plan import ClipSpec
    from narro.voices import EngineVoice

CONSENT_FILENAME = "consent.yaml"
RULES = ("record", "public-figure", "revoked", "expired", "scope", "reference")
SHA256 = r"^[0-9a-f]{64}$"
SCOPE = r"^(course|organisation):[a-z0-9]+(?:-[a-z0-9]+)*$"
HEADER = ("# Consent records of cloned voices, one per narro voice (narro/consent.py).\n"
          "# Written by `narro voices add-clone` and `narro voices revoke`; keep it beside voices.yaml.\n")


class Revocation(BaseModel):
    """When and why a consent was withdrawn; a revoked voice never speaks again."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    at: datetime
    """When it was revoked (UTC)."""
    reason: str = Field(min_length=1)
    """Why, in a few words (who asked, which request)."""


class ConsentRecord(BaseModel):
    """A speaker's consent to a cloned voice."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    id: str = Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
    """Unique id; every clip made with the voice, and every audit line, names it."""
    speaker: str = Field(min_length=1)
    """Who is heard in the reference recordings (checked against the public figures list)."""
    collected_by: str = Field(min_length=1)
    """Who collected the consent."""
    collected_at: date
    """When it was given."""
    scope: list[str] = Field(min_length=1)
    """Where the voice may speak: `course:SLUG` and `organisation:SLUG` (a manifest's `organisation`)."""
    expires: date
    """Last day the voice may speak (UTC)."""
    references: list[str] = Field(min_length=1)
    """sha256 of each reference recording the consent covers."""
    document_sha256: str = Field(pattern=SHA256)
    """sha256 of the signed consent document."""
    revoked: Revocation | None = None
    """Set by `narro voices revoke`."""

    @model_validator(mode="after")
    def _consistent(self) -> ConsentRecord:
        import re

        for item in self.scope:
            if not re.match(SCOPE, item):
                raise ValueError(f"scope '{item}' is not course:SLUG or organisation:SLUG")
        for digest in self.references:
            if not re.match(SHA256, digest):
                raise ValueError(f"reference '{digest}' is not a sha256 (64 lowercase hex digits)")
        if self.expires < self.collected_at:
            raise ValueError(f"expires ({self.expires}) is before collected_at ({self.collected_at})")
        return self

    def covers(self, course: str, organisation: str | None) -> bool:
        return f"course:{course}" in self.scope or (organisation is not None and
                                                     f"organisation:{organisation}" in self.scope)


class ConsentFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    consent: dict[str, ConsentRecord] = {}
    """Records by narro voice name."""


@dataclass(frozen=True)
class ConsentRegistry:
    """The records of one consent.yaml (none when the file does not exist)."""

    path: Path
    records: dict[str, ConsentRecord]
    located: LocatedYaml | None = None

    def line(self, where: FieldPath) -> int | None:
        return self.located.line_of(where) if self.located else None


def consent_path(voices_file: Path | str) -> Path:
    """The consent.yaml that governs the clones of a voices.yaml."""
    return Path(voices_file).parent / CONSENT_FILENAME


def load_consent(path: Path) -> ConsentRegistry:
    """The records of `path`; ManifestError listing every problem (FILE:LINE) when it is invalid."""
    if not path.exists():
        return ConsentRegistry(path, {})
    located = load_located(path, "consent")
    data: Any = located.data if located.data is not None else {}
    if not isinstance(data, dict):
        raise ManifestError([located.problem((), "expected a mapping with a 'consent' key")])
    try:
        parsed = ConsentFile.model_validate(data)
    except ValidationError as error:
        raise ManifestError(validation_problems(located, error, (), ConsentFile)) from None
    seen: dict[str, str] = {}
    problems = []
    for voice, record in parsed.consent.items():
        if record.id in seen:
            problems.append(located.problem(("consent", voice, "id"),
                                            f"id '{record.id}' is also the id of voice '{seen[record.id]}'"))
        seen.setdefault(record.id, voice)
    if problems:
        raise ManifestError(problems)
    return ConsentRegistry(path, dict(parsed.consent), located)


def file_sha256(path: Path) -> str:
    """Hashed afresh every time: a recording swapped in place must not hide behind a cached digest."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Refusal:
    """One rule a clone breaks: which, where in consent.yaml (or voices.yaml), and why."""

    rule: str
    field: FieldPath
    message: str

    def line(self, voice: str) -> str:
        return f"consent refused for voice '{voice}' (rule: {self.rule}): {self.message}"


def refusals(voice: str, record: ConsentRecord | None, registry: Path, *, course: str, organisation: str | None,
             references: Iterable[Path], today: date, figures: PublicFigures) -> list[Refusal]:
    """Every rule the voice breaks here and now, in RULES order; empty when it may speak."""
    if record is None:
        return [Refusal("record", ("voices", voice), f"{registry} has no consent record for it; record the "
                        "speaker's consent with `narro voices add-clone`")]
    where: FieldPath = ("consent", voice)
    found = []
    figure = figures.match(record.speaker)
    if figure is not None:
        found.append(Refusal("public-figure", where + ("speaker",),
                             f"speaker '{record.speaker}' matches the public figure '{figure.name}' ({figure.source}); "
                             "narro never clones a public figure, whatever the record says"))
    if record.revoked is not None:
        revoked = record.revoked
        found.append(Refusal("revoked", where + ("revoked",),
                             f"consent {record.id} was revoked on {revoked.at:%Y-%m-%d}: {revoked.reason}"))
    if today > record.expires:
        found.append(Refusal("expired", where + ("expires",),
                             f"consent {record.id} expired on {record.expires}; collect the speaker's consent again"))
    if not record.covers(course, organisation):
        org = f" (organisation '{organisation}')" if organisation else ""
        found.append(Refusal("scope", where + ("scope",),
                             f"course '{course}'{org} is not in the scope of consent {record.id}: "
                             f"{', '.join(record.scope)}"))
    for path in references:
        try:
            digest = file_sha256(path)
        except OSError as error:
            found.append(Refusal("reference", where + ("references",),
                                 f"cannot read the reference {path}: {error.strerror or error}"))
            continue
        if digest not in record.references:
            found.append(Refusal("reference", where + ("references",),
                                 f"the reference {path} (sha256 {digest[:12]}...) is not a recording consent "
                                 f"{record.id} covers: a swapped recording is refused"))
    return found


def today() -> date:
    return datetime.now(UTC).date()


def clone_voices(voice: EngineVoice) -> list[EngineVoice]:
    """The engine voice and its fallbacks whose engines clone a speaker."""
    from narro.engines import ENGINES

    found = []
    current: EngineVoice | None = voice
    while current is not None:
        kind = ENGINES.get(current.engine)
        if kind is not None and kind.clones_voice:
            found.append(current)
        current = current.fallback
    return found


def _references(voices: Iterable[EngineVoice]) -> list[Path]:
    from narro.engines import engine_kind

    return list(dict.fromkeys(path for v in voices for path in engine_kind(v.engine).references(v)))


# --------------------------------------------------------------------------- before a render: located problems


def problems_for(uses: Iterable[tuple[str, EngineVoice]], voices_file: Path | None, course: str,
                 organisation: str | None, figures_file: Path | None) -> list[Problem]:
    """The rules broken by the (narro voice name, engine voice) pairs a course speaks with, located.

    Each voice is reported once per rule; a voice that clones nothing is never a problem.
    """
    cloned: dict[str, list[EngineVoice]] = {}
    for name, voice in uses:
        for clone in clone_voices(voice):
            if clone not in cloned.setdefault(name, []):
                cloned[name].append(clone)
    if not cloned:
        return []
    if voices_file is None:  # the built-in registry clones no one; a registry object built in code might
        return [Problem(Path("<built-in registry>"), None, f"voices.{name}", "a cloned voice needs a voices.yaml "
                        "with a consent.yaml beside it") for name in cloned]
    path = consent_path(voices_file)
    registry = load_consent(path)  # ManifestError: every problem of the file
    figures = public_figures(figures_file)
    voices_located: LocatedYaml | None = None
    problems = []
    for name, engine_voices in cloned.items():
        for refusal in dict.fromkeys(refusals(name, registry.records.get(name), path, course=course,
                                              organisation=organisation, references=_references(engine_voices),
                                              today=today(), figures=figures)):
            if refusal.rule == "record":
                voices_located = voices_located or load_located(voices_file, "voices")
                problems.append(voices_located.problem(refusal.field, refusal.line(name)))
            else:
                problems.append(Problem(path, registry.line(refusal.field), ".".join(map(str, refusal.field)),
                                        refusal.line(name)))
    return problems


def course_problems(course: Course, figures_file: Path | None) -> list[Problem]:
    """The consent rules the course's narrations break as the manifest has them (`narro validate`)."""
    uses = [(n.voice, course.voices.resolve(n.voice, n.tier)) for n in course.narrations]
    return problems_for(uses, course.voices.source, course.slug, course.organisation, figures_file)


def spec_problems(specs: Iterable[ClipSpec], figures_file: Path | None) -> list[Problem]:
    """The same for the clip specs a render is about to make (after any voice override)."""
    specs = list(specs)
    if not specs:
        return []
    first = specs[0]
    voices_file = Path(first.voices_file) if first.voices_file else None
    return problems_for([(s.voice, s.engine_voice) for s in specs], voices_file, first.course, first.organisation,
                        figures_file)


# --------------------------------------------------------------------------- at synthesis time: the gate


@dataclass(frozen=True)
class Clearance:
    """A clone synthesis that passed every rule, and its audit entry."""

    voice: str
    record: ConsentRecord
    registry: Path
    references: tuple[str, ...]
    """sha256 of the recordings on disk when it was cleared."""
    audit: str
    """Name of its audit object, under `{course}/audit/` in the store."""

    def sidecar(self) -> dict[str, Any]:
        """What the clip's sidecar (and its catalogue attempt) records about its consent."""
        return {"id": self.record.id, "voice": self.voice, "speaker": self.record.speaker,
                "expires": self.record.expires.isoformat(), "registry": str(self.registry), "audit": self.audit}


def clear(spec: ClipSpec, voice: EngineVoice, settings: Any, trail: AuditTrail | None) -> Clearance | None:
    """None when `voice` clones no one; else apply every rule now and audit the synthesis, or raise ConsentError.

    Nothing the caller passes can relax a rule: the record is read from disk now, the references
    are hashed now, and without an audit trail a clone does not speak.
    """
    from narro.engines import engine_kind

    if not engine_kind(voice.engine).clones_voice:
        return None
    if spec.voices_file is None:
        raise ConsentError(f"consent refused for voice '{spec.voice}' (rule: record): it clones a speaker but "
                           "comes from no voices.yaml, so it has no consent record")
    path = consent_path(spec.voices_file)
    try:
        registry = load_consent(path)
    except ManifestError as error:
        raise ConsentError(f"consent refused for voice '{spec.voice}' (rule: record): {error.problems[0]}") from None
    record = registry.records.get(spec.voice)
    references = engine_kind(voice.engine).references(voice)
    found = refusals(spec.voice, record, path, course=spec.course, organisation=spec.organisation,
                     references=references, today=today(), figures=public_figures(settings.consent.public_figures))
    if found:
        raise ConsentError(found[0].line(spec.voice))
    assert record is not None
    if trail is None:
        raise ConsentError(f"consent refused for voice '{spec.voice}' (rule: record): a cloned voice speaks only "
                           "where its synthesis is audited (a course render)")
    digests = tuple(file_sha256(path) for path in references)
    name = trail.append(spec, voice, record, digests)
    return Clearance(spec.voice, record, path, digests, name)


def confirm(clearance: Clearance, synthesis: Synthesis) -> Synthesis:
    """The synthesis, once the recording its engine was prompted with is one the record covers (ConsentError if not).

    Closes the gap between hashing the file and the engine reading it (or a worker still holding
    an older recording in memory).
    """
    used = synthesis.details.get("reference_sha256")
    if not isinstance(used, str) or used not in clearance.record.references:
        shown = f"{used[:12]}..." if isinstance(used, str) else "not reported by the engine"
        raise ConsentError(f"consent refused for voice '{clearance.voice}' (rule: reference): the engine was prompted "
                           f"with a recording consent {clearance.record.id} does not cover ({shown}); "
                           "the take is discarded")
    synthesis.details["consent"] = clearance.sidecar()
    return synthesis


class ConsentGate:
    """What every clone synthesis of a run passes: narro.engines.fallback hands it the synthesis to run."""

    def __init__(self, settings: Any, trail: AuditTrail):
        self.settings = settings
        self.trail = trail

    def speak(self, spec: ClipSpec, voice: EngineVoice, synthesize: Callable[[], Synthesis]) -> Synthesis:
        """Clear `voice` for `spec` (ConsentError if a rule is broken), audit it, synthesise, then `confirm`."""
        clearance = clear(spec, voice, self.settings, self.trail)
        if clearance is None:  # the engine clones no one
            return synthesize()
        return confirm(clearance, synthesize())


def synthesis_content_key(spec: ClipSpec, voice: EngineVoice) -> str:
    """The content key a take by `voice` is published under: the spec's, or its fallback voice's own."""
    from narro.plan import content_key

    if voice == spec.engine_voice:
        return spec.content_key
    actual = replace(spec, engine_voice=voice, content_key="")
    return content_key(actual)


# --------------------------------------------------------------------------- a published clip's consent now


@functools.lru_cache(maxsize=32)
def _registry_at(path: str, mtime_ns: int) -> ConsentRegistry:
    return load_consent(Path(path))


def standing(recorded: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A clip's recorded consent (its sidecar's `consent`) as it stands now, for the dashboard.

    Its id, voice and expiry, whether it has expired, and `revoked` ("DATE: reason") when its
    record has been revoked, or replaced by another, since the clip was made. None for a clip
    that names no consent.
    """
    if not recorded or not recorded.get("id"):
        return None
    revoked = None
    registry = recorded.get("registry")
    try:
        path = Path(str(registry))
        record = _registry_at(str(path), path.stat().st_mtime_ns).records.get(str(recorded.get("voice")))
    except (OSError, ManifestError):
        record = None
        revoked = f"its consent record cannot be read ({registry})"
    if record is not None and record.id != recorded["id"]:
        revoked = f"its consent record was replaced by {record.id}"
    elif record is not None and record.revoked is not None:
        revoked = f"{record.revoked.at:%Y-%m-%d}: {record.revoked.reason}"
    elif record is None and revoked is None:
        revoked = "its consent record was removed"
    expires = str(recorded.get("expires", ""))
    return {"id": recorded["id"], "voice": recorded.get("voice"), "speaker": recorded.get("speaker"),
            "expires": expires, "expired": bool(expires) and expires < today().isoformat(), "revoked": revoked}


# --------------------------------------------------------------------------- writing the registry


def new_id(collected_at: date) -> str:
    return f"consent-{collected_at:%Y%m%d}-{secrets.token_hex(4)}"


def write_registry(path: Path, records: dict[str, ConsentRecord]) -> None:
    """Replace consent.yaml whole (temporary file, then rename): a render reads the old file or the new one."""
    data = {"consent": {voice: record.model_dump(exclude_none=True) for voice, record in records.items()}}
    text = HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
    replace_file(path, text, mode=0o600)  # names people and their consent documents: the owner's only


def revoke(path: Path, voice: str, reason: str, at: datetime | None = None) -> ConsentRecord:
    """Mark the voice's record revoked (ConsentError if it has none or is revoked already); returns it."""
    registry = load_consent(path)
    record = registry.records.get(voice)
    if record is None:
        known = ", ".join(sorted(registry.records)) or "none"
        raise ConsentError(f"{path} has no consent record for voice '{voice}' (records: {known})")
    if record.revoked is not None:
        raise ConsentError(f"consent {record.id} of voice '{voice}' was already revoked on "
                           f"{record.revoked.at:%Y-%m-%d}: {record.revoked.reason}")
    revoked = record.model_copy(update={"revoked": Revocation(at=at or datetime.now(UTC).replace(microsecond=0),
                                                              reason=reason)})
    write_registry(path, {**registry.records, voice: revoked})
    return revoked
