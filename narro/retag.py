"""Re-tag a published clip whose title alone changed: a new ID3 title and sidecar, no synthesis.

The title is not part of the content key (narro.plan), so the audio, and the watermark whose
payload is a tag of that key, stay what they are. Only the ID3v2 tag at the head of the MP3 is
rebuilt; every byte after it (the MPEG frames the watermark was verified on when the clip was
first published) is copied unchanged, and `retitled` checks that it is.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from narro.errors import StoreError
from narro.layout import mp3_record

if TYPE_CHECKING:
    from narro.plan import ClipSpec
    from narro.store import Store

_HEADER = 10
_TITLE = b"TIT2"


def _syncsafe(data: bytes) -> int:
    return (data[0] << 21) | (data[1] << 14) | (data[2] << 7) | data[3]


def audio_part(mp3: bytes) -> bytes:
    """The MP3 without its leading ID3v2 tag: what listeners hear, and what the watermark was verified on."""
    return mp3[_tag_end(mp3):]


def _to_syncsafe(value: int) -> bytes:
    return bytes(((value >> shift) & 0x7F) for shift in (21, 14, 7, 0))


def _tag_end(mp3: bytes) -> int:
    """Where the ID3v2 tag at the head of `mp3` ends (0: there is none)."""
    if mp3[:3] != b"ID3" or len(mp3) < _HEADER:
        return 0
    footer = _HEADER if mp3[5] & 0x10 else 0
    return _HEADER + _syncsafe(mp3[6:10]) + footer


def _tag(major: int, frames: bytes) -> bytes:
    """An ID3v2 tag of `frames`: no flags, no padding."""
    return b"ID3" + bytes([major, 0, 0]) + _to_syncsafe(len(frames)) + frames


def _title_frame(title: str, major: int) -> bytes:
    """A TIT2 frame: Latin-1 when the title fits it, else UTF-16 with a BOM (v2.3) or UTF-8 (v2.4)."""
    try:
        body = b"\x00" + title.encode("latin-1")
    except UnicodeEncodeError:
        body = b"\x03" + title.encode("utf-8") if major == 4 else b"\x01" + title.encode("utf-16")
    size = _to_syncsafe(len(body)) if major == 4 else len(body).to_bytes(4, "big")
    return _TITLE + size + b"\x00\x00" + body


def retitled(mp3: bytes, title: str) -> bytes:
    """`mp3` with its ID3v2 title set to `title`: the other frames kept, the audio after the tag untouched.

    Raises ValueError for a tag this cannot rewrite faithfully (version 2.2, unsynchronised, or with
    an extended header); narro's encoder writes none of those.
    """
    end = _tag_end(mp3)
    if end == 0:
        return _tag(3, _title_frame(title, 3)) + mp3
    major, flags = mp3[3], mp3[5]
    if major not in (3, 4) or flags & 0xC0:
        raise ValueError(f"ID3v2.{major} tag with flags {flags:#04x}: cannot rewrite its title")
    frames, position = [], _HEADER
    while position + _HEADER <= end and mp3[position] != 0:  # a zero byte starts the padding
        size_bytes = mp3[position + 4:position + 8]
        size = _syncsafe(size_bytes) if major == 4 else int.from_bytes(size_bytes, "big")
        frame = mp3[position:position + _HEADER + size]
        if frame[:4] != _TITLE:
            frames.append(frame)
        position += _HEADER + size
    frames.insert(0, _title_frame(title, major))
    result = _tag(major, b"".join(frames)) + mp3[end:]
    if audio_part(result) != mp3[end:]:
        raise ValueError("re-tagging would change the audio")
    return result


def retag(store: Store, spec: ClipSpec, sidecar: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Publish the clip again with `spec`'s title in its ID3 tag and sidecar; returns the new sidecar.

    `sidecar`: the published one. StoreError when the MP3 in the store is not the one it describes
    (the caller renders the clip instead).
    """
    mp3 = store.read_mp3(spec.course, spec.narration_id)
    described = sidecar.get("mp3") or {}
    if mp3 is None or hashlib.sha256(mp3).hexdigest() != described.get("sha256"):
        raise StoreError(f"{spec.object_name}: the published MP3 is not the one its sidecar describes")
    try:
        tagged = retitled(mp3, spec.tags()["title"])
    except ValueError as error:
        raise StoreError(f"{spec.object_name}: {error}") from error
    bitrate = described.get("bitrate_kbps", spec.post.bitrate_kbps)
    record = {**sidecar, "title": spec.title, "mp3": {**described, **mp3_record(tagged, bitrate)},
              "retagged": {"run_id": run_id, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "from_title": sidecar.get("title")}}
    captions, srt = (store.read_object(spec.course, f"{spec.narration_id}.{suffix}") for suffix in ("vtt", "srt"))
    store.publish(spec.course, spec.narration_id, tagged, record, captions=captions, srt=srt)
    return record
