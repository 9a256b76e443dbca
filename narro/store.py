"""Where finished clips live: `{course}/{id}.mp3`, its `{id}.json` sidecar, and `{course}/index.json`.

Objects are written whole or not at all (temporary file, fsync, rename). The sidecar is written
after the MP3 and names the MP3's size and hash, so a clip counts as published only when
both are present and agree: a crash between the two writes leaves a clip that re-renders.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from narro.errors import StoreError

INDEX_NAME = "index.json"


class Store(Protocol):
    url: str

    def published_key(self, course: str, narration_id: str) -> str | None:
        """Content key of the clip published under this id, or None if absent or incomplete."""
        ...

    def publish(self, course: str, narration_id: str, mp3: bytes, sidecar: dict[str, Any], *,
                captions: bytes | None = None) -> None:
        """Write the MP3, then the WebVTT `captions` (if any) as `{id}.vtt`, then the sidecar last."""
        ...

    def read_sidecar(self, course: str, narration_id: str) -> dict[str, Any] | None: ...

    def write_index(self, course: str, index: dict[str, Any]) -> None: ...

    def write_object(self, course: str, name: str, data: bytes, content_type: str) -> None:
        """Write a course-level file beside the clips (e.g. `report.html`), whole or not at all."""
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
                captions: bytes | None = None) -> None:
        expected = sidecar.get("mp3", {})
        if expected.get("bytes") != len(mp3) or expected.get("sha256") != hashlib.sha256(mp3).hexdigest():
            raise StoreError(f"{course}/{narration_id}: sidecar does not describe the MP3 being published")
        folder = self._dir(course)
        _atomic_write(folder / f"{narration_id}.mp3", mp3)
        if captions is not None:
            _atomic_write(folder / f"{narration_id}.vtt", captions)
        else:
            (folder / f"{narration_id}.vtt").unlink(missing_ok=True)  # stale captions of an earlier take
        _atomic_write(folder / f"{narration_id}.json", json_bytes(sidecar))

    def write_index(self, course: str, index: dict[str, Any]) -> None:
        _atomic_write(self._dir(course) / INDEX_NAME, json_bytes(index))

    def write_object(self, course: str, name: str, data: bytes, content_type: str) -> None:
        _atomic_write(self._dir(course) / name, data)

    def read_index(self, course: str) -> dict[str, Any] | None:
        try:
            return json.loads((self._dir(course) / INDEX_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def mp3_path(self, course: str, narration_id: str) -> Path:
        return self._dir(course) / f"{narration_id}.mp3"


def json_bytes(data: dict[str, Any]) -> bytes:
    """How every store writes JSON objects: stable key order, UTF-8, one trailing newline."""
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            os.fchmod(handle, 0o644)  # mkstemp makes 0600; published files are for reading
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc


def open_store(url: str) -> Store:
    """A store from a URL or path: a plain path or file:// URL is a local directory."""
    if "://" not in url:
        return LocalStore(Path(url).expanduser())
    scheme, _, rest = url.partition("://")
    if scheme == "file":
        return LocalStore(Path(rest))
    if scheme == "s3":
        from narro.s3store import S3Store

        return S3Store(url)
    raise StoreError(f"unsupported store '{url}': use a directory path or s3://bucket/prefix")
