"""Courses published without synthesis, for what only reads the store: planning and the no-op.

Rendering 10,000 clips to time a no-op would take hours, and planning never decodes audio, so
every clip gets the same stand-in MP3 bytes and a sidecar naming its own content key, written
through the store's own `publish` (MP3 first, sidecar last), as a render would write them. Used
by tests/test_noop_scale.py, tests/test_imports.py and bench/noop.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from narro.engines import engine_kind
from narro.layout import mp3_record
from narro.plan import ClipSpec, text_sha256
from narro.store import Store

STAND_IN_MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(412)
"""An empty ID3v2.3 tag and one silent-looking MPEG frame header: bytes a no-op never decodes."""


def stand_in_sidecar(spec: ClipSpec, mp3: bytes = STAND_IN_MP3) -> dict[str, Any]:
    """The fields of narro.render.sidecar that planning, the catalogue and the index read."""
    return {
        "content_key": spec.content_key, "course": spec.course, "narration_id": spec.narration_id,
        "title": spec.title, "text_sha256": text_sha256(spec.text), "voice": spec.voice, "tier": spec.tier,
        "engine": {"name": spec.engine_voice.engine, **engine_kind(spec.engine_voice.engine).identity(spec.engine_voice)},
        "post": spec.post.as_dict(), "duration_s": 1.0, "loudness_lufs": -16.0, "true_peak_dbtp": -1.5,
        "mp3": mp3_record(mp3, spec.post.bitrate_kbps), "stand_in": True,
    }


def publish_stand_ins(store: Store, specs: list[ClipSpec], threads: int = 1) -> None:
    """Publish every spec as a stand-in clip; `threads` > 1 for a store whose writes wait on the network."""
    def one(spec: ClipSpec) -> None:
        store.publish(spec.course, spec.narration_id, STAND_IN_MP3, stand_in_sidecar(spec))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, specs))
