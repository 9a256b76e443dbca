"""narro's audio watermark: a 32-bit payload hidden in every published clip, found again blind.

Design (spread spectrum in the short-time Fourier domain, informed embedding; numpy/scipy only):

* **Grid.** At 22050 Hz, 1024-sample sqrt-Hann frames with a 512-sample hop (perfect
  reconstruction). 20 bands of 12 bins cover 344-5512 Hz: under the low-pass of MP3 at 64 kbps
  and of a 16 kHz resample. Two frames make a slot (46 ms), 32 slots a period (1.49 s); a period
  holds 32 x 20 = 640 tiles and repeats for the whole clip.
* **Payload.** 32 bits (organisation id: 8 bits, clip tag: 24 bits of sha256 over the content
  key) + CRC-16/CCITT = 48 bits, convolutionally encoded (K=7, rate 1/2, generators 171/133
  octal, 6 tail bits) into 108 coded bits, decoded by soft-decision Viterbi. Each coded bit owns
  4 tiles per period, spread over time and frequency by a seeded permutation; the other 208
  tiles are a known pilot. Each tile has a ±1 chip, each cell a pseudo-random unit carrier.
* **Embedding.** Each cell of the band gets the carrier at beta x the host's own magnitude
  there: the mark follows the speech in time and frequency (masked by it), and silence, pauses
  and pads get nothing. Per tile, beta is chosen so the detector's statistic lands on
  ALPHA x chip x bit, *cancelling the host's own contribution* (informed embedding; 3 passes,
  since resynthesis keeps only part of each change); |beta| <= MAX_BETA. Clips with under
  SHORT_CLIP_S of speech get a stronger mark (up to MAX_BOOST x): they have fewer tiles.
  narro embeds before loudness normalisation and the true-peak limiter, so the limiter keeps
  the ceiling; gain changes, trims and the limiter's slow gain do not disturb detection.
* **Detection (blind, self-synchronising).** The received cells are flattened to |cell|**0.7
  (WHITEN_POWER) with silent frames zeroed, resynthesised, folded modulo the period and
  cross-correlated with the pilot at every sample lag (one FFT): any cut of the clip's ends
  is found again. The peak's robust z-score (median/MAD over all 32768 lags) is the
  confidence. At that lag, tile statistics on the embedder's own grid feed the Viterbi
  decoder; a payload counts only if z >= Z_MIN *and* the CRC matches, so unmarked audio must
  clear a ~1e-8 pilot test and a 1/65536 check at once (the benchmark checks 500+ clips).

Changing any constant here changes what is embedded: bump VERSION (it is in the content key and
seeds the patterns, so old and new marks never read as each other).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.signal import resample_poly

from narro.errors import WatermarkError

VERSION = 1
SAMPLE_RATE = 22050
NFFT, HOP = 1024, 512
BIN_LO, BAND_BINS, N_BANDS = 16, 12, 20
SLOT_FRAMES, PERIOD_SLOTS = 2, 32
PERIOD_FRAMES = SLOT_FRAMES * PERIOD_SLOTS
ALPHA = 0.12
"""Log-amplitude step per tile: gains of exp(±ALPHA)."""
Z_MIN = 7.0
"""Pilot confidence below which nothing is reported, whatever the CRC says."""
SHORT_CLIP_S = 8.0
"""Clips with less speech than this get a mark up to MAX_BOOST times stronger (sqrt of the ratio)."""
MAX_BOOST = 2.5
EMBED_PASSES = 3
"""Informed-embedding passes (each re-measures the tiles and corrects toward the target)."""
MAX_BETA = 0.25
"""Largest change per tile, relative to the host's magnitude in each cell."""
WHITEN_POWER = 0.7
"""Detector divides each cell by |cell|**this: 1 is full whitening (best when clean), lower
keeps more weight on loud cells, where the mark is also loud (better under added noise)."""
SILENCE_DB = 40.0
PHASES = (0, 128, 256, 384)
DEFAULT_ORG = 0x6E
"""Organisation id embedded when none is configured ('n' for narro)."""

PAYLOAD_BITS, CRC_BITS, TAIL = 32, 16, 6
_K, _G = 7, (0o171, 0o133)
CODED_BITS = 2 * (PAYLOAD_BITS + CRC_BITS + TAIL)
TILES_PER_BIT = 4


@dataclass(frozen=True)
class Payload:
    """What a mark says: who published it and which clip version it is."""

    org: int
    clip_tag: int

    def as_int(self) -> int:
        return (self.org << 24) | self.clip_tag

    @classmethod
    def from_int(cls, value: int) -> "Payload":
        return cls(org=value >> 24, clip_tag=value & 0xFFFFFF)

    def hex(self) -> str:
        return f"{self.as_int():08x}"

    def as_dict(self) -> dict[str, object]:
        return {"version": VERSION, "payload": self.hex(), "org": self.org, "clip_tag": f"{self.clip_tag:06x}"}


def clip_tag(content_key: str) -> int:
    """24 bits naming one clip version: the head of sha256 over its content key."""
    return int.from_bytes(hashlib.sha256(content_key.encode("ascii")).digest()[:3], "big")


def payload_for(content_key: str, org: int = DEFAULT_ORG) -> Payload:
    if not 0 <= org < 256:
        raise ValueError("organisation id must fit in 8 bits")
    return Payload(org=org, clip_tag=clip_tag(content_key))


@dataclass(frozen=True)
class Detection:
    """What the detector found. `payload` is None unless the pilot and the CRC both agree."""

    payload: Payload | None
    confidence: float
    """Normalised pilot correlation at the best alignment (about N(0,1) on unmarked audio)."""
    bit_agreement: float
    """Share of coded-bit decisions that agree with the decoded payload re-encoded (1.0 = clean)."""
    offset_s: float

    @property
    def present(self) -> bool:
        return self.payload is not None


# --------------------------------------------------------------------------- patterns


def _layout() -> tuple[np.ndarray, np.ndarray]:
    """Per tile (slot, band): its chip (±1) and what it carries (-1 pilot, else a coded-bit index)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"narro-watermark-v{VERSION}".encode()).digest()[:8], "big"))
    tiles = PERIOD_SLOTS * N_BANDS
    owner = np.full(tiles, -1)
    data = rng.permutation(tiles)[: CODED_BITS * TILES_PER_BIT]
    owner[data] = np.repeat(np.arange(CODED_BITS), TILES_PER_BIT)
    chips = rng.choice([-1.0, 1.0], size=tiles)
    return chips.reshape(PERIOD_SLOTS, N_BANDS), owner.reshape(PERIOD_SLOTS, N_BANDS)


_CHIPS, _OWNER = _layout()
_PILOT = np.where(_OWNER < 0, _CHIPS, 0.0)
# Frame-resolution views (a slot is SLOT_FRAMES frames).
_PILOT_F = np.repeat(_PILOT, SLOT_FRAMES, axis=0)
_CHIPS_F = np.repeat(_CHIPS, SLOT_FRAMES, axis=0)
_OWNER_F = np.repeat(_OWNER, SLOT_FRAMES, axis=0)


def _crc16(bits: np.ndarray) -> np.ndarray:
    crc = 0xFFFF
    for bit in bits:
        top = ((crc >> 15) & 1) ^ int(bit)
        crc = ((crc << 1) & 0xFFFF) ^ (0x1021 if top else 0)
    return np.array([(crc >> (15 - i)) & 1 for i in range(16)], dtype=np.int8)


def _bits(value: int, width: int) -> np.ndarray:
    return np.array([(value >> (width - 1 - i)) & 1 for i in range(width)], dtype=np.int8)


def _conv_encode(bits: np.ndarray) -> np.ndarray:
    state, out = 0, []
    for bit in np.concatenate([bits, np.zeros(TAIL, dtype=np.int8)]):
        state = ((state << 1) | int(bit)) & 0x7F
        out += [bin(state & g).count("1") & 1 for g in _G]
    return np.array(out, dtype=np.int8)


def _viterbi(soft: np.ndarray) -> np.ndarray:
    """Soft-decision Viterbi for the K=7 code: `soft` > 0 means coded bit 1; 0 is an erasure."""
    states = 1 << (_K - 1)
    steps = len(soft) // 2
    prev = np.arange(states)
    # For next state s (6 bits), the input bit is s & 1 and the predecessors are (s >> 1) | (0 or 32).
    nxt = np.arange(states)
    preds = np.stack([nxt >> 1, (nxt >> 1) | (states >> 1)])  # (2, states)
    regs = (preds << 1 | (nxt & 1)) & 0x7F  # full 7-bit register per (pred choice, next state)
    outs = np.stack([np.vectorize(lambda r, g=g: bin(r & g).count("1") & 1)(regs) for g in _G])  # (2 gens, 2, states)
    signs = 2.0 * outs - 1.0
    metric = np.full(states, -np.inf)
    metric[0] = 0.0
    back = np.zeros((steps, states), dtype=np.int8)
    for t in range(steps):
        branch = signs[0] * soft[2 * t] + signs[1] * soft[2 * t + 1]  # (2, states)
        candidates = metric[preds] + branch
        choice = np.argmax(candidates, axis=0)
        back[t] = choice
        metric = candidates[choice, nxt]
    state = 0  # the tail brings the encoder back to zero
    bits = np.zeros(steps, dtype=np.int8)
    for t in range(steps - 1, -1, -1):
        bits[t] = state & 1
        state = preds[back[t, state], state]
    del prev
    return bits[: steps - TAIL]


def _coded(payload: Payload) -> np.ndarray:
    message = _bits(payload.as_int(), PAYLOAD_BITS)
    return _conv_encode(np.concatenate([message, _crc16(message)]))


# --------------------------------------------------------------------------- signal


def _window() -> np.ndarray:
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(NFFT) / NFFT)).astype(np.float32)


def _frames(samples: np.ndarray, start: int = 0) -> np.ndarray:
    usable = samples[start:]
    count = max(0, (len(usable) - NFFT) // HOP + 1)
    if count == 0:
        return np.zeros((0, NFFT), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(usable, NFFT)[::HOP][:count]
    return view * _window()


def _to_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == SAMPLE_RATE:
        return samples
    g = np.gcd(SAMPLE_RATE, sample_rate)
    return resample_poly(samples, SAMPLE_RATE // g, sample_rate // g).astype(np.float32)


def _pattern() -> np.ndarray:
    """Unit-magnitude pseudo-random complex carrier per (period frame, band bin)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"narro-carrier-v{VERSION}".encode()).digest()[:8], "big"))
    return np.exp(2j * np.pi * rng.random((PERIOD_FRAMES, N_BANDS * BAND_BINS)))


_CARRIER = _pattern()
_BAND = slice(BIN_LO, BIN_LO + N_BANDS * BAND_BINS)


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


def _tile_values(payload: Payload | None) -> np.ndarray:
    """Per (period frame, band): +chip on pilot tiles, chip × (±1 coded bit) on data tiles (0 if no payload)."""
    if payload is None:
        return _PILOT_F
    coded = 2.0 * _coded(payload) - 1.0
    return np.where(_OWNER_F < 0, 1.0, coded[np.maximum(_OWNER_F, 0)]) * _CHIPS_F


def _pilot_waveform() -> np.ndarray:
    """One period of the pilot as a time signal: what the synchroniser looks for."""
    spectrum = np.zeros((PERIOD_FRAMES, NFFT // 2 + 1), dtype=complex)
    spectrum[:, _BAND] = _CARRIER * np.repeat(_PILOT_F, BAND_BINS, axis=1)
    frames = np.fft.irfft(spectrum, n=NFFT, axis=1) * _window()
    return _overlap_add(frames, PERIOD_FRAMES * HOP, circular=True)


_PILOT_WAVE_FFT = np.fft.rfft(_pilot_waveform())


def embed(samples: np.ndarray, sample_rate: int, payload: Payload) -> np.ndarray:
    """The clip with the mark added (same length, same rate)."""
    x = np.asarray(samples, dtype=np.float32)
    work = _to_rate(x, sample_rate).astype(np.float64)
    # One hop of zeros in front so every real sample lies under two frames (perfect reconstruction).
    padded = np.concatenate([np.zeros(HOP), work, np.zeros(NFFT + HOP)])
    original = np.fft.rfft(_frames(padded), axis=1)
    count = len(original)
    index = np.arange(count) % PERIOD_FRAMES
    carrier = _CARRIER[index]
    magnitude = np.abs(original[:, _BAND])
    active = _active(magnitude)
    slots = count // SLOT_FRAMES + 1
    pad = slots * SLOT_FRAMES - count

    def per_tile(cells: np.ndarray) -> np.ndarray:
        cells = np.pad(cells * active[:, None], ((0, pad), (0, 0)))
        return cells.reshape(slots, SLOT_FRAMES, N_BANDS, BAND_BINS).sum(axis=(1, 3))

    reach = per_tile(np.maximum(magnitude, 1e-12) ** (1 - WHITEN_POWER))  # statistic per unit of beta
    # A short clip has few tiles to repeat the payload over: it gets a stronger mark.
    speech_s = active.sum() * HOP / SAMPLE_RATE
    boost = float(np.clip(np.sqrt(SHORT_CLIP_S / max(speech_s, 1e-3)), 1.0, MAX_BOOST))
    max_beta = MAX_BETA * boost
    target = boost * ALPHA * _tile_values(payload)[::SLOT_FRAMES][np.arange(slots) % PERIOD_SLOTS] * reach
    beta = np.zeros((slots, N_BANDS))
    marked = padded
    # Informed embedding: per tile, the detector's statistic of the host itself (what would
    # drown the mark) is measured and cancelled, the mark set on top; a few passes, because
    # resynthesis keeps only part of any change made to overlapping frames.
    for _ in range(EMBED_PASSES):
        band = np.fft.rfft(_frames(marked), axis=1)[:, _BAND]
        statistic = per_tile(np.real(band * np.conj(carrier)) / np.maximum(np.abs(band), 1e-12) ** WHITEN_POWER)
        beta = np.clip(beta + (target - statistic) / np.maximum(reach, 1e-12), -max_beta, max_beta)
        cell_beta = np.repeat(np.repeat(beta, SLOT_FRAMES, axis=0)[:count], BAND_BINS, axis=1)
        mark = np.zeros_like(original)
        # The carrier at the host's own magnitude in each cell, well below it: masked by the speech.
        mark[:, _BAND] = cell_beta * magnitude * carrier * active[:, None]
        marked = padded + _overlap_add(np.fft.irfft(mark, n=NFFT, axis=1) * _window(), len(padded))
    delta = (marked - padded)[HOP: HOP + len(work)]
    if sample_rate != SAMPLE_RATE:
        g = np.gcd(SAMPLE_RATE, sample_rate)
        delta = resample_poly(delta, sample_rate // g, SAMPLE_RATE // g)
        delta = np.pad(delta, (0, max(0, len(x) - len(delta))))[: len(x)]
    return (x + delta).astype(np.float32)


def _active(magnitude: np.ndarray) -> np.ndarray:
    """Frames that carry speech: within SILENCE_DB of the loudest frame (pauses and pads carry nothing)."""
    energy = (magnitude ** 2).sum(axis=1)
    return energy > max(energy.max(initial=0.0) * 10 ** (-SILENCE_DB / 10), 1e-9)


def _whiten(samples: np.ndarray) -> np.ndarray:
    """Every audible cell of the band flattened towards unit magnitude (phase kept); silence to zero."""
    padded = np.concatenate([np.zeros(HOP), samples.astype(np.float64), np.zeros(NFFT + HOP)])
    frames = _frames(padded)
    spectrum = np.fft.rfft(frames, axis=1)
    band = spectrum[:, _BAND]
    magnitude = np.abs(band)
    active = _active(magnitude)
    white = np.zeros_like(spectrum)
    white[:, _BAND] = np.where(active[:, None], band / np.maximum(magnitude, 1e-12) ** WHITEN_POWER, 0.0)
    return _overlap_add(np.fft.irfft(white, n=NFFT, axis=1) * _window(), len(padded))[HOP: HOP + len(samples)]


def detect(samples: np.ndarray, sample_rate: int) -> Detection:
    """Look for a narro mark anywhere in the clip (any cut of its ends, any gain)."""
    work = _to_rate(np.asarray(samples, dtype=np.float32), sample_rate)
    period = PERIOD_FRAMES * HOP
    if len(work) < NFFT * 4:
        return Detection(None, 0.0, 0.0, 0.0)
    white = _whiten(work)
    folded = np.zeros(period)
    padded = np.pad(white, (0, (-len(white)) % period))
    folded = padded.reshape(-1, period).sum(axis=0)
    # corr[lag] = sum_n folded[n] * pilot[(n + lag) mod period], for every lag at once.
    corr = np.fft.irfft(np.conj(np.fft.rfft(folded)) * _PILOT_WAVE_FFT, n=period)
    centre = np.median(corr)
    spread = 1.4826 * np.median(np.abs(corr - centre)) + 1e-12
    lag = int(np.argmax(corr))
    z = float((corr[lag] - centre) / spread)
    # Received sample n sits at period position (n + lag) mod period: read the tiles on the
    # embedder's own frame grid, whitened the same way, and add them up per coded bit.
    start = (-lag) % HOP
    spectrum = np.fft.rfft(_frames(work.astype(np.float64), start), axis=1)[:, _BAND]
    magnitude = np.abs(spectrum)
    index = ((start + lag) // HOP + np.arange(len(spectrum))) % PERIOD_FRAMES
    cells = np.real(spectrum * np.conj(_CARRIER[index])) / np.maximum(magnitude, 1e-12) ** WHITEN_POWER
    score = (cells * _active(magnitude)[:, None]).reshape(len(cells), N_BANDS, BAND_BINS).sum(axis=2) * _CHIPS_F[index]
    owner = _OWNER_F[index]
    soft = np.zeros(CODED_BITS)
    np.add.at(soft, owner[owner >= 0], score[owner >= 0])
    bits = _viterbi(soft)
    message, crc = bits[:PAYLOAD_BITS], bits[PAYLOAD_BITS:]
    value = int("".join(map(str, message)), 2)
    recoded = 2.0 * _coded(Payload.from_int(value)) - 1.0
    seen = soft != 0
    agreement = float(np.mean(np.sign(soft[seen]) == recoded[seen])) if seen.any() else 0.0
    offset_s = ((-lag - HOP) % period) / SAMPLE_RATE
    valid = z >= Z_MIN and np.array_equal(crc, _crc16(message))
    return Detection(Payload.from_int(value) if valid else None, round(z, 2), round(agreement, 3), round(offset_s, 3))


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
        return {**self.payload.as_dict(), "confidence": self.confidence, "bit_agreement": self.bit_agreement,
                "verified_on": "decoded mp3"}


def _seal(digest: str, payload: Payload) -> str:
    return hmac.new(_SEAL_KEY, f"{digest}:{payload.hex()}".encode(), hashlib.sha256).hexdigest()


def verify_encoded(encoded: bytes, decoded: np.ndarray, sample_rate: int, expected: Payload) -> Verification:
    """Check that the encoded file (whose decoded PCM is `decoded`) carries `expected`.

    Raises WatermarkError when the mark is missing or says something else.
    """
    found = detect(decoded, sample_rate)
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
    if verification.mp3_sha256 != digest or not hmac.compare_digest(verification.seal, _seal(digest, verification.payload)):
        raise WatermarkError("refusing to publish: the watermark verification does not belong to this file")
    return verification
