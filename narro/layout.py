"""How every store lays out and encodes what it writes, whatever holds the bytes.

Shared by narro.store (the local store and `open_store`) and narro.s3store; it lives apart so
that neither imports the other for it (`open_store` imports narro.s3store).
"""

from __future__ import annotations

import json
from typing import Any

INDEX_NAME = "index.json"


def json_bytes(data: dict[str, Any]) -> bytes:
    """How every store writes JSON objects: stable key order, UTF-8, one trailing newline."""
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
