"""narro's audio watermark: a 32-bit payload hidden in every published clip, found again blind.

`embed` writes the current version (VERSION; `v2.py`: a spectral-shape pattern found again after
re-timing, pitch shifts, codecs, band limits, echo and cuts); `detect` reads version 2, then
version 1 (`v1.py`, the first mark narro published), and says which it found. The payload and
its channel code are in `payload.py`. VERSION is part of every clip's content key (narro.plan):
a new version re-renders every clip, by design, so no clip keeps an old mark unknowingly.

The pipeline embeds before loudness normalisation and the true-peak limiter, encodes, and calls
`verify_encoded` on the decoded MP3; only the `Verification` it returns lets `publish` write the
file (`require_verified`). That check knows nothing was re-timed and tries scale 1 only, and it
knows the payload: a clip of one or two words (about one 1.1 s period of tiles, 3 or fewer per
coded bit) is too short for version 2's 108 coded bits to be read blind, so the check tests the
expected payload directly, pilot and data tiles together (`v2.Found.confidence_for`, threshold
Z_MIN_KNOWN). Strength is not what such clips lack: short clips already get a mark up to
MAX_BOOST times stronger; their tiles are too few for 48 bits read without knowing them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import resample_poly

from narro.errors import WatermarkError
from narro.watermark_version import VERSION

from . import v1, v2
from .payload import DEFAULT_ORG, Payload, clip_tag, coded, decode, payload_for

__all__ = ["DEFAULT_ORG", "SAMPLE_RATE", "VERSION", "Detection", "Payload", "Verification", "clip_tag", "detect",
           "detect_among", "embed", "payload_for", "require_verified", "verify_encoded"]

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


def embed(samples: np.ndarray, sample_rate: int, payload: Payload, version: int | None = None) -> np.ndarray:
    """The clip with the mark added (same length, same rate): version VERSION unless told."""
    x = np.asarray(samples, dtype=np.float32)
    work = _to_rate(x, sample_rate).astype(np.float64)
    delta = _resample(_WRITERS[version or VERSION](work, payload) - work, SAMPLE_RATE, sample_rate)
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


def detect_among(samples: np.ndarray, sample_rate: int, candidates: Iterable[Payload]) -> Detection:
    """Which of `candidates` the clip carries (version 2, as published), for clips too short for
    their payload to be read blind: the best `Found.confidence_for` if it reaches Z_MIN_KNOWN
    (which keeps chance matches rare for up to ~10^5 candidates)."""
    published = v2.detect(_to_rate(samples, sample_rate), search=False)
    if published is None:
        return Detection(None, 0.0, 0.0, 0.0)
    best = max(candidates, key=published.confidence_for, default=None)
    if best is None or published.confidence_for(best) < v2.Z_MIN_KNOWN:
        return _judge(published, np.inf)
    return _known(published, best)


def _known(published: v2.Found, payload: Payload) -> Detection:
    bits = 2.0 * coded(payload) - 1.0
    seen = published.soft != 0
    agreement = float(np.mean(np.sign(published.soft[seen]) == bits[seen]))
    return Detection(payload, round(published.confidence_for(payload), 2), round(agreement, 3), published.offset_s,
                     version=2)


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
    version: int
    seal: str = field(repr=False)

    def as_dict(self) -> dict[str, object]:
        return {"version": self.version, **self.payload.as_dict(), "confidence": self.confidence,
                "bit_agreement": self.bit_agreement, "verified_on": "decoded mp3"}


def _seal(digest: str, payload: Payload) -> str:
    return hmac.new(_SEAL_KEY, f"{digest}:{payload.hex()}".encode(), hashlib.sha256).hexdigest()


def verify_encoded(encoded: bytes, decoded: np.ndarray, sample_rate: int, expected: Payload,
                   search: bool = False, version: int | None = None) -> Verification:
    """Check that the encoded file (whose decoded PCM is `decoded`) carries `expected` in the
    version `embed` wrote (VERSION unless told). `search` False tries scale 1 only: right after
    encoding nothing was re-timed. A version-2 clip too short for its payload to be read blind (one word) passes if it carries
    `expected` with `Found.confidence_for` >= Z_MIN_KNOWN.

    Raises WatermarkError when the mark is missing or says something else.
    """
    work = _to_rate(decoded, sample_rate)
    if (version or VERSION) == 2:
        found = _verify_v2(work, expected, search)
    else:
        payload, z, agreement, offset_s = v1.detect(work)
        found = Detection(payload, round(z, 2), round(agreement, 3), round(offset_s, 3), version=1 if payload else None)
    if found.payload != expected:
        what = f"payload {found.payload.hex()}" if found.payload else "no mark"
        raise WatermarkError(f"watermark not verified after encoding: found {what} (confidence {found.confidence}), "
                             f"expected payload {expected.hex()}")
    digest = hashlib.sha256(encoded).hexdigest()
    return Verification(digest, expected, found.confidence, found.bit_agreement, version or VERSION,
                        _seal(digest, expected))


def _verify_v2(work: np.ndarray, expected: Payload, search: bool) -> Detection:
    """What version 2 reads in `work`, or, when it reads nothing blind, `expected` if the clip
    carries it strongly enough (with that test's confidence and bit agreement)."""
    published = v2.detect(work, search=False)
    found = _judge(published, v2.Z_MIN_EXACT)
    if search and found.payload != expected:
        found = _judge(v2.detect(work, search=True), v2.Z_MIN)
    if found.payload is not None or published is None or published.confidence_for(expected) < v2.Z_MIN_KNOWN:
        return found
    return _known(published, expected)


def require_verified(verification: object, encoded: bytes) -> Verification:
    """The verification of exactly these bytes, or WatermarkError: the gate before any publish."""
    if not isinstance(verification, Verification):
        raise WatermarkError("refusing to publish a clip whose watermark was not verified")
    digest = hashlib.sha256(encoded).hexdigest()
    sealed = _seal(digest, verification.payload)
    if verification.mp3_sha256 != digest or not hmac.compare_digest(verification.seal, sealed):
        raise WatermarkError("refusing to publish: the watermark verification does not belong to this file")
    return verification
