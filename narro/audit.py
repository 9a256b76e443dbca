"""The audit trail of cloned voices: one write-once object per clone synthesis, under `{course}/audit/`.

Each object holds one JSON line: the time, course, clip, narro voice, engine, consent record id
and speaker, the content key the take is published under, the run id and the sha256 of the
recordings that prompted it. Names sort by time and never repeat
(`audit/{time}-{run id}-{clip}-{random}.jsonl`), and the store writes each with `write_once`
(a conditional PUT on S3, a hard link on disk), so an entry is never rewritten: the trail only
grows. The entry is written before the engine runs, so no cloned audio exists without one.

`check` reads the trail back beside the course's published clips: every clip whose sidecar
names a consent, or whose engine clones a speaker, must have an entry for its clip, content
key, consent id and run (`narro audit COURSE`).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from narro.layout import INDEX_NAME
from narro.store import Store

if TYPE_CHECKING:
    from narro.consent import ConsentRecord
    from narro.plan import ClipSpec
    from narro.voices import EngineVoice

AUDIT_FOLDER = "audit"


class AuditTrail:
    """Where one run appends its clone syntheses."""

    def __init__(self, store: Store, run_id: str):
        self.store = store
        self.run_id = run_id

    def append(self, spec: ClipSpec, voice: EngineVoice, record: ConsentRecord, references: tuple[str, ...]) -> str:
        """Write the entry for one synthesis about to run; returns its object name (StoreError if it cannot)."""
        from narro.consent import synthesis_content_key

        moment = datetime.now(UTC)
        entry = {
            "time": moment.isoformat(timespec="microseconds"),
            "course": spec.course,
            "clip": spec.narration_id,
            "voice": spec.voice,
            "engine": voice.engine,
            "consent_id": record.id,
            "speaker": record.speaker,
            "content_key": synthesis_content_key(spec, voice),
            "run_id": self.run_id,
            "references": list(references),
        }
        unique = f"{moment:%Y%m%dT%H%M%S%fZ}-{self.run_id}-{spec.narration_id}-{secrets.token_hex(4)}"
        name = f"{AUDIT_FOLDER}/{unique}.jsonl"
        self.store.write_once(spec.course, name, (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"),
                              "application/x-ndjson")
        return name


def read_trail(store: Store, course: str) -> list[tuple[str, dict[str, Any]]]:
    """Every entry of the course's trail, oldest first, with its object name."""
    entries = []
    for name in store.list_names(course, AUDIT_FOLDER):
        data = store.read_object(course, name)
        try:
            entry = json.loads((data or b"").decode("utf-8"))
        except ValueError:
            entry = {"unreadable": True}
        entries.append((name, entry if isinstance(entry, dict) else {"unreadable": True}))
    return entries


@dataclass
class AuditReport:
    entries: list[tuple[str, dict[str, Any]]]
    cloned: list[str] = field(default_factory=list)
    """Published clips made with a cloned voice."""
    missing: list[tuple[str, str]] = field(default_factory=list)
    """(clip, why) for each published cloned clip without its entry."""

    @property
    def ok(self) -> bool:
        return not self.missing


def published_sidecars(store: Store, course: str) -> dict[str, dict[str, Any]]:
    """The sidecars of the clips published in the course (whose MP3 matches them), by narration id."""
    found = {}
    for name in store.list_names(course):
        if "/" in name or not name.endswith(".json") or name == INDEX_NAME:
            continue
        narration_id = name.removesuffix(".json")
        sidecar = store.read_sidecar(course, narration_id)
        if sidecar is not None and store.published_key(course, narration_id) is not None:
            found[narration_id] = sidecar
    return found


def is_cloned(sidecar: dict[str, Any]) -> bool:
    """Whether a published clip was spoken by a cloned voice (its sidecar names a consent, or its engine clones)."""
    from narro.engines import ENGINES

    if sidecar.get("consent"):
        return True
    engine = (sidecar.get("engine") or {}).get("engine")
    kind = ENGINES.get(engine) if isinstance(engine, str) else None
    return kind is not None and kind.clones_voice


def check(store: Store, course: str) -> AuditReport:
    """The course's trail, and each published cloned clip that has no entry matching its sidecar."""
    entries = read_trail(store, course)
    keys = {(e.get("clip"), e.get("content_key"), e.get("consent_id"), e.get("run_id")) for _, e in entries}
    report = AuditReport(entries)
    for narration_id, sidecar in sorted(published_sidecars(store, course).items()):
        if not is_cloned(sidecar):
            continue
        report.cloned.append(narration_id)
        consent = sidecar.get("consent") or {}
        if not consent.get("id"):
            report.missing.append((narration_id, "its sidecar names no consent record"))
        elif (narration_id, sidecar.get("content_key"), consent["id"], sidecar.get("run_id")) not in keys:
            key = str(sidecar.get("content_key"))[:12]
            report.missing.append((narration_id, f"no audit entry for consent {consent['id']}, content key {key}, "
                                                 f"run {sidecar.get('run_id')}"))
    return report


def clips_with_voice(store: Store, courses: list[str], voice: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(course, narration id, sidecar) of every published clip whose sidecar says `voice` spoke it."""
    return [(course, narration_id, sidecar) for course in courses
            for narration_id, sidecar in sorted(published_sidecars(store, course).items())
            if sidecar.get("voice") == voice]
