"""The steps that turn one clip spec into a published clip: synthesise, post-process, watermark, publish.

Plain functions over plain data, run in order for one clip by narro.clip.render_clip (which adds
the quality gate and the retakes); the Prefect task in tasks/clip.py calls that.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from narro.audio import finish, measure, speech_bounds
from narro.captions import Captions, build, shift
from narro.encode import decode, encode_mp3
from narro.engines import Synthesis, engine_kind
from narro.engines import fallback as fallbacks
from narro.engines.base import WordTiming
from narro.errors import AudioError, WatermarkError
from narro.layout import mp3_record
from narro.plan import ClipSpec, RunContext, effective_spec, text_sha256
from narro.settings import Settings
from narro.store import Store
from narro.watermark import DEFAULT_ORG, Verification, embed, payload_for, require_verified, verify_encoded
from narro.watermark import VERSION as WATERMARK_VERSION

if TYPE_CHECKING:
    from narro.consent import ConsentGate

# The MP3 encoder can push true peaks up a little; start with this much room under the ceiling.
CODEC_HEADROOM_DB = 0.5
# Integrated loudness of the published file may differ from the target by at most this.
LOUDNESS_TOLERANCE_LU = 1.0
# What the encode loop aims for before it accepts a take.
LOUDNESS_AIM_LU = 0.3
# LAME's low-pass takes about this much K-weighted loudness from 22 kHz speech (measured on
# piper takes at 64-128 kbps); aiming this much higher saves a second encode on most clips.
CODEC_LOUDNESS_LOSS_LU = 0.55


@dataclass
class FinishedClip:
    """An encoded clip and the levels measured on its decoded MP3 (what listeners hear)."""

    mp3: bytes
    decoded: np.ndarray
    """The MP3 decoded back to PCM at `sample_rate`: what listeners hear, for checks after encoding."""
    sample_rate: int
    engine: str
    duration_s: float
    loudness_lufs: float
    true_peak_dbtp: float
    synthesis_s: float
    post_s: float
    watermark: Verification | None = None
    """Proof that `mp3` carries the clip's watermark; publish refuses a clip without it."""
    fallback: dict[str, Any] | None = None
    """Set when the fallback voice spoke the clip: from, to and why (narro.engines.fallback)."""
    captions: Captions | None = None
    """Captions on the published timeline (`with_captions`); None when no word timings were had."""
    qa: dict[str, Any] | None = None
    """The quality gate's verdict on this take and the takes before it (narro.heal), for the sidecar."""
    consent: dict[str, Any] | None = None
    """For a cloned voice: its consent record id, expiry and audit entry (narro.consent.Clearance.sidecar)."""


def synthesize(spec: ClipSpec, settings: Settings, gate: ConsentGate | None = None) -> tuple[Synthesis, float]:
    """Speak the spec's text with its engine voice; returns the audio and seconds taken.

    A cloned voice speaks only through the run's consent `gate` (narro.consent; narro.engines.fallback asks it).
    """
    started = time.perf_counter()
    synthesis = fallbacks.synthesize_clip(spec, settings, gate)
    return synthesis, time.perf_counter() - started


def post_process(spec: ClipSpec, synthesis: Synthesis, synthesis_s: float = 0.0,
                 org_id: int = DEFAULT_ORG, watermark_version: int | None = None) -> FinishedClip:
    """Mark (organisation `org_id`: settings.watermark.org_id; version VERSION unless told), trim,
    normalise, limit and encode; then decode and check the post-conditions on the MP3.

    `verify_watermark` then proves the mark survived the encoder.
    """
    started = time.perf_counter()
    settings = spec.post
    headroom, loudness_offset = CODEC_HEADROOM_DB, CODEC_LOUDNESS_LOSS_LU
    # The mark goes in before loudness and limiting, so the limiter keeps it under the ceiling.
    payload = payload_for(spec.content_key, org_id)
    marked = embed(synthesis.samples, synthesis.sample_rate, payload, version=watermark_version)
    # The encoder's low-pass removes a little loudness and adds a little peak; measure the
    # decoded MP3 and correct for both (two passes at most in practice).
    for _ in range(4):
        aimed = replace(settings, target_lufs=settings.target_lufs + loudness_offset)
        finished = finish(marked, synthesis.sample_rate, aimed, headroom_db=headroom)
        mp3 = encode_mp3(finished, synthesis.sample_rate, settings.bitrate_kbps, spec.tags())
        decoded = decode(mp3, synthesis.sample_rate)
        levels = measure(decoded, synthesis.sample_rate)
        overshoot = levels.true_peak_dbtp - settings.true_peak_dbtp
        shortfall = settings.target_lufs - levels.integrated_lufs
        if overshoot <= 0 and abs(shortfall) <= LOUDNESS_AIM_LU:
            break
        headroom += max(0.0, overshoot + 0.1)
        loudness_offset += shortfall
    if overshoot > 0:
        raise AudioError(
            f"true peak {levels.true_peak_dbtp:.2f} dBTP after encoding exceeds the {settings.true_peak_dbtp} dBTP ceiling"
        )
    if abs(levels.integrated_lufs - settings.target_lufs) > LOUDNESS_TOLERANCE_LU:
        raise AudioError(
            f"loudness {levels.integrated_lufs:.1f} LUFS after encoding is off the {settings.target_lufs} LUFS target: "
            f"the take is too peaky to reach it under a {settings.true_peak_dbtp} dBTP ceiling"
        )
    return FinishedClip(
        mp3=mp3,
        decoded=decoded,
        sample_rate=synthesis.sample_rate,
        engine=synthesis.engine,
        duration_s=round(levels.duration_s, 3),
        loudness_lufs=round(levels.integrated_lufs, 2),
        true_peak_dbtp=round(levels.true_peak_dbtp, 2),
        synthesis_s=synthesis_s,
        post_s=time.perf_counter() - started,
        fallback=fallbacks.used(synthesis),
        consent=consent if isinstance(consent := synthesis.details.get("consent"), dict) else None,
    )


def marked_and_verified(spec: ClipSpec, synthesis: Synthesis, synthesis_s: float, org_id: int = DEFAULT_ORG) -> FinishedClip:
    """`post_process` then `verify_watermark`: the finished clip with proof of its mark.

    Version 2 lives in the energy of 400-3600 Hz bands; audio with too little there (a pure tone
    from a test engine, a narrowband signal) cannot carry it, so such a clip carries version 1,
    which the sidecar records and `narro verify` reads. Speech carries version 2.
    """
    clip = post_process(spec, synthesis, synthesis_s, org_id)
    try:
        return verify_watermark(spec, clip, org_id)
    except WatermarkError as current:
        if WATERMARK_VERSION == 1:
            raise
        clip = post_process(spec, synthesis, synthesis_s, org_id, watermark_version=1)
        try:
            return verify_watermark(spec, clip, org_id, watermark_version=1)
        except WatermarkError:
            raise current from None


def verify_watermark(spec: ClipSpec, clip: FinishedClip, org_id: int = DEFAULT_ORG,
                     watermark_version: int | None = None) -> FinishedClip:
    """The clip with proof that its MP3 carries the mark post_process embedded for `org_id`; WatermarkError if not.

    `publish` refuses a clip without this proof. Its time counts as post-processing.
    """
    started = time.perf_counter()
    verification = verify_encoded(clip.mp3, clip.decoded, clip.sample_rate, payload_for(spec.content_key, org_id),
                                  version=watermark_version)
    return replace(clip, watermark=verification, post_s=clip.post_s + time.perf_counter() - started)


def with_captions(spec: ClipSpec, synthesis: Synthesis, clip: FinishedClip, heard: Sequence[WordTiming]) -> FinishedClip:
    """The clip with captions of the script as written, timed on the published audio.

    Times come from the engine's word timings when it gave them (moved: trimming cut the
    lead-in silence and added the pad), else from the words the quality gate's recogniser
    heard in the decoded take (`heard`, already on its timeline). With neither (an engine
    without timings and the ASR check off) the clip has no captions.
    """
    if synthesis.words:
        start, _ = speech_bounds(synthesis.samples, synthesis.sample_rate, spec.post.silence_floor_db)
        words, timing = shift(synthesis.words, spec.post.pad_s - start / synthesis.sample_rate), "engine"
    elif heard:
        words, timing = list(heard), "aligned"
    else:
        return clip
    first, last = speech_bounds(clip.decoded, clip.sample_rate, spec.post.silence_floor_db)
    made = build(spec.script.words(), words, clip.duration_s, timing, (first / clip.sample_rate, last / clip.sample_rate))
    return replace(clip, captions=made)


def sidecar(spec: ClipSpec, clip: FinishedClip, context: RunContext) -> dict[str, Any]:
    """Provenance for one published clip: enough to reproduce and audit it.

    A clip the fallback voice spoke carries that voice's engine and content key, and `fallback`.
    """
    planned_key = spec.content_key
    spec = effective_spec(spec, clip.fallback)
    extra: dict[str, Any] = {}
    if clip.fallback:
        extra["fallback"] = {**clip.fallback, "planned_content_key": planned_key}
    if clip.qa is not None:
        extra["qa"] = clip.qa
    if clip.consent is not None:
        extra["consent"] = clip.consent
    if clip.captions is not None:
        extra["captions"] = {**clip.captions.record(spec.narration_id),
                             "vtt_sha256": hashlib.sha256(clip.captions.vtt()).hexdigest()}
    return {
        **extra,
        "content_key": spec.content_key,
        "course": spec.course,
        "narration_id": spec.narration_id,
        "title": spec.title,
        "text_sha256": text_sha256(spec.text),
        "text": spec.text,  # what the clip says: `narro train` learns from rendered courses
        "voice": spec.voice,
        "tier": spec.tier,
        "engine": {"name": clip.engine, **engine_kind(spec.engine_voice.engine).identity(spec.engine_voice)},
        "post": spec.post.as_dict(),
        "duration_s": clip.duration_s,
        "loudness_lufs": clip.loudness_lufs,
        "true_peak_dbtp": clip.true_peak_dbtp,
        "mp3": mp3_record(clip.mp3, spec.post.bitrate_kbps),
        "manifest": {"path": context.manifest_path, "sha256": context.manifest_sha256},
        "run_id": context.run_id,
        "worker": f"{socket.gethostname()}:{os.getpid()}",  # which process rendered it (cluster mode)
        "rendered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "timings_s": {"synthesis": round(clip.synthesis_s, 3), "post": round(clip.post_s, 3)},
        "watermark": require_verified(clip.watermark, clip.mp3).as_dict(),
        "narro_version": importlib.metadata.version("narro"),
    }


def publish(store: Store, spec: ClipSpec, clip: FinishedClip, context: RunContext) -> dict[str, Any]:
    require_verified(clip.watermark, clip.mp3)  # nothing unverified reaches a store
    record = sidecar(spec, clip, context)
    captions = clip.captions
    store.publish(spec.course, spec.narration_id, clip.mp3, record, captions=captions.vtt() if captions else None,
                  srt=captions.srt() if captions else None)
    return record
