"""Version 2 of the mark: a spectral-shape pattern found again after re-timing and pitch shifts.

* **Grid.** At 22050 Hz, 1024-sample sqrt-Hann frames with a 256-sample hop. 32 bands of 100 Hz
  cover 400-3600 Hz (inside a telephone band and a 4 kHz low-pass, with room for a ±12% pitch
  shift); the outer two are references only. Six frames make a slot (70 ms), 16 slots a period
  (1.11 s); a period holds 16 x 30 = 480 tiles: 3 per coded bit (324) and 156 pilot tiles, each
  with a ±1 chip; each band's pilot chips sum to zero.
* **Feature.** Per tile, the log energy of its band minus the mean of its two neighbour bands
  in the same slot (a second difference across frequency), less its mean over the clip.
  Neighbouring bands of speech move together, so the host varies little here (sd ~0.55, a
  quarter of a difference across time); gain, EQ and band limits cancel; and it lives inside one
  70 ms slot, which time-stretching (WSOLA, phase vocoder or resampling) keeps intact.
* **Embedding.** Each tile's band is scaled by exp(beta/2): beta = ALPHA x chip x (1 on pilot
  tiles, ±1 coded bit), then corrected twice so that on the clip itself each coded bit's tiles
  (and the pilot's) carry no share of the host's own feature (informed embedding per bit: half
  the bit errors for ~4 dB of SNR). Silent tiles get nothing; short clips up to MAX_BOOST x more.
* **Detection.** Playback speed scales time, pitch shifting scales frequency. The detector
  first tries scale 1 (the published file: cheap, threshold Z_MIN_EXACT); then, if asked, a grid
  of time scales (0.75-1.34 in 6% steps) x frequency scales (0.88-1.14 in 2.5% steps): band
  edges and tile length follow each hypothesis, the clip is folded period by period and each
  period's pilot correlation kept in the Fourier domain, so a fine time-scale correction (steps
  that leave under ~30 ms of drift over the clip, ±3%) is one small product that moves each
  period by its drift before the sum. One cut (a segment removed) is allowed: the periods before
  and after a split may align at two lags. The peak, normalised by the folded host's own
  variance, is the confidence; at it the data tiles feed the Viterbi decoder, and a payload
  counts only if the confidence clears the threshold *and* the CRC matches. A one-word clip has
  too few tiles for 48 bits read blind; a payload known in advance (the pipeline's check, a
  catalogue's clips) is then tested directly, pilot and data tiles together (`confidence_for`).

Why a search rather than a synchronisation estimate first: the period's autocorrelation gives
the time scale for 0.0017 x real time, but it was off by more than 1.5% on 7 of 80 attacked
clips (6 of 8 after a 1 s echo, 1 of 8 after a 15 s cut: the host's own repetitions win) and
pitch still needs a search; the search recovered the payload on 50 of 50 clips after each of the
benchmark's 13 re-timing and pitch attacks, for 0.006 x real time per core (0.010 with
embedding: within the 0.02 budget; figures: bench/watermark.py).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import fft

from .payload import CODED_BITS, Payload, coded

SAMPLE_RATE = 22050
NFFT, HOP = 1024, 256
F_LO, F_HI, N_BANDS = 400.0, 3600.0, 32
SLOT_FRAMES, PERIOD_SLOTS = 6, 16
PERIOD_FRAMES = SLOT_FRAMES * PERIOD_SLOTS
TILES_PER_BIT = 3
ALPHA = 0.3
"""Log-power step per tile (±1.3 dB in its band)."""
MAX_BETA = 0.6
"""Largest log-power change of one tile, informed correction included."""
EMBED_PASSES = 3
SHORT_CLIP_S, MAX_BOOST = 8.0, 2.5
"""Clips with less speech than SHORT_CLIP_S get a mark up to MAX_BOOST x stronger (sqrt of the ratio)."""
SILENCE_DB = 40.0
TEMPO_GRID = tuple(0.75 * 1.06 ** np.arange(11))
"""Coarse time-scale hypotheses (received duration / original), 0.75-1.34."""
PITCH_GRID = tuple(0.88 * 1.025 ** np.arange(12))
"""Coarse frequency-scale hypotheses, 0.88-1.14."""
DRIFT_S = 0.03
"""Fine time-scale steps are small enough that the drift they leave over the clip stays under this."""
WINDOW_S = 60.0
"""Longer files are searched in windows of this length (so that those steps stay few)."""
Z_MIN = 8.0
"""Confidence below which a searched clip reports nothing, whatever the CRC says."""
Z_MIN_EXACT = 5.0
"""The same when only scale 1 is tried (a published file, and the pipeline's check): fewer hypotheses."""
Z_MIN_KNOWN = 7.0
"""`Found.confidence_for` above which a clip counts as carrying a payload known in advance (the
pipeline's check of clips too short to read blind: one-word clips)."""

_BW = SAMPLE_RATE / NFFT
_EDGES = np.linspace(F_LO, F_HI, N_BANDS + 1)


def _layout() -> tuple[np.ndarray, np.ndarray]:
    """Per tile (slot, band): its chip (±1, 0 on the reference bands) and what it carries
    (-1 pilot, -2 reference band, else a coded-bit index)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(b"narro-watermark-v2").digest()[:8], "big"))
    tiles = PERIOD_SLOTS * (N_BANDS - 2)
    owner = np.full(tiles, -1)
    owner[rng.permutation(tiles)[: CODED_BITS * TILES_PER_BIT]] = np.repeat(np.arange(CODED_BITS), TILES_PER_BIT)
    chips = rng.choice([-1.0, 1.0], size=tiles)
    shape = (PERIOD_SLOTS, N_BANDS - 2)
    # Each band's pilot chips sum to zero over a period: a band's steady level, such as the
    # voice's own spectral shape, then adds nothing to the pilot correlation.
    band = np.arange(tiles) % shape[1]
    for b in range(shape[1]):
        mine = np.flatnonzero((band == b) & (owner == -1))
        chips[mine] = rng.permutation(np.resize([1.0, -1.0] if b % 2 else [-1.0, 1.0], len(mine)))
    return (np.pad(chips.reshape(shape), ((0, 0), (1, 1))),
            np.pad(owner.reshape(shape), ((0, 0), (1, 1)), constant_values=-2))


_CHIPS, _OWNER = _layout()
_PILOT = np.where(_OWNER == -1, _CHIPS, 0.0)
_WINDOW = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(NFFT) / NFFT)).astype(np.float32)
_W = np.arange(PERIOD_FRAMES // 2 + 1)
# Spectrum of an impulse at each slot's first frame: correlating with the pilot is one product.
_SLOT_PHASE = np.exp(-2j * np.pi * np.outer(np.arange(PERIOD_SLOTS) * SLOT_FRAMES, _W) / PERIOD_FRAMES
                     ).astype(np.complex64)


def _tile_values(payload: Payload) -> np.ndarray:
    bits = 2.0 * coded(payload) - 1.0
    return np.where(_OWNER == -1, 1.0, bits[np.maximum(_OWNER, 0)]) * _CHIPS


def _frames(samples: np.ndarray) -> np.ndarray:
    count = max(0, (len(samples) - NFFT) // HOP + 1)
    return np.lib.stride_tricks.sliding_window_view(samples, NFFT)[::HOP][:count] * _WINDOW


def _overlap_add(frames: np.ndarray, length: int) -> np.ndarray:
    k = NFFT // HOP
    out = np.zeros((len(frames) + k - 1) * HOP)
    quarters = out.reshape(-1, HOP)
    for i in range(k):
        quarters[i: i + len(frames)] += frames[:, i * HOP:(i + 1) * HOP]
    out *= 2.0 / k  # sqrt-Hann analysis and synthesis at 75% overlap: the squared windows sum to k/2
    return np.pad(out, (0, max(0, length - len(out))))[:length]


_TOP_BIN = int(F_HI * PITCH_GRID[-1] * 1.02 / _BW) + 2
"""Bins above this never fall in a band, whatever the pitch hypothesis."""


def _running(power: np.ndarray) -> np.ndarray:
    """(bins + 1, frames): each frame's power summed over the bins below each bin edge (up to _TOP_BIN)."""
    return np.concatenate([np.zeros((1, len(power))), np.cumsum(power[:, :_TOP_BIN].T, axis=0)])


def _band_power(cum: np.ndarray, pitch: float) -> np.ndarray:
    """(frames, bands) energy per band from `_running`, the band edges scaled by `pitch` (fractional bins)."""
    edges = _EDGES * pitch / _BW + 0.5
    lo = np.clip(np.floor(edges).astype(int), 0, len(cum) - 2)
    frac = (edges - lo)[:, None]
    return np.diff(cum[lo] * (1 - frac) + cum[lo + 1] * frac, axis=0).T


def _active(power: np.ndarray) -> np.ndarray:
    """Frames that carry speech: within SILENCE_DB of the loudest frame in the mark's band."""
    energy = power[:, int(F_LO / _BW): int(F_HI / _BW) + 1].sum(axis=1)
    return energy > max(energy.max(initial=0.0) * 10 ** (-SILENCE_DB / 10), 1e-12)


def _features(bands: np.ndarray, active: np.ndarray, box: int) -> np.ndarray:
    """(frames, bands): the feature of a tile `box` frames long starting at each frame (0 where silent)."""
    count = len(bands)
    summed = np.vstack([np.zeros((1, N_BANDS)), np.cumsum(bands, axis=0)])
    energy = summed[box:] - summed[:-box]
    log = np.log(energy + energy.max(initial=0.0) * 1e-7 + 1e-20)
    out = np.zeros((count, N_BANDS))
    out[: len(log), 1:-1] = log[:, 1:-1] - 0.5 * (log[:, :-2] + log[:, 2:])
    on = np.concatenate([[0], np.cumsum(active)])
    live = np.zeros(count, dtype=bool)
    live[: len(log)] = on[box:] - on[:-box] > box / 2
    if live.any():  # the voice's long-term spectral shape is not the mark (and would bias the pilot)
        out[live] -= out[live].mean(axis=0)
    out[~live] = 0.0
    return out


def embed(work: np.ndarray, payload: Payload) -> np.ndarray:
    """`work` (22050 Hz) with the version-2 mark."""
    padded = np.concatenate([np.zeros(NFFT), work, np.zeros(2 * NFFT)]).astype(np.float32)
    spectrum = fft.rfft(_frames(padded), axis=1)
    count = len(spectrum)
    slots = -(-count // SLOT_FRAMES)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    active = _active(power)
    live = np.pad(active, (0, slots * SLOT_FRAMES - count)).reshape(slots, SLOT_FRAMES).sum(axis=1) > SLOT_FRAMES / 2
    speech_s = live.sum() * SLOT_FRAMES * HOP / SAMPLE_RATE
    boost = float(np.clip(np.sqrt(SHORT_CLIP_S / max(speech_s, 1e-3)), 1.0, MAX_BOOST))
    period = np.arange(slots) % PERIOD_SLOTS
    chips, owner = _CHIPS[period], _OWNER[period]
    carried = live[:, None] & (owner != -2)
    group = np.where(owner >= 0, owner, CODED_BITS)[carried]  # each coded bit, and the pilot as one more
    want = boost * ALPHA * np.append(2.0 * coded(payload) - 1.0, 1.0)
    beta = np.where(carried, boost * ALPHA * _tile_values(payload)[period], 0.0)
    band_of_bin = np.searchsorted(_EDGES, np.arange(NFFT // 2 + 1) * _BW, side="right") - 1
    in_band = (band_of_bin >= 0) & (band_of_bin < N_BANDS)
    for step in range(EMBED_PASSES):
        change = np.zeros((count, NFFT // 2 + 1), dtype=np.complex64)
        scale = np.repeat(np.exp(0.5 * beta) - 1, SLOT_FRAMES, axis=0)[:count]
        change[:, in_band] = spectrum[:, in_band] * scale[:, band_of_bin[in_band]]
        marked = padded + _overlap_add(fft.irfft(change, n=NFFT, axis=1) * _WINDOW, len(padded))
        if step == EMBED_PASSES - 1:
            break
        # Informed embedding: measure what each bit's tiles now say on this very clip and move
        # them all by the same step along their chips, so the host's share cancels per bit.
        now = fft.rfft(_frames(marked.astype(np.float32)), axis=1)
        feature = _features(_band_power(_running(now.real ** 2 + now.imag ** 2), 1.0), active, SLOT_FRAMES)
        tile = np.pad(feature, ((0, slots * SLOT_FRAMES - count), (0, 0)))[::SLOT_FRAMES]
        said = (np.bincount(group, weights=(tile * chips)[carried], minlength=CODED_BITS + 1)
                / np.maximum(np.bincount(group, minlength=CODED_BITS + 1), 1))
        correction = np.zeros_like(beta)
        correction[carried] = (want - said)[group]
        beta = np.clip(beta + correction * chips, -MAX_BETA * boost, MAX_BETA * boost) * carried
    return marked[NFFT: NFFT + len(work)]


@dataclass(frozen=True)
class Found:
    """The best alignment the search found, and what its data tiles say."""

    confidence: float
    tempo: float
    """Received duration / original (0.8 = played 1.25x faster)."""
    pitch: float
    """Received frequency / original."""
    offset_s: float
    soft: np.ndarray
    """Per coded bit: its tiles' features times their chips, summed (> 0 reads as 1)."""
    pilot: float
    """The pilot tiles' features times their chips, summed."""
    spread: float
    """Standard deviation of such a sum over all tiles seen, were the clip unmarked (estimated)."""

    def confidence_for(self, payload: Payload) -> float:
        """How strongly the clip carries this very payload: pilot and data tiles together against
        their expected chips (about N(0,1) on unmarked audio at a given alignment). It needs no
        decoding, so it still works on clips too short for the payload to be read blind."""
        return float((self.pilot + np.dot(self.soft, 2.0 * coded(payload) - 1.0)) / self.spread)


def detect(work: np.ndarray, search: bool = True) -> Found | None:
    """The best alignment of the version-2 pilot in `work` (22050 Hz): over every scale hypothesis,
    or scale 1 only when `search` is False. None if the clip is too short to hold a tile."""
    window = int(WINDOW_S * SAMPLE_RATE)
    if not search or len(work) <= window:
        return _search(work, search)
    starts = range(0, len(work) - window // 2, window // 2)
    found = [_search(work[s: s + window], search) for s in starts]
    return max((f for f in found if f is not None), key=lambda f: f.confidence, default=None)


def _search(work: np.ndarray, search: bool) -> Found | None:
    spectrum = fft.rfft(_frames(work.astype(np.float32)), axis=1)
    if len(spectrum) < 3 * SLOT_FRAMES:
        return None
    power = spectrum.real ** 2 + spectrum.imag ** 2
    active = _active(power)
    cum = _running(power)
    count = len(power)
    index = np.arange(count)
    tempos, pitches = (TEMPO_GRID, PITCH_GRID) if search else ((1.0,), (1.0,))
    # An error of half a step drifts by step * duration / 4 at the clip's ends (the middle is aligned).
    step = min(0.004, 4 * DRIFT_S / (count * HOP / SAMPLE_RATE))
    steps = int(np.ceil((TEMPO_GRID[1] / TEMPO_GRID[0] - 1) / 2 / step)) if search else 0
    fine = np.arange(-steps, steps + 1) * step
    periods = int(count / min(tempos)) // PERIOD_FRAMES + 1
    centres = (np.arange(periods) + 0.5) * PERIOD_FRAMES
    # drift[e, k, w]: the phase that moves period k's correlation back by its drift under fine step e.
    drift = np.exp(-2j * np.pi * np.outer(fine, centres)[:, :, None] * _W / PERIOD_FRAMES).astype(np.complex64)
    best: tuple[float, float, float, float, np.ndarray, int] | None = None
    for pitch in pitches:
        bands = _band_power(cum, pitch)
        cache: dict[int, np.ndarray] = {}
        for tempo in tempos:
            box = int(np.clip(round(SLOT_FRAMES * tempo), SLOT_FRAMES - 1, SLOT_FRAMES + 1))
            if box not in cache:  # running sums of each frame's feature projected on each slot's pilot
                # einsum, not a BLAS product: for a matrix this small BLAS threads only spin, doubling the CPU time.
                projected = np.einsum("sb,fb->sf", _PILOT, _features(bands, active, box))
                cache[box] = np.hstack([np.zeros((PERIOD_SLOTS, 1)), np.cumsum(projected, axis=1)])
            summed = cache[box]
            rows = (index / tempo).astype(int)  # the original frame each received frame came from
            starts = np.concatenate([[0], np.flatnonzero(np.diff(rows)) + 1])
            k = rows[-1] // PERIOD_FRAMES + 1
            folded = np.zeros((PERIOD_SLOTS, k * PERIOD_FRAMES), dtype=np.float32)
            folded[:, rows[starts]] = summed[:, np.append(starts[1:], count)] - summed[:, starts]
            # corr_k(lag) = sum over slots s of folded_k[s, s * SLOT_FRAMES - lag], in the Fourier domain
            per_period = (np.conj(fft.rfft(folded.reshape(PERIOD_SLOTS, k, PERIOD_FRAMES), axis=2))
                          * _SLOT_PHASE[:, None, :]).sum(axis=0)
            spread = np.sqrt(np.vdot(folded, folded) / PERIOD_FRAMES) + 1e-12
            aligned = fft.irfft(per_period * drift[:, :k], n=PERIOD_FRAMES, axis=2) / spread
            score = _split_scores(aligned, cut=search)
            e = int(np.argmax(score))
            if best is None or score[e] > best[0]:
                best = (float(score[e]), tempo, float(fine[e]), pitch, aligned[e], box)
    assert best is not None
    confidence, tempo, step, pitch, aligned, box = best
    lags = (_split_lags(aligned, cut=search) + np.rint(-step * centres[: len(aligned)]).astype(int)) % PERIOD_FRAMES
    feature = _features(_band_power(cum, pitch), active, box)
    rows = (index / tempo).astype(int)
    folded = np.zeros(((rows[-1] // PERIOD_FRAMES + 1) * PERIOD_FRAMES, N_BANDS))
    np.add.at(folded, rows, feature)
    at = (np.arange(PERIOD_SLOTS)[None, :] * SLOT_FRAMES - lags[:, None]) % PERIOD_FRAMES
    seen = np.take_along_axis(folded.reshape(-1, PERIOD_FRAMES, N_BANDS), at[:, :, None], axis=1) * _CHIPS
    tiles = seen.sum(axis=0)
    soft = np.zeros(CODED_BITS)
    np.add.at(soft, _OWNER[_OWNER >= 0], tiles[_OWNER >= 0])
    carrying = (seen != 0) & (_OWNER != -2)
    spread = float(np.sqrt(np.sum(seen[carrying] ** 2))) + 1e-12  # the mark's own share included: conservative
    offset_s = float(lags[0] * tempo * HOP / SAMPLE_RATE)
    return Found(round(confidence, 2), round(float(tempo * (1 + step)), 4), round(float(pitch), 4),
                 round(offset_s, 3), soft, float(tiles[_OWNER == -1].sum()), spread)


def _split_scores(aligned: np.ndarray, cut: bool) -> np.ndarray:
    """Per fine step e, from aligned[e, k, lag] (period k's normalised correlation with its drift
    removed): the best total over one lag for all periods, or over two lags split at one period
    boundary (one cut, the segments after it arriving at another lag)."""
    before = np.cumsum(aligned, axis=1)
    whole = before[:, -1]
    one = whole.max(axis=1)
    if not cut or aligned.shape[1] < 3:
        return one
    two = before[:, :-1].max(axis=2) + (whole[:, None, :] - before[:, :-1]).max(axis=2)
    return np.maximum(one, two.max(axis=1))


def _split_lags(aligned: np.ndarray, cut: bool) -> np.ndarray:
    """Each period's lag for the choice `_split_scores` made on aligned[k, lag]."""
    before = np.cumsum(aligned, axis=0)
    whole = before[-1]
    lags = np.full(len(aligned), int(whole.argmax()))
    if cut and len(aligned) >= 3:
        two = before[:-1].max(axis=1) + (whole - before[:-1]).max(axis=1)
        last = int(two.argmax())  # the last period before the cut
        if two[last] > whole.max():
            lags[: last + 1] = before[last].argmax()
            lags[last + 1:] = (whole - before[last]).argmax()
    return lags
