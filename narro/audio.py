"""Pure audio transforms and measures: samples in, samples out. No files here.

Loudness follows ITU-R BS.1770 (pyloudnorm); true peak is measured on 4x oversampled audio,
as BS.1770 annex 2 describes, because sample peaks miss the overs a codec will produce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyloudnorm
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import resample_poly

from narro.errors import AudioError
from narro.post import PostSettings as PostSettings  # its home is narro.post; imported from here too

OVERSAMPLE = 4
# pyloudnorm needs at least one 400 ms gating block.
MIN_MEASURABLE_S = 0.4


@dataclass(frozen=True)
class LevelReport:
    integrated_lufs: float
    true_peak_dbtp: float
    duration_s: float


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def gain_to_db(gain: float) -> float:
    return float(20.0 * np.log10(max(gain, 1e-12)))


def true_peak(samples: np.ndarray) -> float:
    """Linear true peak: the largest magnitude of the 4x oversampled signal."""
    if samples.size == 0:
        return 0.0
    return float(np.max(np.abs(resample_poly(samples, OVERSAMPLE, 1))))


def integrated_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """BS.1770 integrated loudness in LUFS; -inf for silence."""
    if len(samples) < MIN_MEASURABLE_S * sample_rate:
        padded = np.zeros(int(MIN_MEASURABLE_S * sample_rate) + 1, dtype=np.float64)
        padded[: len(samples)] = samples
        samples = padded
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(samples.astype(np.float64)))


def measure(samples: np.ndarray, sample_rate: int) -> LevelReport:
    return LevelReport(
        integrated_lufs=integrated_loudness(samples, sample_rate),
        true_peak_dbtp=gain_to_db(true_peak(samples)),
        duration_s=len(samples) / sample_rate,
    )


def speech_bounds(samples: np.ndarray, sample_rate: int, floor_db: float) -> tuple[int, int]:
    """Sample range [start, end) that trim_silence keeps (before padding)."""
    frame = max(1, sample_rate // 100)  # 10 ms
    frames = len(samples) // frame
    if frames == 0:
        raise AudioError("clip is shorter than 10 ms")
    rms = np.sqrt(np.mean(samples[: frames * frame].reshape(frames, frame) ** 2, axis=1) + 1e-20)
    level_db = 20 * np.log10(rms)
    loud = np.flatnonzero(level_db > level_db.max() - floor_db)
    if rms.max() < 1e-5 or loud.size == 0:
        raise AudioError("clip is silent")
    # Keep one frame either side so soft onsets and decays (s, f, h) are not clipped.
    start = max(0, (loud[0] - 1) * frame)
    end = min(len(samples), (loud[-1] + 2) * frame)
    return int(start), int(end)


def trim_silence(samples: np.ndarray, sample_rate: int, floor_db: float, pad_s: float) -> np.ndarray:
    """Cut leading and trailing silence, then pad both ends with exactly `pad_s` of silence.

    Timings on the input move by `pad_s - speech_bounds(...)[0] / sample_rate` seconds.
    """
    start, end = speech_bounds(samples, sample_rate, floor_db)
    pad = np.zeros(int(round(pad_s * sample_rate)), dtype=np.float32)
    return np.concatenate([pad, samples[start:end].astype(np.float32), pad])


def peak_envelope(samples: np.ndarray) -> np.ndarray:
    """Per-sample true-peak magnitude: the largest oversampled value around each sample."""
    oversampled = np.abs(resample_poly(samples, OVERSAMPLE, 1))
    return oversampled[: len(samples) * OVERSAMPLE].reshape(len(samples), OVERSAMPLE).max(axis=1)


def limit_true_peak(
    samples: np.ndarray,
    sample_rate: int,
    ceiling_dbtp: float,
    envelope: np.ndarray | None = None,
    window_s: float = 0.01,
) -> np.ndarray:
    """Look-ahead peak limiter: smooth gain reduction so the true peak stays under the ceiling.

    The gain at each sample is the minimum needed over a window around it, then averaged over
    half that window, so it ramps down before a peak and back up after it without clicks and
    never exceeds what any sample in reach needs. `envelope` (from peak_envelope, scaled like
    `samples`) saves recomputing the oversampling when the caller tries several gains.
    """
    limited, peak = _limit(samples, sample_rate, ceiling_dbtp, envelope, window_s)
    return _within_ceiling(limited, peak, ceiling_dbtp)


def _limit(
    samples: np.ndarray, sample_rate: int, ceiling_dbtp: float, envelope: np.ndarray | None, window_s: float = 0.01
) -> tuple[np.ndarray, float]:
    """The limiter, also returning its output's true peak as estimated from the envelope."""
    ceiling = db_to_gain(ceiling_dbtp)
    if envelope is None:
        envelope = peak_envelope(samples)
    needed = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
    if needed.min() >= 1.0:
        return samples, float(envelope.max(initial=0.0))
    half = max(1, int(window_s * sample_rate))
    gain = minimum_filter1d(needed, size=2 * half + 1, mode="nearest")
    gain = uniform_filter1d(gain, size=half + 1, mode="nearest")
    return (samples * gain).astype(np.float32), float(np.max(envelope * gain))


def _within_ceiling(samples: np.ndarray, peak: float, ceiling_dbtp: float) -> np.ndarray:
    """Overs that survive the limiter by a hair (its gain is smoothed) are trimmed uniformly."""
    ceiling = db_to_gain(ceiling_dbtp)
    return (samples * (ceiling / peak)).astype(np.float32) if peak > ceiling else samples


def normalise_loudness(
    samples: np.ndarray, sample_rate: int, target_lufs: float, ceiling_dbtp: float, tolerance_lu: float = 0.2
) -> np.ndarray:
    """Bring integrated loudness to the target with the true peak under the ceiling.

    Limiting eats some of the gain, and more the harder it works, so the gain is found by
    the secant method on (gain, resulting loudness): three or four passes for speech. A take
    too peaky to reach the target comes back as close as the limiter allows.
    """
    measured = integrated_loudness(samples, sample_rate)
    if not np.isfinite(measured):
        raise AudioError("clip is silent: loudness cannot be measured")
    gain_db = target_lufs - measured
    envelope = peak_envelope(samples)
    previous: tuple[float, float] | None = None
    best: tuple[float, np.ndarray] = (float("inf"), samples)
    for _ in range(8):
        gain = db_to_gain(gain_db)
        out = limit_true_peak((samples * gain).astype(np.float32), sample_rate, ceiling_dbtp, envelope * gain)
        result = integrated_loudness(out, sample_rate)
        error = target_lufs - result
        if abs(error) < abs(best[0]):
            best = (error, out)
        if abs(error) <= tolerance_lu:
            return out
        slope = 1.0
        if previous is not None and abs(gain_db - previous[0]) > 1e-6:
            slope = max(0.05, (result - previous[1]) / (gain_db - previous[0]))
        previous = (gain_db, result)
        # Past about 12 dB of gain reduction the limiter is distorting speech; stop there.
        gain_db = min(gain_db + error / slope, target_lufs - measured + 12.0)
    # Best effort: the caller checks the published file against its tolerance.
    return best[1]


def finish(samples: np.ndarray, sample_rate: int, settings: PostSettings, headroom_db: float = 0.0) -> np.ndarray:
    """Trim, pad, normalise loudness and limit peaks: the whole pre-encode chain."""
    trimmed = trim_silence(samples, sample_rate, settings.silence_floor_db, settings.pad_s)
    return normalise_loudness(trimmed, sample_rate, settings.target_lufs, settings.true_peak_dbtp - headroom_db)
