"""The cap on concurrent requests to the edge-tts service, held across every worker.

A Prefect global concurrency limit named `narro-edge-tts` (its slots live in the Prefect API,
so every process and machine rendering against the same API shares them). Each request to
the service, not each clip, occupies a slot: a clip backing off after a 429 holds none.
`NARRO_EDGE_CONCURRENCY` sets the cap (default 8).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from narro.engines import edge
from narro.plan import ClipSpec

LIMIT_NAME = "narro-edge-tts"
DEFAULT_CAP = 8


def cap() -> int:
    raw = os.environ.get("NARRO_EDGE_CONCURRENCY", str(DEFAULT_CAP))
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"NARRO_EDGE_CONCURRENCY={raw!r}: give a whole number of at least 1")
    return int(raw)


def uses_edge(specs: list[ClipSpec]) -> bool:
    return any(spec.engine_voice.engine == "edge" for spec in specs)


def request_slot() -> AbstractContextManager[None]:
    # strict: a missing limit is an error, never a silent "no limit".
    return concurrency(LIMIT_NAME, occupy=1, strict=True)


def install(limit: int | None = None) -> None:
    """Create or resize the global limit, and gate every edge request in this process on it."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(LIMIT_NAME, limit or cap())
    edge.set_request_gate(request_slot)
