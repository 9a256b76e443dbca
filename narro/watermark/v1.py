"""Version 1 of the mark: still read, so clips published before version 2 keep verifying.

Spread spectrum in the short-time Fourier domain, informed embedding. At 22050 Hz, 1024-sample
sqrt-Hann frames with a 512-sample hop; 20 bands of 12 bins cover 344-5512 Hz. Two frames make
a slot (46 ms), 32 slots a period (1.49 s); a period holds 640 tiles, 4 per coded bit and 208
known pilot tiles, each a ±1 chip on a pseudo-random unit carrier per cell, embedded at
ALPHA x the host's own magnitude with the host's contribution cancelled. The detector whitens
the cells, folds the clip modulo the period and finds the pilot at every sample lag by one
FFT; it survives codecs, resampling, gain and cuts of the ends, but not a change of speed or
pitch (the phase-coherent carrier needs the exact time and frequency grid): version 2's reason.
Nothing here may change: it defines what version-1 marks are.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .payload import CODED_BITS, Payload, coded, decode

SAMPLE_RATE = 22050
NFFT, HOP = 1024, 512
N_BANDS, BAND_BINS = 20, 12
_BAND = slice(16, 16 + N_BANDS * BAND_BINS)
SLOT_FRAMES, PERIOD_SLOTS = 2, 32
PERIOD_FRAMES = SLOT_FRAMES * PERIOD_SLOTS
ALPHA = 0.12
Z_MIN = 7.0
"""Pilot confidence below which nothing is reported, whatever the CRC says."""
SHORT_CLIP_S, MAX_BOOST = 8.0, 2.5
EMBED_PASSES = 3
MAX_BETA = 0.25
WHITEN_POWER = 0.7
SILENCE_DB = 40.0
TILES_PER_BIT = 4


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"narro-{name}-v1".encode()).digest()[:8], "big"))


def _layout() -> tuple[np.ndarray, np.ndarray]:
    """Per tile (slot, band): its chip (±1) and what it carries (-1 pilot, else a coded-bit index)."""
    rng = _rng("watermark")
    tiles = PERIOD_SLOTS * N_BANDS
    owner = np.full(tiles, -1)
    data = rng.permutation(tiles)[: CODED_BITS * TILES_PER_BIT]
    owner[data] = np.repeat(np.arange(CODED_BITS), TILES_PER_BIT)
    chips = rng.choice([-1.0, 1.0], size=tiles)
    return chips.reshape(PERIOD_SLOTS, N_BANDS), owner.reshape(PERIOD_SLOTS, N_BANDS)


_CHIPS, _OWNER = _layout()
_PILOT_F = np.repeat(np.where(_OWNER < 0, _CHIPS, 0.0), SLOT_FRAMES, axis=0)
_CHIPS_F = np.repeat(_CHIPS, SLOT_FRAMES, axis=0)
_OWNER_F = np.repeat(_OWNER, SLOT_FRAMES, axis=0)
_CARRIER = np.exp(2j * np.pi * _rng("carrier").random((PERIOD_FRAMES, N_BANDS * BAND_BINS)))


def _window() -> np.ndarray:
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(NFFT) / NFFT)).astype(np.float32)


def _frames(samples: np.ndarray, start: int = 0) -> np.ndarray:
    usable = samples[start:]
    count = max(0, (len(usable) - NFFT) // HOP + 1)
    if count == 0:
        return np.zeros((0, NFFT), dtype=np.float32)
    return np.lib.stride_tricks.sliding_window_view(usable, NFFT)[::HOP][:count] * _window()


def _overlap_add(frames: np.ndarray, length: int, circular: bool = False) -> np.ndarray:
    """Inverse of _frames for sqrt-Hann frames at 50% overlap (frames already windowed)."""
    out = np.zeros((len(frames) + 1) * HOP, dtype=np.float64)
    halves = out.reshape(-1, HOP)
    halves[:-1] += frames[:, :HOP]
    halves[1:] += frames[:, HOP:]
    if circular:
        out[:HOP] += out[len(frames) * HOP:]
        return out[: len(frames) * HOP]
    return np.pad(out, (0, max(0, length - len(out))))[:length]


def _tile_values(payload: Payload) -> np.ndarray:
    """Per (period frame, band): +chip on pilot tiles, chip × (±1 coded bit) on data tiles."""
    bits = 2.0 * coded(payload) - 1.0
    return np.where(_OWNER_F < 0, 1.0, bits[np.maximum(_OWNER_F, 0)]) * _CHIPS_F


def _pilot_waveform() -> np.ndarray:
    """One period of the pilot as a time signal: what the synchroniser looks for."""
    spectrum = np.zeros((PERIOD_FRAMES, NFFT // 2 + 1), dtype=complex)
    spectrum[:, _BAND] = _CARRIER * np.repeat(_PILOT_F, BAND_BINS, axis=1)
    frames = np.fft.irfft(spectrum, n=NFFT, axis=1) * _window()
    return _overlap_add(frames, PERIOD_FRAMES * HOP, circular=True)


_PILOT_WAVE_FFT = np.fft.rfft(_pilot_waveform())


def _active(magnitude: np.ndarray) -> np.ndarray:
    energy = (magnitude ** 2).sum(axis=1)
    return energy > max(energy.max(initial=0.0) * 10 ** (-SILENCE_DB / 10), 1e-9)


def embed(work: np.ndarray, payload: Payload) -> np.ndarray:
    """The version-1 mark added to `work` (22050 Hz): kept so tests and the benchmark can make
    version-1 clips exactly as narro published them."""
    padded = np.concatenate([np.zeros(HOP), work.astype(np.float64), np.zeros(NFFT + HOP)])
    original = np.fft.rfft(_frames(padded), axis=1)
    count = len(original)
    carrier = _CARRIER[np.arange(count) % PERIOD_FRAMES]
    magnitude = np.abs(original[:, _BAND])
    active = _active(magnitude)
    slots = count // SLOT_FRAMES + 1
    pad = slots * SLOT_FRAMES - count

    def per_tile(cells: np.ndarray) -> np.ndarray:
        cells = np.pad(cells * active[:, None], ((0, pad), (0, 0)))
        return cells.reshape(slots, SLOT_FRAMES, N_BANDS, BAND_BINS).sum(axis=(1, 3))

    reach = per_tile(np.maximum(magnitude, 1e-12) ** (1 - WHITEN_POWER))
    speech_s = active.sum() * HOP / SAMPLE_RATE
    boost = float(np.clip(np.sqrt(SHORT_CLIP_S / max(speech_s, 1e-3)), 1.0, MAX_BOOST))
    target = boost * ALPHA * _tile_values(payload)[::SLOT_FRAMES][np.arange(slots) % PERIOD_SLOTS] * reach
    beta = np.zeros((slots, N_BANDS))
    marked = padded
    for _ in range(EMBED_PASSES):
        band = np.fft.rfft(_frames(marked), axis=1)[:, _BAND]
        statistic = per_tile(np.real(band * np.conj(carrier)) / np.maximum(np.abs(band), 1e-12) ** WHITEN_POWER)
        beta = np.clip(beta + (target - statistic) / np.maximum(reach, 1e-12), -MAX_BETA * boost, MAX_BETA * boost)
        cell_beta = np.repeat(np.repeat(beta, SLOT_FRAMES, axis=0)[:count], BAND_BINS, axis=1)
        mark = np.zeros_like(original)
        mark[:, _BAND] = cell_beta * magnitude * carrier * active[:, None]
        marked = padded + _overlap_add(np.fft.irfft(mark, n=NFFT, axis=1) * _window(), len(padded))
    return marked[HOP: HOP + len(work)]


def _whiten(samples: np.ndarray) -> np.ndarray:
    padded = np.concatenate([np.zeros(HOP), samples.astype(np.float64), np.zeros(NFFT + HOP)])
    spectrum = np.fft.rfft(_frames(padded), axis=1)
    band = spectrum[:, _BAND]
    magnitude = np.abs(band)
    white = np.zeros_like(spectrum)
    white[:, _BAND] = np.where(_active(magnitude)[:, None], band / np.maximum(magnitude, 1e-12) ** WHITEN_POWER, 0.0)
    return _overlap_add(np.fft.irfft(white, n=NFFT, axis=1) * _window(), len(padded))[HOP: HOP + len(samples)]


def detect(work: np.ndarray) -> tuple[Payload | None, float, float, float]:
    """(payload or None, pilot z, bit agreement, offset s) for a version-1 mark in `work` (22050 Hz)."""
    period = PERIOD_FRAMES * HOP
    if len(work) < NFFT * 4:
        return None, 0.0, 0.0, 0.0
    white = _whiten(work)
    folded = np.pad(white, (0, (-len(white)) % period)).reshape(-1, period).sum(axis=0)
    corr = np.fft.irfft(np.conj(np.fft.rfft(folded)) * _PILOT_WAVE_FFT, n=period)
    centre = np.median(corr)
    spread = 1.4826 * np.median(np.abs(corr - centre)) + 1e-12
    lag = int(np.argmax(corr))
    z = float((corr[lag] - centre) / spread)
    start = (-lag) % HOP
    spectrum = np.fft.rfft(_frames(work.astype(np.float64), start), axis=1)[:, _BAND]
    magnitude = np.abs(spectrum)
    index = ((start + lag) // HOP + np.arange(len(spectrum))) % PERIOD_FRAMES
    cells = np.real(spectrum * np.conj(_CARRIER[index])) / np.maximum(magnitude, 1e-12) ** WHITEN_POWER
    score = (cells * _active(magnitude)[:, None]).reshape(len(cells), N_BANDS, BAND_BINS).sum(axis=2) * _CHIPS_F[index]
    owner = _OWNER_F[index]
    soft = np.zeros(CODED_BITS)
    np.add.at(soft, owner[owner >= 0], score[owner >= 0])
    payload, agreement = decode(soft)
    offset_s = ((-lag - HOP) % period) / SAMPLE_RATE
    return (payload if z >= Z_MIN else None), z, agreement, offset_s
