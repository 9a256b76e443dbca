"""Where finished clips live: `{course}/{id}.mp3`, its `{id}.json` sidecar, and `{course}/index.json`.

Objects are written whole or not at all (temporary file, fsync, rename). The sidecar is written
after the MP3 and names the MP3's size and hash, so a clip counts as published only when
both are present and agree: a crash between the two writes leaves a clip that re-renders.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from narro.errors import StoreError
from narro.files import replace_file
from narro.index import Published
from narro.layout import INDEX_NAME, json_bytes


class Store(Protocol):
    """What every store offers; narro's callers use nothing else (LocalStore, narro.s3store.S3Store)."""

    url: str

    def check(self) -> None:
        """Raise StoreError now, before any rendering, if clips could not be written here."""
        ...

    def published_key(self, course: str, narration_id: str) -> str | None:
        """Content key of the clip published under this id, or None if absent or incomplete."""
        ...

    def published_clips(self, course: str, known: Mapping[str, dict[str, Any]]) -> dict[str, Published]:
        """Every clip the course holds whole, by narration id, from one listing (narro.index).

        `known`: the course index's entries by id; one whose objects are unchanged is taken as it is,
        any other clip's sidecar is read (once) and checked against its MP3.
        """
        ...

    def publish(self, course: str, narration_id: str, mp3: bytes, sidecar: dict[str, Any], *,
                captions: bytes | None = None, srt: bytes | None = None) -> None:
        """Write the MP3, then the WebVTT `captions` and SubRip `srt` (if any) as `{id}.vtt` and `{id}.srt`,
        then the sidecar last."""
        ...

    def read_sidecar(self, course: str, narration_id: str) -> dict[str, Any] | None: ...

    def write_index(self, course: str, index: dict[str, Any]) -> None: ...

    def write_object(self, course: str, name: str, data: bytes, content_type: str) -> None:
        """Write a course-level file beside the clips (e.g. `report.html`), whole or not at all."""
        ...

    def read_mp3(self, course: str, narration_id: str) -> bytes | None:
        """The published MP3's bytes, or None if absent."""
        ...

    def mp3_path(self, course: str, narration_id: str) -> Path | None:
        """The published MP3 as a file on this machine, or None if absent or not on a filesystem."""
        ...

    def audio_url(self, course: str, narration_id: str) -> str | None:
        """A URL a browser can fetch the MP3 from without narro (a presigned GET), or None."""
        ...

    def write_once(self, course: str, name: str, data: bytes, content_type: str) -> None:
        """Create a course-level object that is never replaced (the audit trail); StoreError if it exists."""
        ...

    def read_object(self, course: str, name: str) -> bytes | None:
        """A course-level object's bytes, or None if absent."""
        ...

    def list_names(self, course: str, folder: str = "") -> list[str]:
        """Names (relative to the course, '/'-separated, sorted) of every object under `{course}/{folder}`."""
        ...


class LocalStore:
    """A directory on a local or mounted filesystem."""

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)

    def check(self) -> None:
        """Fail now, before any rendering, if clips could not be written here; creates nothing."""
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise StoreError(f"store '{self.root}': '{existing}' is a file, not a folder; give a folder path")
        if not os.access(existing, os.W_OK):
            raise StoreError(f"store '{self.root}': '{existing}' is not writable")

    def _dir(self, course: str) -> Path:
        return self.root / course

    def published_key(self, course: str, narration_id: str) -> str | None:
        sidecar = self.read_sidecar(course, narration_id)
        if sidecar is None:
            return None
        mp3 = self._dir(course) / f"{narration_id}.mp3"
        try:
            size = mp3.stat().st_size
        except FileNotFoundError:
            return None
        if size != sidecar.get("mp3", {}).get("bytes"):
            return None
        key = sidecar.get("content_key")
        return key if isinstance(key, str) else None

    def published_clips(self, course: str, known: Mapping[str, dict[str, Any]]) -> dict[str, Published]:
        try:
            files = {entry.name: entry for entry in os.scandir(self._dir(course)) if entry.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as exc:
            raise StoreError(f"cannot list {self._dir(course)}: {exc.strerror or exc}") from exc
        found = {}
        for name, entry in files.items():
            narration_id = name.removesuffix(".json")
            mp3 = files.get(f"{narration_id}.mp3")
            if name == narration_id or name == INDEX_NAME or name.startswith(".") or mp3 is None:
                continue
            try:
                mp3_stat, sidecar_stat = mp3.stat(), entry.stat()
            except FileNotFoundError:
                continue  # replaced since the listing: the next run sees the new one
            stored = f"{_identity(mp3_stat)}+{_identity(sidecar_stat)}"
            earlier = Published.from_entry(known.get(narration_id))
            if earlier is not None and earlier.stored == stored:
                found[narration_id] = earlier
                continue
            sidecar, read_stat = self._read_sidecar_file(Path(entry.path))
            if sidecar is None or read_stat is None or mp3_stat.st_size != sidecar.get("mp3", {}).get("bytes"):
                continue  # the MP3 is not the one this sidecar was written for: not published
            published = Published.of(sidecar, f"{_identity(mp3_stat)}+{_identity(read_stat)}")
            if published is not None:
                found[narration_id] = published
        return found

    @staticmethod
    def _read_sidecar_file(path: Path) -> tuple[dict[str, Any] | None, os.stat_result | None]:
        """The sidecar and the identity of the very file it was read from."""
        try:
            with path.open("rb") as handle:
                stat, data = os.fstat(handle.fileno()), handle.read()
            record = json.loads(data.decode("utf-8"))
        except (OSError, ValueError):
            return None, None  # gone, unreadable or torn: not published, it will be rewritten
        return (record, stat) if isinstance(record, dict) else (None, None)

    def read_sidecar(self, course: str, narration_id: str) -> dict[str, Any] | None:
        path = self._dir(course) / f"{narration_id}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable or torn: treat as not published, it will be rewritten
        return data if isinstance(data, dict) else None

    def publish(self, course: str, narration_id: str, mp3: bytes, sidecar: dict[str, Any], *,
                captions: bytes | None = None, srt: bytes | None = None) -> None:
        expected = sidecar.get("mp3", {})
        if expected.get("bytes") != len(mp3) or expected.get("sha256") != hashlib.sha256(mp3).hexdigest():
            raise StoreError(f"{course}/{narration_id}: sidecar does not describe the MP3 being published")
        folder = self._dir(course)
        _atomic_write(folder / f"{narration_id}.mp3", mp3)
        for suffix, data in (("vtt", captions), ("srt", srt)):
            if data is not None:
                _atomic_write(folder / f"{narration_id}.{suffix}", data)
            else:
                (folder / f"{narration_id}.{suffix}").unlink(missing_ok=True)  # stale captions of an earlier take
        _atomic_write(folder / f"{narration_id}.json", json_bytes(sidecar))

    def write_index(self, course: str, index: dict[str, Any]) -> None:
        _atomic_write(self._dir(course) / INDEX_NAME, json_bytes(index))

    def write_object(self, course: str, name: str, data: bytes, content_type: str) -> None:
        _atomic_write(self._dir(course) / name, data)

    def read_mp3(self, course: str, narration_id: str) -> bytes | None:
        path = self.mp3_path(course, narration_id)
        try:
            return path.read_bytes() if path is not None else None
        except OSError:
            return None

    def mp3_path(self, course: str, narration_id: str) -> Path | None:
        root = self.root.resolve()
        path = (self._dir(course) / f"{narration_id}.mp3").resolve()
        # Ids are slugs, but a path that resolves outside the store is never handed out.
        return path if path.is_relative_to(root) and path.is_file() else None

    def audio_url(self, course: str, narration_id: str) -> str | None:
        return None  # a browser cannot read this folder: the dashboard serves the file itself

    def write_once(self, course: str, name: str, data: bytes, content_type: str) -> None:
        path = self._dir(course) / name
        # Written whole under a temporary name, then linked to its own: a link never replaces a file.
        _atomic_write(path.with_name(f".{path.name}.once"), data)
        try:
            os.link(path.with_name(f".{path.name}.once"), path)
        except FileExistsError:
            raise StoreError(f"{path} exists already: it is written once and never replaced") from None
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        finally:
            path.with_name(f".{path.name}.once").unlink(missing_ok=True)

    def read_object(self, course: str, name: str) -> bytes | None:
        try:
            return (self._dir(course) / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self._dir(course) / name}: {exc.strerror or exc}") from exc

    def list_names(self, course: str, folder: str = "") -> list[str]:
        base = self._dir(course)
        top = base / folder if folder else base
        if not top.is_dir():
            return []
        return sorted(path.relative_to(base).as_posix() for path in top.rglob("*")
                      if path.is_file() and not path.name.startswith("."))


def _identity(stat: os.stat_result) -> str:
    """A file's identity for narro.index: every write replaces the file (a new inode, size or time)."""
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        replace_file(path, data, mode=0o644)  # published files are for reading
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc


def open_store(url: str, endpoint_url: str | None = None) -> Store:
    """A store from a URL or path: a plain path or file:// URL is a local directory.

    `endpoint_url` (the `s3.endpoint_url` setting) is the S3-compatible server of an s3:// store.
    """
    if "://" not in url:
        return LocalStore(Path(url).expanduser())
    scheme, _, rest = url.partition("://")
    if scheme == "file":
        return LocalStore(Path(rest))
    if scheme == "s3":
        from narro.s3store import S3Store

        return S3Store(url, endpoint_url)
    raise StoreError(f"unsupported store '{url}': use a directory path or s3://bucket/prefix")
