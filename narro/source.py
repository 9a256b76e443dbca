"""A course's source in the store, so that a worker anywhere renders what its author wrote.

`upload(manifest, store)` copies the manifest and every file its render reads (scripts,
voices.yaml, lexicon.yaml, and the files voices.yaml names inside the course folder, such as a
reference recording or a voice model) to `{course}/_source/{digest}/PATH`, PATH relative to the
manifest's folder. `digest` hashes every file's path and content, so an upload is write-once and
an unchanged course uploads nothing. The listing `{course}/_source/{digest}.json` is written after
the files and commits the upload (as a sidecar commits a clip); then `{course}/_source/latest.json`
points at it, for schedules, which render whatever was uploaded last.

The course flow takes a location, `STORE/{course}/_source/{digest}/{manifest}` (one upload) or
`STORE/{course}/_source/latest`, and `materialise` fetches it into a folder named after the digest,
the same path on every machine, checking each file against its hash. Rendering from there gives
the same content keys as rendering the author's folder, so only what changed is rendered. Voice
files outside the course folder are not uploaded: they must exist at the same path on the workers.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from narro.errors import StoreError
from narro.layout import json_bytes
from narro.lexicon import LEXICON_FILENAME
from narro.manifest import Course, load_course
from narro.store import Store, open_store
from narro.voices import TIERS, EngineVoice

SOURCE = "_source"
LATEST = f"{SOURCE}/latest.json"
DIGEST_CHARS = 16
_LOCATION = re.compile(rf"^(?P<store>.+)/(?P<course>[^/]+)/{SOURCE}/(?:latest|(?P<digest>[0-9a-f]{{{DIGEST_CHARS}}})/"
                       r"(?P<manifest>.+))$")


@dataclass(frozen=True)
class Uploaded:
    store: str
    course: str
    digest: str
    location: str
    """This upload's manifest, for a run that renders exactly it."""
    latest: str
    """The course's latest upload, for a schedule that renders whatever was uploaded last."""
    files: int
    written: bool
    """False when the store already held this source (nothing was uploaded)."""


@dataclass(frozen=True)
class Location:
    store: str
    course: str
    digest: str | None
    """None for `latest`."""
    manifest: str | None

    def __str__(self) -> str:
        tail = "latest" if self.digest is None else f"{self.digest}/{self.manifest}"
        return f"{self.store}/{self.course}/{SOURCE}/{tail}"


def parse_location(text: str) -> Location | None:
    """The parts of a source location, or None when `text` is not one (a plain manifest path)."""
    found = _LOCATION.match(text)
    if found is None:
        return None
    return Location(found["store"], found["course"], found["digest"], found["manifest"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _voice_files(voice: EngineVoice | None) -> list[Path]:
    """Files and folders an engine voice names by absolute path (voices.yaml's relative ones, resolved)."""
    from narro.engines import ENGINES

    found: list[Path] = []
    while voice is not None:
        kind = ENGINES.get(voice.engine)
        for name in ("model", *(kind.path_options if kind else ())):
            value = getattr(voice, name, None)
            if isinstance(value, str) and Path(value).is_absolute() and Path(value).exists():
                found.append(Path(value))
        voice = voice.fallback
    return found


def source_files(course: Course) -> dict[str, Path]:
    """Every file the course's render reads that lies in its folder, by path relative to the folder."""
    base = course.manifest_path.parent.resolve()
    paths = [course.manifest_path.resolve()]
    paths += [base / narration.source for narration in course.narrations if narration.source != "inline"]
    paths += [path for path in (course.voices.source, base / LEXICON_FILENAME) if path is not None and path.is_file()]
    for entry in course.voices.registry.voices.values():
        for tier in TIERS:
            paths += _voice_files(entry.for_tier(tier))
    files: dict[str, Path] = {}
    for path in paths:
        path = path.resolve()
        if not path.is_relative_to(base):
            continue  # outside the course folder: it must be at this path on the workers
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                files[file.relative_to(base).as_posix()] = file
    return files


def upload(manifest: Path, store: Store) -> Uploaded:
    """Put the course's source in the store (once per content) and point its `latest` at it.

    Raises ManifestError for an invalid manifest (nothing is uploaded) and StoreError when the
    store refuses a write.
    """
    course = load_course(manifest)
    files = source_files(course)
    name = course.manifest_path.name
    listing = {"manifest": name, "files": {rel: _sha256(path) for rel, path in files.items()}}
    digest = hashlib.sha256(json_bytes(listing)).hexdigest()[:DIGEST_CHARS]
    folder = f"{SOURCE}/{digest}"
    written = store.read_object(course.slug, f"{folder}.json") is None
    if written:
        for rel, path in files.items():
            kind = mimetypes.guess_type(rel)[0] or "application/octet-stream"
            store.write_object(course.slug, f"{folder}/{rel}", path.read_bytes(), kind)
        store.write_object(course.slug, f"{folder}.json", json_bytes(listing), "application/json")
    store.write_object(course.slug, LATEST, json_bytes({"digest": digest, "manifest": name}),
                       "application/json")
    location = Location(store.url, course.slug, digest, name)
    latest = Location(store.url, course.slug, None, None)
    return Uploaded(store.url, course.slug, digest, str(location), str(latest), len(files), written)


def _json_object(store: Store, course: str, name: str, missing: str) -> dict:
    data = store.read_object(course, name)
    if data is None:
        raise StoreError(f"{store.url}/{course}/{name}: not found; {missing}")
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise StoreError(f"{store.url}/{course}/{name}: not a narro source record; upload the course again")
    return record


def pinned(location: Location, endpoint_url: str | None) -> Location:
    """`latest` resolved to the upload it points at now; a pinned location unchanged."""
    if location.digest is not None:
        return location
    store = open_store(location.store, endpoint_url)
    pointer = _json_object(store, location.course, LATEST,
                           "no source was uploaded for this course: run `narro submit` or `narro schedule add`")
    digest, manifest = pointer.get("digest"), pointer.get("manifest")
    valid = isinstance(digest, str) and re.fullmatch(f"[0-9a-f]{{{DIGEST_CHARS}}}", digest) is not None
    if not (valid and isinstance(manifest, str)):
        raise StoreError(f"{store.url}/{location.course}/{LATEST}: not a narro source pointer; upload the course again")
    return Location(location.store, location.course, digest, manifest)


def cache_root() -> Path:
    """Where fetched sources live: the same path on every worker, so voice file paths agree across machines."""
    return Path(tempfile.gettempdir()) / "narro-source"


def materialise(location: Location, endpoint_url: str | None, root: Path | None = None) -> Path:
    """The local path of a pinned location's manifest, fetching its source first if this machine lacks it."""
    assert location.digest is not None and location.manifest is not None, "pin the location first"
    folder = (root or cache_root()) / f"{location.course}-{location.digest}"
    if not folder.is_dir():
        _fetch(open_store(location.store, endpoint_url), location.course, location.digest, folder)
    return folder / location.manifest


def _fetch(store: Store, course: str, digest: str, folder: Path) -> None:
    listing = _json_object(store, course, f"{SOURCE}/{digest}.json", "upload the course again with `narro submit`")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for rel, expected in dict(listing.get("files", {})).items():
            relative = PurePosixPath(rel)
            if relative.is_absolute() or ".." in relative.parts:
                raise StoreError(f"{store.url}/{course}/{SOURCE}/{digest}.json: refusing '{rel}', a path outside "
                                 "the source")
            data = store.read_object(course, f"{SOURCE}/{digest}/{rel}")
            if data is None or hashlib.sha256(data).hexdigest() != expected:
                raise StoreError(f"{store.url}/{course}/{SOURCE}/{digest}/{rel}: missing or changed since it was "
                                 "uploaded; upload the course again")
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        try:
            os.rename(staging, folder)  # the whole source appears at once, or not at all
        except OSError:
            if not folder.is_dir():  # else another process on this machine fetched it first: theirs is the same
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
