"""Caps on concurrent requests to online engines (edge-tts), held across every worker.

An engine kind with a `rate_limit` (edge: `narro-edge-tts`) gets a Prefect global concurrency
limit of that name (its slots live in the Prefect API, so every process and machine rendering
against the same API shares them). Each request to the service, not each clip, occupies a
slot (the engine asks narro.engines.rate_slot): a clip backing off after a 429 holds none.
The `edge.concurrency` setting (NARRO_EDGE_CONCURRENCY, default 8) sets the cap.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from narro.engines import engine_kind, set_rate_gate
from narro.plan import ClipSpec
from narro.voices import EngineVoice


def rate_limits(specs: Iterable[ClipSpec]) -> set[str]:
    """The rate limits the specs' engines name, fallback voices included."""
    names = set()
    for spec in specs:
        voice: EngineVoice | None = spec.engine_voice
        while voice is not None:
            limit = engine_kind(voice.engine).rate_limit
            if limit is not None:
                names.add(limit)
            voice = voice.fallback
    return names


def request_slot(limit: str) -> AbstractContextManager[None]:
    # strict: a missing limit is an error, never a silent "no limit".
    return concurrency(limit, occupy=1, strict=True)


def install(limits: Iterable[str], cap: int) -> None:
    """Create or resize each named limit to `cap` slots, and gate rate-limited requests in this process on them."""
    with get_client(sync_client=True) as client:
        for limit in limits:
            client.upsert_global_concurrency_limit_by_name(limit, cap)
    gate_this_process()


def gate_this_process() -> None:
    """Gate rate-limited requests made in this process (a Dask worker renders clips outside the flow's process)."""
    set_rate_gate(request_slot)
