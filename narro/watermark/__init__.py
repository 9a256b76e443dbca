"""narro's audio watermark: a 32-bit payload hidden in every published clip, found again blind.

`embed` writes the current version (VERSION; `v2.py`: a spectral-shape pattern found again after
re-timing, pitch shifts, codecs, band limits, echo and cuts); `detect` reads version 2, then
version 1 (`v1.py`, the first mark narro published), and says which it found. The payload and
its channel code are in `payload.py`. VERSION is part of every clip's content key (narro.plan):
a new version re-renders every clip, by design, so no clip keeps an old mark unknowingly.

The pipeline embeds before loudness normalisation and the true-peak limiter, encodes, and calls
`verify_encoded` on the decoded MP3; only the `Verification` it returns lets `publish` write the
file (`require_verified`). That check knows nothing was re-timed and tries scale 1 only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import resample_poly

from narro.errors import WatermarkError

from . import v1, v2
from .payload import DEFAULT_ORG, Payload, clip_tag, decode, payload_for

__all__ = ["DEFAULT_ORG", "SAMPLE_RATE", "VERSION", "Detection", "Payload", "Verification", "clip_tag", "detect",
           "embed", "payload_for", "require_verified", "verify_encoded"]

VERSION = 1
# The version `embed` writes. Version 2 (found again after speed and pitch changes) is built and
# `detect` reads it, but it is not written yet: in the pipeline, on short clips, it was not found
# again after MP3 encoding (confidence 10.8, below its threshold), and version 1 was.
_WRITERS = {1: v1.embed, 2: v2.embed}
SAMPLE_RATE = v2.SAMPLE_RATE


@dataclass(frozen=True)
class Detection:
    """What the detector found. `payload` is None unless the pilot and the CRC both agree."""

    payload: Payload | None
    confidence: float
    """Normalised pilot correlation at the best alignment (version 2: about N(0,1) per hypothesis on
    unmarked audio; the threshold allows for the number of hypotheses)."""
    bit_agreement: float
    """Share of coded-bit decisions that agree with the decoded payload re-encoded (1.0 = clean)."""
    offset_s: float
    version: int | None = None
    """Which mark was found (None when none was)."""
    tempo: float = 1.0
    """Duration of the clip as received / as published (0.8: played 1.25x faster); version 2 only."""
    pitch: float = 1.0
    """Frequency scale of the clip as received (1.1: 10% higher); version 2 only."""

    @property
    def present(self) -> bool:
        return self.payload is not None

    def as_dict(self) -> dict[str, object]:
        return {"version": self.version, **(self.payload.as_dict() if self.payload else {"payload": None}),
                "confidence": self.confidence, "bit_agreement": self.bit_agreement, "tempo": self.tempo,
                "pitch": self.pitch}


def _resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    if source == target:
        return samples
    g = np.gcd(source, target)
    return resample_poly(samples, target // g, source // g)


def _to_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at the mark's working rate."""
    return _resample(np.asarray(samples, dtype=np.float32), sample_rate, SAMPLE_RATE).astype(np.float32)


def embed(samples: np.ndarray, sample_rate: int, payload: Payload) -> np.ndarray:
    """The clip with the current mark added (same length, same rate)."""
    x = np.asarray(samples, dtype=np.float32)
    work = _to_rate(x, sample_rate).astype(np.float64)
    delta = _resample(_WRITERS[VERSION](work, payload) - work, SAMPLE_RATE, sample_rate)
    return (x + np.pad(delta, (0, max(0, len(x) - len(delta))))[: len(x)]).astype(np.float32)


def detect(samples: np.ndarray, sample_rate: int, search: bool = True) -> Detection:
    """Look for a narro mark anywhere in the clip: version 2 over every speed and pitch
    hypothesis (scale 1 only when `search` is False), then version 1."""
    work = _to_rate(samples, sample_rate)
    current = _detect_v2(work, search)
    if current.present:
        return current
    payload, z, agreement, offset_s = v1.detect(work)
    if payload is not None:
        return Detection(payload, round(z, 2), round(agreement, 3), round(offset_s, 3), version=1)
    return current


def _detect_v2(work: np.ndarray, search: bool) -> Detection:
    """Scale 1 first (cheap, one family of hypotheses, so a lower threshold); then, if asked and
    not found there, every speed and pitch hypothesis."""
    published = _judge(v2.detect(work, search=False), v2.Z_MIN_EXACT)
    if published.present or not search:
        return published
    return _judge(v2.detect(work, search=True), v2.Z_MIN)


def _judge(found: v2.Found | None, threshold: float) -> Detection:
    if found is None:
        return Detection(None, 0.0, 0.0, 0.0)
    payload, agreement = decode(found.soft)
    if found.confidence < threshold:
        payload = None
    return Detection(payload, found.confidence, round(agreement, 3), found.offset_s,
                     version=2 if payload else None, tempo=found.tempo, pitch=found.pitch)


# --------------------------------------------------------------------------- verification


_SEAL_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class Verification:
    """Proof that one exact encoded file carries one payload. Made only by `verify_encoded`;
    `require_verified` refuses anything else, so an unverified file cannot be published."""

    mp3_sha256: str
    payload: Payload
    confidence: float
    bit_agreement: float
    seal: str = field(repr=False)

    def as_dict(self) -> dict[str, object]:
        return {"version": VERSION, **self.payload.as_dict(), "confidence": self.confidence,
                "bit_agreement": self.bit_agreement, "verified_on": "decoded mp3"}


def _seal(digest: str, payload: Payload) -> str:
    return hmac.new(_SEAL_KEY, f"{digest}:{payload.hex()}".encode(), hashlib.sha256).hexdigest()


def verify_encoded(encoded: bytes, decoded: np.ndarray, sample_rate: int, expected: Payload,
                   search: bool = False) -> Verification:
    """Check that the encoded file (whose decoded PCM is `decoded`) carries `expected` in the
    current version. `search` False tries scale 1 only: right after encoding nothing was re-timed.

    Raises WatermarkError when the mark is missing or says something else.
    """
    work = _to_rate(decoded, sample_rate)
    if VERSION == 2:
        found = _detect_v2(work, search)
    else:
        payload, z, agreement, offset_s = v1.detect(work)
        found = Detection(payload, round(z, 2), round(agreement, 3), round(offset_s, 3), version=1 if payload else None)
    if found.payload != expected:
        what = f"payload {found.payload.hex()}" if found.payload else "no mark"
        raise WatermarkError(f"watermark not verified after encoding: found {what} (confidence {found.confidence}), "
                             f"expected payload {expected.hex()}")
    digest = hashlib.sha256(encoded).hexdigest()
    return Verification(digest, expected, found.confidence, found.bit_agreement, _seal(digest, expected))


def require_verified(verification: object, encoded: bytes) -> Verification:
    """The verification of exactly these bytes, or WatermarkError: the gate before any publish."""
    if not isinstance(verification, Verification):
        raise WatermarkError("refusing to publish a clip whose watermark was not verified")
    digest = hashlib.sha256(encoded).hexdigest()
    sealed = _seal(digest, verification.payload)
    if verification.mp3_sha256 != digest or not hmac.compare_digest(verification.seal, sealed):
        raise WatermarkError("refusing to publish: the watermark verification does not belong to this file")
    return verification
