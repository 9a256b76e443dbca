"""How every store lays out and encodes what it writes, whatever holds the bytes.

Shared by narro.store (the local store and `open_store`) and narro.s3store; it lives apart so
that neither imports the other for it (`open_store` imports narro.s3store).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

INDEX_NAME = "index.json"


def json_bytes(data: dict[str, Any]) -> bytes:
    """How every store writes JSON objects: stable key order, UTF-8, one trailing newline."""
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def mp3_record(mp3: bytes, bitrate_kbps: int) -> dict[str, Any]:
    """The sidecar's description of its MP3: size and sha256, and the md5 that S3 gives a single-part
    upload as its ETag, so that a bucket listing alone shows the MP3 is the one the sidecar was written for."""
    return {"bytes": len(mp3), "sha256": hashlib.sha256(mp3).hexdigest(),
            "md5": hashlib.md5(mp3).hexdigest(),  # noqa: S324 (compared with S3's ETag, not a security check)
            "bitrate_kbps": bitrate_kbps}
