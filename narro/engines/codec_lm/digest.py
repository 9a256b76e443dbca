"""sha256 of files, cached per process by path, size and modification time (no torch here).

API:

    files_sha256(paths) -> str        # one digest over the files' bytes, in the given order
    checkpoint_sha256(folder) -> str  # a checkpoint's: config.json then model.safetensors
    CONFIG_FILE, WEIGHTS_FILE         # the two files of a checkpoint folder

Content keys need the checkpoint's digest on every clip, and a base checkpoint is over a
gigabyte: it is hashed once per process and again only when a file changes.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path

from narro.errors import CheckpointError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_cache: dict[tuple[tuple[str, int, int], ...], str] = {}
_lock = threading.Lock()


def files_sha256(paths: Sequence[Path]) -> str:
    """One sha256 over the bytes of `paths`, in order; OSError if one cannot be read."""
    stamps = []
    for path in paths:
        stat = Path(path).stat()
        stamps.append((str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns))
    key = tuple(stamps)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    value = digest.hexdigest()
    with _lock:
        _cache[key] = value
    return value


def checkpoint_sha256(folder: str | Path) -> str:
    """The content key part of a checkpoint folder; CheckpointError if a file is missing."""
    files = [Path(folder) / CONFIG_FILE, Path(folder) / WEIGHTS_FILE]
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; a checkpoint folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        return files_sha256(files)
    except OSError as error:
        raise CheckpointError(f"{folder}: cannot read the checkpoint: {error.strerror or error}") from error
