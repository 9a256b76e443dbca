"""The speaker reference that prompts the quality tier: checked, trimmed, transcribed, encoded once.

`prepare_reference(path, transcript, codec, transcribe)` reads any audio ffmpeg decodes and
refuses it, with a one-line `ReferenceAudioError`, when it is

- silent: its loudest frame is below `SILENT_DBFS`;
- clipped: `CLIP_MIN_RUNS` or more (and `CLIP_RUNS_PER_S` per second of sound) runs of three or
  more consecutive samples at full scale, counted per channel at the file's own rate (resampling
  or mixing channels would smooth the flat tops away). MP3 smears clipping, so in an MP3 only
  heavy clipping is caught;
- mostly non-speech: fewer than `MIN_VOICED_RATIO` of its active frames are voiced;
- shorter than `MIN_SPEECH_S` of speech.

The voice activity detector is deliberately simple (16 kHz, 40 ms windows every 20 ms):

- a frame is *active* when its level is within `ACTIVE_BELOW_PEAK_DB` of the loud frames (99th
  percentile) and `ACTIVE_ABOVE_FLOOR_DB` above the noise floor (10th percentile), so stationary
  noise, hum or a steady tone is never active;
- an active frame is *voiced* when its pre-emphasised autocorrelation, corrected for the window
  (Boersma 1993), peaks above `VOICED_PERIODICITY` at a lag of a 60-400 Hz pitch. Measured here:
  piper speech is voiced in 38-73% of its active frames; white, pink and brown noise in 0%;
- speech lasts as long as its active frames once gaps shorter than `PAUSE_S` are closed; those
  closed runs are the speech regions, and the gaps between them are the pauses where a long
  reference may be cut.

A reference whose speech spans more than `MAX_WINDOW_S` is trimmed to the window of
`MIN_WINDOW_S`-`MAX_WINDOW_S` that starts and ends in pauses and holds the most voiced frames:
open codec LMs drop words with references longer than about 15-20 s. A trimmed reference needs
speech recognition (`transcribe`): a transcript given for the whole file is cut to the words the
recogniser heard in the window (aligned as narro.wer aligns, so '75' matches 'seventy-five'); with
no transcript, the recogniser's text is the transcript.

The kept audio is resampled to the codec's rate, brought to `REFERENCE_LUFS` (the loudness
training audio is brought to, by `codec_input`) and encoded once. References are cached per
worker process, keyed by the file's sha256, the codec's identity and the given transcript.
"""

from __future__ import annotations

import json
import math
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
from scipy.signal import lfilter, resample_poly

from narro import wer
from narro.audio import normalise_loudness
from narro.encode import ffmpeg_binary
from narro.engines.codec_lm.codec import Codec
from narro.engines.codec_lm.digest import files_sha256
from narro.errors import AudioError, ReferenceAudioError
from narro.text import normalise

MIN_SPEECH_S = 3.0
MIN_WINDOW_S, MAX_WINDOW_S = 10.0, 15.0
SILENT_DBFS = -60.0
CLIP_MIN_RUNS, CLIP_RUNS_PER_S, CLIP_RUN_SAMPLES, FULL_SCALE = 3, 0.25, 3, 0.99
MIN_VOICED_RATIO = 0.2
ACTIVE_BELOW_PEAK_DB, ACTIVE_ABOVE_FLOOR_DB = 30.0, 10.0
VOICED_PERIODICITY = 0.5
PAUSE_S = 0.25
"""Gaps shorter than this are inside speech (stop closures, word boundaries); longer ones are pauses."""
EDGE_PAD_S = 0.15
"""Silence kept before the first and after the last word of the kept audio."""
REFERENCE_LUFS, REFERENCE_PEAK_DBTP = -20.0, -1.5
MIN_HEARD_MATCH = 0.5
"""Share of the recogniser's words that must match the given transcript for it to be cut to a window."""

VAD_RATE, HOP_S, WINDOW_S = 16000, 0.02, 0.04
PITCH_HZ = (60.0, 400.0)

Transcribe = Callable[[np.ndarray, int], str]
"""Speech recognition: mono float samples and their rate in, text out (narro.asr)."""


@dataclass(frozen=True)
class Reference:
    """A speaker prompt ready for the model."""

    codes: np.ndarray
    """Codec tokens, int64 [codebooks, frames]."""
    text: str
    """What the kept audio says, normalised like narration text."""
    sha256: str
    """Of the reference file as given (before trimming): part of every content key."""
    duration_s: float
    """Of the kept (possibly trimmed) audio."""


@dataclass(frozen=True)
class Activity:
    """Per-frame voice activity of a mono signal (HOP_S frames)."""

    active: np.ndarray
    voiced: np.ndarray
    regions: list[tuple[int, int]]
    """Speech regions [start, end) in frames: active runs with gaps under PAUSE_S closed."""

    @property
    def speech_s(self) -> float:
        return sum(end - start for start, end in self.regions) * HOP_S


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes (cached per process while the file is unchanged)."""
    return files_sha256([path])


def read_channels(path: Path) -> tuple[np.ndarray, int]:
    """Any audio ffmpeg reads, at its own rate and channels: float32 [channels, samples] and the rate."""
    try:
        done = subprocess.run(
            [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
             "-map_metadata", "-1", "-fflags", "+bitexact", "-c:a", "pcm_f32le", "-f", "wav", "pipe:1"],
            capture_output=True, check=False, timeout=600,
        )
    except subprocess.TimeoutExpired:
        raise ReferenceAudioError(f"{path}: ffmpeg timed out decoding it") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = detail[-1] if detail else "no detail"
        raise ReferenceAudioError(f"{path}: not an audio file ffmpeg can read ({reason})")
    channels, rate, pcm = _parse_wav(done.stdout)
    samples = np.frombuffer(pcm[: len(pcm) // (4 * channels) * 4 * channels], dtype="<f4")
    if samples.size == 0:
        raise ReferenceAudioError(f"{path}: contains no audio")
    return samples.reshape(-1, channels).T.copy(), rate


def _parse_wav(data: bytes) -> tuple[int, int, bytes]:
    """Channels, rate and PCM of ffmpeg's piped WAV (its size fields are placeholders: walk the chunks)."""
    offset, channels, rate = 12, 0, 0
    while offset + 8 <= len(data):
        name, size = data[offset: offset + 4], int.from_bytes(data[offset + 4: offset + 8], "little")
        if name == b"fmt ":
            channels = int.from_bytes(data[offset + 10: offset + 12], "little")
            rate = int.from_bytes(data[offset + 12: offset + 16], "little")
        elif name == b"data":
            if not channels:
                break
            return channels, rate, data[offset + 8:]
        offset += 8 + size + (size & 1)
    raise AudioError("ffmpeg's WAV output has no fmt or data chunk")


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples.astype(np.float32)
    g = math.gcd(rate, target)
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def clipped_runs(channels: np.ndarray) -> int:
    """Runs of CLIP_RUN_SAMPLES or more consecutive samples at full scale, over all channels."""
    runs = 0
    for channel in channels:
        hot = np.concatenate([[0], (np.abs(channel) >= FULL_SCALE).astype(np.int8), [0]])
        edges = np.diff(hot)
        lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        runs += int(np.count_nonzero(lengths >= CLIP_RUN_SAMPLES))
    return runs


def activity(samples: np.ndarray, rate: int) -> Activity:
    """Voice activity of mono samples (see the module docstring for the method)."""
    audio = _resample(samples, rate, VAD_RATE)
    hop, window = int(HOP_S * VAD_RATE), int(WINDOW_S * VAD_RATE)
    count = max(0, (len(audio) - window) // hop + 1)
    if count == 0:
        empty = np.zeros(0, dtype=bool)
        return Activity(empty, empty, [])
    index = np.arange(window)[None, :] + hop * np.arange(count)[:, None]
    level_db = 10 * np.log10(np.mean(audio[index] ** 2, axis=1) + 1e-20)
    threshold = max(np.percentile(level_db, 99) - ACTIVE_BELOW_PEAK_DB,
                    np.percentile(level_db, 10) + ACTIVE_ABOVE_FLOOR_DB, SILENT_DBFS)
    active = level_db > threshold

    # Pre-emphasis whitens coloured noise (brown noise is otherwise as periodic as a vowel).
    frames = lfilter([1.0, -0.95], [1.0], audio)[index]
    frames -= frames.mean(axis=1, keepdims=True)
    taper = np.hanning(window)
    size = 2 * window
    correlation = np.fft.irfft(np.abs(np.fft.rfft(frames * taper, size)) ** 2)[:, :window]
    taper_correlation = np.fft.irfft(np.abs(np.fft.rfft(taper, size)) ** 2)[:window]
    correlation /= np.maximum(taper_correlation / taper_correlation[0], 1e-3)
    low, high = int(VAD_RATE / PITCH_HZ[1]), int(VAD_RATE / PITCH_HZ[0])
    periodicity = correlation[:, low:high].max(axis=1) / np.maximum(correlation[:, 0], 1e-20)
    voiced = active & (periodicity > VOICED_PERIODICITY)
    return Activity(active, voiced, _regions(active))


def _regions(active: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts, ends = list(np.flatnonzero(edges == 1)), list(np.flatnonzero(edges == -1))
    regions: list[tuple[int, int]] = []
    for start, end in zip(starts, ends, strict=True):
        if regions and (start - regions[-1][1]) * HOP_S < PAUSE_S:
            regions[-1] = (regions[-1][0], int(end))
        else:
            regions.append((int(start), int(end)))
    return regions


def check(path: Path, channels: np.ndarray, found: Activity) -> None:
    """Refuse a reference that cannot prompt a voice, with the reason and what to do."""
    mono = channels.mean(axis=0)
    loudest = float(np.max(np.abs(mono))) if mono.size else 0.0
    if loudest < 10 ** (SILENT_DBFS / 20):
        raise ReferenceAudioError(f"{path}: reference is silent (peak {20 * np.log10(max(loudest, 1e-10)):.0f} dBFS); "
                                  "record the speaker reading a few sentences")
    sound_s = max(float(found.active.sum()) * HOP_S, 1.0)
    runs = clipped_runs(channels)
    if runs >= CLIP_MIN_RUNS and runs >= CLIP_RUNS_PER_S * sound_s:
        raise ReferenceAudioError(f"{path}: reference is clipped ({runs} runs of samples at full scale); "
                                  "record it again with less input gain")
    active = int(found.active.sum())
    voiced_ratio = float(found.voiced.sum()) / active if active else 0.0
    if voiced_ratio < MIN_VOICED_RATIO:
        raise ReferenceAudioError(f"{path}: reference is mostly non-speech ({voiced_ratio:.0%} of its sound is "
                                  f"voiced, speech is at least {MIN_VOICED_RATIO:.0%}); "
                                  "give a clean recording of speech")
    if found.speech_s < MIN_SPEECH_S:
        raise ReferenceAudioError(f"{path}: reference has {found.speech_s:.1f} s of speech, "
                                  f"at least {MIN_SPEECH_S:.0f} s "
                                  "is needed; record a longer reference")


def best_window(found: Activity, path: Path) -> tuple[int, int, bool]:
    """Frames [start, end) of the speech to keep, and whether that trims speech away.

    Speech spanning at most MAX_WINDOW_S is kept whole. Longer speech is cut at pauses to the
    MIN_WINDOW_S-MAX_WINDOW_S window with the most voiced frames (the longer one on a tie).
    """
    regions = found.regions
    if _span_s(regions[0][0], regions[-1][1]) <= MAX_WINDOW_S:
        return regions[0][0], regions[-1][1], False
    voiced_before = np.concatenate([[0], np.cumsum(found.voiced)])
    best: tuple[int, int, int] | None = None
    for first, (start, _) in enumerate(regions):
        for _, end in regions[first:]:
            length_s = _span_s(start, end) + 2 * EDGE_PAD_S  # what is kept, pauses at both ends included
            if length_s > MAX_WINDOW_S:
                break
            if length_s >= MIN_WINDOW_S:
                score = int(voiced_before[end] - voiced_before[start])
                if best is None or (score, end - start) > (best[0], best[2] - best[1]):
                    best = (score, start, end)
    if best is None:
        raise ReferenceAudioError(f"{path}: reference has {found.speech_s:.0f} s of speech with no pause to cut a "
                                  f"{MIN_WINDOW_S:.0f}-{MAX_WINDOW_S:.0f} s excerpt at; give an excerpt of at most "
                                  f"{MAX_WINDOW_S:.0f} s")
    return best[1], best[2], True


def _span_s(start: int, end: int) -> float:
    """Seconds of audio that frames [start, end) cover."""
    return (end - start - 1) * HOP_S + WINDOW_S


def match_transcript(transcript: str, heard: str) -> str | None:
    """The run of `transcript` that `heard` (ASR of an excerpt) says, or None if they do not match.

    Words the recogniser got wrong at either end of the excerpt still count: the run is widened
    by as many words as the recogniser heard before its first and after its last match.
    """
    words = transcript.split()
    keys: list[str] = []
    owner: list[int] = []
    for index, word in enumerate(words):
        for key in wer.normalise(word):
            keys.append(key)
            owner.append(index)
    spoken = wer.normalise(heard)
    blocks = [b for b in SequenceMatcher(None, keys, spoken, autojunk=False).get_matching_blocks() if b.size]
    if not spoken or sum(b.size for b in blocks) < MIN_HEARD_MATCH * len(spoken):
        return None
    first, last = blocks[0], blocks[-1]
    start = owner[max(0, first.a - first.b)]
    end = owner[min(len(keys), last.a + last.size + len(spoken) - last.b - last.size) - 1]
    return " ".join(words[start: end + 1])


def codec_input(samples: np.ndarray, rate: int, codec_rate: int) -> np.ndarray:
    """Mono audio as the codec is given it, for references and training alike: its rate, REFERENCE_LUFS."""
    resampled = _resample(samples, rate, codec_rate)
    try:
        return normalise_loudness(resampled, codec_rate, REFERENCE_LUFS, REFERENCE_PEAK_DBTP)
    except AudioError as error:
        raise ReferenceAudioError(str(error)) from error


def codec_identity(codec: Codec) -> str:
    return json.dumps(codec.identity, sort_keys=True, default=str)


_cache: dict[tuple[str, str, str | None], Reference] = {}
_cache_lock = threading.Lock()


def prepare_reference(path: Path, transcript: str | None, codec: Codec,
                      transcribe: Transcribe | None = None) -> Reference:
    """The checked, trimmed, transcribed and encoded reference; cached per worker process."""
    path = Path(path)
    try:
        sha256 = file_sha256(path)
    except OSError as error:
        raise ReferenceAudioError(f"{path}: cannot read the reference: {error.strerror or error}") from error
    key = (sha256, codec_identity(codec), transcript)
    with _cache_lock:  # one encode per worker even when several clips ask at once
        if key not in _cache:
            _cache[key] = _prepare(path, sha256, transcript, codec, transcribe)
        return _cache[key]


def _prepare(path: Path, sha256: str, transcript: str | None, codec: Codec,
             transcribe: Transcribe | None) -> Reference:
    channels, rate = read_channels(path)
    mono = channels.mean(axis=0)
    found = activity(mono, rate)
    check(path, channels, found)
    start, end, trimmed = best_window(found, path)
    first = int(start * HOP_S * rate)
    last = first + int(_span_s(start, end) * rate)
    pad = int(EDGE_PAD_S * rate)
    kept = mono[max(0, first - pad): min(len(mono), last + pad)]

    if trimmed or transcript is None:
        if transcribe is None:
            why = (f"is {len(mono) / rate:.0f} s long and is trimmed to {MAX_WINDOW_S:.0f} s, which needs speech "
                   "recognition to cut its transcript" if trimmed else "has no transcript")
            raise ReferenceAudioError(f"{path}: reference {why}; enable ASR or give a reference of at most "
                                      f"{MAX_WINDOW_S:.0f} s with its transcript")
        heard = transcribe(kept, rate).strip()
        if transcript is not None:
            cut = match_transcript(transcript, heard)
            if cut is None:
                raise ReferenceAudioError(f"{path}: the given transcript does not match the reference (speech "
                                          f"recognition heard: '{heard[:80]}'); correct reference_text")
            transcript = cut
        else:
            transcript = heard
    text = normalise(transcript)
    if not text:
        raise ReferenceAudioError(f"{path}: reference transcript is empty; give reference_text")
    audio = codec_input(kept, rate, codec.sample_rate)
    codes = np.asarray(codec.encode(audio), dtype=np.int64)
    return Reference(codes=codes, text=text, sha256=sha256, duration_s=len(audio) / codec.sample_rate)
