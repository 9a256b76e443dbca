"""`narro verify`: read any audio file ffmpeg understands, look for narro's mark, say what it means."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from narro.catalogue import Catalogue
from narro.encode import decode
from narro.errors import AudioError
from narro.watermark import DEFAULT_ORG, SAMPLE_RATE, Detection, clip_tag, detect


@dataclass(frozen=True)
class FileReport:
    path: Path
    detection: Detection
    meaning: str
    """Which clip version the payload names, as far as the catalogue knows."""

    def as_dict(self) -> dict[str, object]:
        payload = self.detection.payload
        return {"file": str(self.path), "present": self.detection.present,
                "payload": payload.as_dict() if payload else None, "meaning": self.meaning,
                "confidence": self.detection.confidence, "bit_agreement": self.detection.bit_agreement}


def read_audio(path: Path) -> tuple:
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


def meaning(detection: Detection, catalogue: Catalogue | None) -> str:
    payload = detection.payload
    if payload is None:
        return "no narro watermark"
    org = "narro default organisation" if payload.org == DEFAULT_ORG else f"organisation {payload.org}"
    if catalogue is None:
        return f"{org}, clip tag {payload.clip_tag:06x} (no catalogue to look it up)"
    for course in catalogue.courses():
        for clip in catalogue.clips(course):
            for key, state in ((clip.published_key, "published"), (clip.content_key, "planned")):
                if key and clip_tag(key) == payload.clip_tag:
                    current = "current version" if key == clip.content_key else "an older version"
                    return f"{org}: {course}/{clip.narration_id} ({state}, {current}, content key {key[:12]}…)"
    return f"{org}, clip tag {payload.clip_tag:06x}: not in this catalogue"


def verify_file(path: Path, catalogue: Catalogue | None) -> FileReport:
    samples, rate = read_audio(path)
    found = detect(samples, rate)
    return FileReport(path, found, meaning(found, catalogue))
