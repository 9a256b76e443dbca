"""The quality tier's engine: a codec language model prompted by a short reference recording.

voices.yaml:

    voices:
      ada:
        quality:
          engine: codec-lm
          model: models/ada            # checkpoint folder (narro train, or the VALL-E-X converter)
          reference: refs/ada.wav      # at least 3 s of the speaker
          reference_text: "What the reference says."   # optional: ASR fills it in
          seed: 7                      # optional; also temperature, top_k, top_p

API: `CodecLmKind` (the `codec-lm` entry point; see narro.engines.base) and `CodecLmEngine`,
whose `synthesize(text)` returns a Synthesis and `stream(text)` yields float32 chunks at
`sample_rate` while the model is still generating.

A reference without `reference_text` is transcribed by the speech recogniser installed with
`set_transcriber` (narro.asr, installed by whoever runs clips: narro.engines cannot import
narro.asr, which imports narro.engines); with none installed such a reference is refused.

This module imports no torch at its top: narro discovers engine classes, and computes content
keys (`identity`), without loading a model. A worker process keeps each checkpoint (model and
codec) loaded once per device, and each reference encoded once (reference.prepare_reference).
Long text is generated part by part (sentences packed up to MAX_PART_CHARS, as the edge engine
splits) and joined with even pauses; part i is sampled with seed `seed * 1000 + i`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from narro.engines.base import EngineKind, Synthesis, Variant
from narro.engines.codec_lm.digest import checkpoint_sha256, files_sha256
from narro.engines.codec_lm.sampling import Sampling
from narro.engines.edge import PART_GAP_S, split_text
from narro.errors import EngineUnavailable, ReferenceAudioError, SynthesisError

if TYPE_CHECKING:
    from narro.engines.codec_lm.checkpoint import Checkpoint
    from narro.engines.codec_lm.reference import Reference
    from narro.voices import EngineVoice

ENGINE_VERSION = "1"
MAX_PART_CHARS = 200
"""About 12 s of speech: open codec LMs drift on longer generations."""
EDGE_FADE_S = 0.005
"""Fade at both ends of a part, so a part that starts or stops mid-waveform does not click."""
SEED_VARIANTS = 3

log = logging.getLogger(__name__)

Transcribe = Callable[[np.ndarray, int], str]
"""Mono float samples and their rate in, text out."""
_transcriber: Callable[[Any], Transcribe] | None = None


def set_transcriber(factory: Callable[[Any], Transcribe] | None) -> None:
    """How references without a transcript are transcribed: `factory(settings)` gives the function.

    It is called only when a reference needs it (no reference_text, or one trimmed to 15 s).
    """
    global _transcriber
    _transcriber = factory


class CodecLmOptions(BaseModel):
    """A codec-lm voice's options in voices.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    reference: str = Field(min_length=1)
    """Recording of the speaker, at least 3 s of speech (relative paths: beside voices.yaml)."""
    reference_text: str | None = None
    """What the reference says; unset: narro's speech recogniser transcribes it."""
    seed: int = Field(0, ge=0)
    """Seed of the token sampler: the same seed gives the same take."""
    temperature: float = Field(1.0, gt=0, le=2)
    """Sampling temperature: below 1 is steadier, above 1 more varied."""
    top_k: int = Field(25, ge=0)
    """Draw only from the k likeliest tokens (0: no limit)."""
    top_p: float = Field(0.8, gt=0, le=1)
    """Draw only from the likeliest tokens that make up this probability (1: no limit)."""


def sampling_of(options: CodecLmOptions) -> Sampling:
    return Sampling(temperature=options.temperature, top_k=options.top_k, top_p=options.top_p, seed=options.seed)


def _path(value: str) -> Path:
    return Path(value).expanduser().resolve()


class CodecLmKind(EngineKind):
    name = "codec-lm"
    Options = CodecLmOptions
    resources = {"GPU": 1}
    path_options = ("reference",)
    clones_voice = True

    @classmethod
    def identity(cls, voice: EngineVoice) -> dict[str, object]:
        options = cls.options(voice)
        reference = _path(options.reference)
        try:
            reference_sha256 = files_sha256([reference])
        except OSError as error:
            raise ReferenceAudioError(f"{reference}: cannot read the reference: {error.strerror or error}") from error
        return {
            "engine": "codec-lm",
            "engine_version": ENGINE_VERSION,
            "checkpoint_sha256": checkpoint_sha256(_path(voice.model)),
            "reference_sha256": reference_sha256,
            "reference_text": options.reference_text,
            "sampling": sampling_of(options).identity(),
            "part_chars": MAX_PART_CHARS,
            "part_gap_s": PART_GAP_S,
        }

    @classmethod
    def references(cls, voice: EngineVoice) -> list[Path]:
        return [_path(cls.options(voice).reference)]

    @classmethod
    def load(cls, voice: EngineVoice, settings: Any) -> CodecLmEngine:
        from narro.engines.codec_lm.reference import prepare_reference

        options = cls.options(voice)
        device = pick_device(settings.codec_lm.device)
        checkpoint = _checkpoint(_path(voice.model), device)
        factory = _transcriber  # resolved when the reference needs it: the recogniser loads only then
        transcribe = (lambda samples, rate: factory(settings)(samples, rate)) if factory is not None else None
        reference = prepare_reference(_path(options.reference), options.reference_text, checkpoint.codec, transcribe)
        return CodecLmEngine(checkpoint, reference, sampling_of(options))

    @classmethod
    def variants(cls, voice: EngineVoice) -> list[Variant]:
        """New seeds: a retake samples other tokens from the same model and reference."""
        seed = cls.options(voice).seed
        return [Variant(f"seed {seed + step}", voice.model_copy(update={"seed": seed + step}))
                for step in range(1, SEED_VARIANTS + 1)]


def pick_device(setting: str) -> str:
    """'cuda' or 'cpu' for the codec_lm.device setting ('auto', 'cpu' or 'cuda')."""
    try:
        import torch
    except ImportError:
        raise EngineUnavailable("the codec-lm engine needs torch: pip install 'narro[quality]'") from None
    if setting == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if setting == "cuda":
        raise EngineUnavailable("codec_lm.device is 'cuda' (NARRO_CODEC_LM_DEVICE) but torch sees no GPU")
    log.warning("codec-lm: no GPU visible, running on the CPU (much slower than real time for base models)")
    return "cpu"


_checkpoints: dict[tuple[Path, str, str], Checkpoint] = {}
_checkpoints_lock = threading.Lock()


def _checkpoint(folder: Path, device: str) -> Checkpoint:
    """The loaded checkpoint, once per process and device (voices and seeds sharing it share the model)."""
    from narro.engines.codec_lm.checkpoint import load_checkpoint

    key = (folder, checkpoint_sha256(folder), device)
    with _checkpoints_lock:
        if key not in _checkpoints:
            _checkpoints[key] = load_checkpoint(folder, device=device)
        return _checkpoints[key]


@dataclasses.dataclass(frozen=True)
class _Part:
    text: np.ndarray
    """Model text ids: [reference ; part]."""
    phonemes: int
    unknown: int


class CodecLmEngine:
    """One prompted voice. Generations run one at a time (they share the model and its device)."""

    def __init__(self, checkpoint: Checkpoint, reference: Reference, sampling: Sampling):
        from narro.engines.codec_lm.frontend import Frontend

        self.checkpoint = checkpoint
        self.reference = reference
        self.sampling = sampling
        self.codec = checkpoint.codec
        self.sample_rate = self.codec.sample_rate
        self.frontend = Frontend(checkpoint.vocabulary)
        self.reference_ids = self.frontend.encode(reference.text).ids
        self.language = checkpoint.config.languages.index(checkpoint.vocabulary.language)
        self.identity = f"codec-lm-{ENGINE_VERSION}:{checkpoint.sha256[:12]}"
        self._lock = threading.Lock()

    def _parts(self, text: str) -> list[_Part]:
        from narro.engines.codec_lm.frontend import join_text

        parts = []
        for piece in split_text(text, MAX_PART_CHARS):
            encoded = self.frontend.encode(piece)
            if encoded.phonemes:
                parts.append(_Part(join_text(self.checkpoint.vocabulary, self.reference_ids, encoded.ids),
                                   encoded.phonemes, encoded.unknown))
        if not parts:
            raise SynthesisError(f"codec-lm: nothing to speak in {text[:60]!r}")
        return parts

    def _seeded(self, index: int) -> Sampling:
        return dataclasses.replace(self.sampling, seed=self.sampling.seed * 1000 + index)

    def _finish(self, samples: np.ndarray) -> np.ndarray:
        samples = np.clip(samples, -1.0, 1.0).astype(np.float32)
        fade = min(int(EDGE_FADE_S * self.sample_rate), len(samples) // 2)
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            samples[:fade] *= ramp
            samples[-fade:] *= ramp[::-1]
        return samples

    def synthesize(self, text: str) -> Synthesis:
        from narro.engines.codec_lm.generate import generate

        parts = self._parts(text)
        gap = np.zeros(int(PART_GAP_S * self.sample_rate), dtype=np.float32)
        pieces: list[np.ndarray] = []
        trips = {"frame_cap": 0, "repetition": 0}
        frames = 0
        seconds = 0.0
        with self._lock:
            for index, part in enumerate(parts):
                result = generate(self.checkpoint.model, part.text, part.phonemes, self.reference.codes,
                                  self._seeded(index), self.codec.frame_rate, self.language)
                for name, count in result.trips.items():
                    trips[name] += count
                frames += result.frames
                seconds += result.seconds
                if pieces:
                    pieces.append(gap)
                pieces.append(self._finish(self.codec.decode(result.codes)))
        samples = np.concatenate(pieces)
        if not samples.size:
            raise SynthesisError("codec-lm: the model ended speech before any audio")
        return Synthesis(samples, self.sample_rate, self.identity, details={
            "parts": len(parts), "frames": frames, "guard_trips": trips, "seed": self.sampling.seed,
            "generation_s": round(seconds, 3), "device": str(self.checkpoint.model.device),
            "unknown_phonemes": sum(p.unknown for p in parts), "reference_s": round(self.reference.duration_s, 2),
            "reference_sha256": self.reference.sha256,
        })

    def stream(self, text: str) -> Iterator[np.ndarray]:
        """Float32 chunks at `sample_rate`; the first comes after FIRST_CHUNK_FRAMES of the first part."""
        from narro.engines.codec_lm.generate import CodecStream

        parts = self._parts(text)
        gap = np.zeros(int(PART_GAP_S * self.sample_rate), dtype=np.float32)
        fade = int(EDGE_FADE_S * self.sample_rate)
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        with self._lock:
            for index, part in enumerate(parts):
                if index:
                    yield gap
                stream = CodecStream(self.checkpoint.model, self.codec, part.text, part.phonemes,
                                     self.reference.codes, self._seeded(index), self.language)
                held = np.zeros(0, dtype=np.float32)  # the part's last few ms, faded out once the part ends
                first = True
                for chunk in stream:
                    chunk = np.clip(np.concatenate([held, chunk]), -1.0, 1.0).astype(np.float32)
                    if first and len(chunk) >= fade:
                        chunk[:fade] *= ramp
                        first = False
                    held = chunk[len(chunk) - fade:] if len(chunk) >= fade else chunk
                    if len(chunk) > len(held):
                        yield chunk[: len(chunk) - len(held)]
                if len(held):
                    yield held * ramp[::-1][-len(held):]
