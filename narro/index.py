"""What a store holds whole, found by one listing, and the course index written from it.

A clip is published when its sidecar (written last, the commit marker) agrees with its MP3.
Checking that clip by clip costs a read and a stat (on S3 a GET and a HEAD) per clip, every run.
Instead each store lists the course once (`Store.published_clips`) and names the objects it saw
by an identity that changes whenever an object is replaced: S3's ETag (an MD5 of the bytes),
or a file's inode, size and modification time. The course index records, per clip, what its
sidecar said and the identities of the two objects it was checked against (`stored`). On the
next listing, a clip whose identities are unchanged is still what was checked, so its index
entry is taken without reading anything; any other clip is checked again from its sidecar.
An interrupted upload changes an identity (a new MP3 without its sidecar) or leaves the sidecar
out, so it is never trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from narro.layout import INDEX_NAME

if TYPE_CHECKING:
    from narro.plan import ClipSpec
    from narro.store import Store


@dataclass(frozen=True)
class Published:
    """A clip the store holds whole: what its sidecar says, as far as planning and the index need it."""

    content_key: str
    title: str | None
    """The title the MP3 is tagged with (the sidecar's)."""
    fallback: str | None
    """The fallback voice that spoke it, if one did."""
    captions: str | None
    duration_s: float | None
    stored: str
    """Identities of the MP3 and the sidecar objects when they were checked against each other."""
    sidecar: dict[str, Any] | None = None
    """The sidecar, when this listing read it (None when an unchanged index entry vouched for the clip)."""

    @classmethod
    def of(cls, sidecar: dict[str, Any], stored: str) -> Published | None:
        """From a sidecar that was checked against its MP3; None when it names no content key."""
        key = sidecar.get("content_key")
        if not isinstance(key, str):
            return None
        fallback, captions = sidecar.get("fallback"), sidecar.get("captions")
        return cls(key, sidecar.get("title"), fallback.get("to") if isinstance(fallback, dict) else None,
                   captions.get("vtt") if isinstance(captions, dict) else None, sidecar.get("duration_s"), stored,
                   sidecar)

    @classmethod
    def from_entry(cls, entry: Any) -> Published | None:
        """From an entry of an earlier course index, or None when it lacks what a listing compares."""
        if not isinstance(entry, dict) or not isinstance(entry.get("stored"), str) \
                or not isinstance(entry.get("content_key"), str):
            return None
        return cls(entry["content_key"], entry.get("published_title"), entry.get("fallback"), entry.get("captions"),
                   entry.get("duration_s"), entry["stored"])


def known_entries(store: Store, course: str) -> dict[str, dict[str, Any]]:
    """The clips of the course's current index by id (empty when there is none, or it is unreadable)."""
    data = store.read_object(course, INDEX_NAME)
    try:
        index = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    clips = index.get("clips") if isinstance(index, dict) else None
    return {clip["id"]: clip for clip in clips or [] if isinstance(clip, dict) and isinstance(clip.get("id"), str)}


def course_index(specs: list[ClipSpec], published: Mapping[str, Published]) -> dict[str, Any]:
    """The course index: in course order, every clip of `specs` that the store holds whole.

    `current`: the published clip is what the manifest asks for now (key and title).
    """
    clips = []
    for spec in specs:
        clip = published.get(spec.narration_id)
        if clip is None:
            continue
        clips.append({
            "id": spec.narration_id,
            "title": spec.title,
            "published_title": clip.title,
            "mp3": f"{spec.narration_id}.mp3",
            "sidecar": f"{spec.narration_id}.json",
            "content_key": clip.content_key,
            "current": clip.content_key == spec.content_key and clip.title == spec.title,
            "fallback": clip.fallback,
            "captions": clip.captions,
            "duration_s": clip.duration_s,
            "stored": clip.stored,
        })
    course = specs[0].course if specs else ""
    return {"course": course, "generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "clips": clips}

