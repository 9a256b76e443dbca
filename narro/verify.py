"""`narro verify`: read any audio file ffmpeg understands, look for narro's mark, say what it means."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from narro.catalogue import Catalogue
from narro.encode import decode
from narro.errors import AudioError
from narro.watermark import DEFAULT_ORG, SAMPLE_RATE, Detection, clip_tag, detect, detect_among, payload_for


@dataclass(frozen=True)
class FileReport:
    path: Path
    detection: Detection
    org: int
    """The organisation id this check expects (settings.watermark.org_id)."""
    meaning: str
    """Which clip version the payload names, as far as the catalogue knows."""

    @property
    def ours(self) -> bool:
        return self.detection.payload is not None and self.detection.payload.org == self.org

    @property
    def status(self) -> str:
        if self.detection.payload is None:
            return "not watermarked"
        return "watermarked" if self.ours else "watermarked, not ours"

    def as_dict(self) -> dict[str, object]:
        return {"file": str(self.path), "status": self.status, "present": self.detection.present, "ours": self.ours,
                **self.detection.as_dict(), "meaning": self.meaning}


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode a file to narro's working rate; AudioError if it is missing or not audio."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise AudioError(f"{path}: cannot read: {error.strerror or error}") from error
    try:
        samples = decode(data, SAMPLE_RATE)
    except AudioError as error:
        raise AudioError(f"{path}: not an audio file ffmpeg can read ({error})") from error
    if samples.size == 0:
        raise AudioError(f"{path}: contains no audio")
    return samples, SAMPLE_RATE


def meaning(detection: Detection, catalogue: Catalogue | None, org: int = DEFAULT_ORG) -> str:
    payload = detection.payload
    if payload is None:
        return "no narro watermark"
    if payload.org != org:
        return f"another organisation's mark (organisation {payload.org:#04x}, clip tag {payload.clip_tag:06x})"
    if catalogue is None:
        return f"clip tag {payload.clip_tag:06x} (no catalogue to look it up)"
    for course in catalogue.courses():
        for clip in catalogue.clips(course):
            for key, state in ((clip.published_key, "published"), (clip.content_key, "planned")):
                if key and clip_tag(key) == payload.clip_tag:
                    current = "current version" if key == clip.content_key else "an older version"
                    return f"{course}/{clip.narration_id} ({state}, {current}, content key {key[:12]}…)"
    return f"clip tag {payload.clip_tag:06x}: not in this catalogue"


def verify_file(path: Path, catalogue: Catalogue | None, org: int = DEFAULT_ORG, search: bool = True) -> FileReport:
    """Look for a mark in the file; `org` is the organisation that counts as ours. `search` False
    tries only the published speed and pitch (faster, for files known not to be re-timed)."""
    samples, rate = read_audio(path)
    found = detect(samples, rate, search=search)
    if found.payload is None and catalogue is not None:
        # Too short to read blind (a one-word clip)? Ask whether it carries one of the catalogue's payloads.
        keys = {key for course in catalogue.courses() for clip in catalogue.clips(course)
                for key in (clip.published_key, clip.content_key) if key}
        among = detect_among(samples, rate, (payload_for(key, org) for key in keys))
        found = among if among.present else found
    return FileReport(path, found, org, meaning(found, catalogue, org))
