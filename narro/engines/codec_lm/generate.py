"""Sampling codec tokens from a CodecLM, with guards, and streaming their decoded audio.

API:

    sampling = Sampling(temperature=1.0, top_k=25, top_p=0.8, seed=0)   # narro.engines.codec_lm.sampling
    result = generate(model, text, phonemes, prompt, sampling, frame_rate, language=0)
        # text: np.int64 [S] ([reference ; target] ids, frontend.join_text); phonemes: target symbols
        # prompt: the reference's codes np.int64 [n_q, Tp], or None
        # -> Generated(codes np.int64 [n_q, T], trips {"frame_cap", "repetition"}, frames, frame_cap, seconds)
    stream = CodecStream(model, codec, text, phonemes, prompt, sampling, language=0)
    for samples in stream: ...         # np.float32 chunks at codec.sample_rate, decoded while the AR runs
    stream.result, stream.first_audio_s, stream.first_audio_frames   # after (or during) iteration

The same seed gives the same tokens: every random draw comes from one torch.Generator seeded
with `sampling.seed`, and the NAR is greedy.

Guards against the failures users of open codec LMs report (repeated words, run-on endings,
gibberish on short lines):

- repetition-aware sampling, as CosyVoice 2 implements VALL-E 2's (Chen et al. 2024, §3.3;
  CosyVoice `ras_sampling`): a token drawn by top-k/top-p that already fills `ras_ratio` of the
  last `ras_window` tokens is drawn again from the whole (temperature-scaled) distribution.
  Each redraw counts as a "repetition" trip;
- a frame cap from the phoneme count, frames <= frame_rate * (max_s_per_phoneme * phonemes +
  cap_margin_s), where generation is ended (a "frame_cap" trip);
- no end of speech before frame_rate * min_s_per_phoneme * phonemes frames.

Streaming runs the NAR over the codebook-1 tokens so far every `chunk_frames` (the first chunk
after `first_chunk_frames`) and decodes only the new frames, with `context_frames` of left
context for the codec's convolutions and LSTM and a short crossfade into the held-back tail of
the previous chunk. Frames already played keep their codes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from narro.engines.codec_lm.model import ARState, CodecLM
from narro.engines.codec_lm.sampling import Sampling

FIRST_CHUNK_FRAMES = 10
"""Codebook-1 frames before the first audio (133 ms at 75 frames/s)."""
CHUNK_FRAMES = 30
CONTEXT_FRAMES = 12
"""Frames decoded again before a chunk so the codec's state has settled (not played twice)."""


@dataclass
class Generated:
    codes: np.ndarray
    """int64 [n_q, frames]."""
    trips: dict[str, int]
    frame_cap: int
    seconds: float

    @property
    def frames(self) -> int:
        return int(self.codes.shape[1])


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Logits [V] with everything outside the top k and the top-p nucleus set to -inf."""
    if 0 < top_k < logits.numel():
        logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[-1], float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(ordered, -1).cumsum(-1)
        drop = cumulative > top_p
        drop[1:] = drop[:-1].clone()  # keep the token that crosses top_p
        drop[0] = False
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    return logits


class TokenSampler:
    """Codebook-1 tokens of one utterance, one per `next()`; stops at end of speech or the frame cap."""

    def __init__(self, model: CodecLM, text: torch.Tensor, phonemes: int, prompt_q1: torch.Tensor,
                 sampling: Sampling, frame_rate: int, language: torch.Tensor):
        self.model, self.text, self.prompt_q1, self.sampling, self.language = model, text, prompt_q1, sampling, language
        self.generator = torch.Generator(device=model.device).manual_seed(sampling.seed)
        self.cap = sampling.frame_cap(phonemes, frame_rate)
        self.min_frames = sampling.min_frames(phonemes, frame_rate)
        self.tokens: list[int] = []
        self.trips = {"frame_cap": 0, "repetition": 0}
        self.done = False
        self._state: ARState | None = None

    def __iter__(self) -> TokenSampler:
        return self

    @torch.inference_mode()
    def __next__(self) -> int:
        if self.done:
            raise StopIteration
        if len(self.tokens) >= self.cap:
            self.trips["frame_cap"] += 1
            self.done = True
            raise StopIteration
        if self._state is None:
            logits, self._state = self.model.ar_start(self.text, self.prompt_q1, self.language)
        else:
            logits = self.model.ar_step(torch.tensor([self.tokens[-1]], device=self.model.device), self._state)
        token = self._sample(logits[0].float())
        if token == self.model.eos:
            self.done = True
            raise StopIteration
        self.tokens.append(token)
        return token

    def _draw(self, logits: torch.Tensor) -> int:
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=self.generator).item())

    def _sample(self, logits: torch.Tensor) -> int:
        if len(self.tokens) < self.min_frames:
            logits[self.model.eos] = float("-inf")
        scaled = logits / self.sampling.temperature
        token = self._draw(filter_logits(scaled, self.sampling.top_k, self.sampling.top_p))
        window = self.sampling.ras_window
        if window and self.tokens and self.tokens[-window:].count(token) >= window * self.sampling.ras_ratio:
            self.trips["repetition"] += 1
            token = self._draw(scaled)
        return token


def _inputs(model: CodecLM, text: np.ndarray, prompt: np.ndarray | None, language: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    device = model.device
    if prompt is None:
        prompt = np.zeros((model.config.n_codebooks, 0), dtype=np.int64)
    if prompt.shape[0] != model.config.n_codebooks:
        raise ValueError(f"prompt has {prompt.shape[0]} codebooks, the model {model.config.n_codebooks}")
    return (torch.as_tensor(text, dtype=torch.long, device=device)[None],
            torch.as_tensor(prompt, dtype=torch.long, device=device)[None],
            torch.tensor([language], device=device))


@torch.inference_mode()
def generate(model: CodecLM, text: np.ndarray, phonemes: int, prompt: np.ndarray | None, sampling: Sampling,
             frame_rate: int, language: int = 0) -> Generated:
    """All codebooks of one utterance: the AR samples codebook 1, then the NAR fills in the rest."""
    started = time.perf_counter()
    text_t, prompt_t, language_t = _inputs(model, text, prompt, language)
    sampler = TokenSampler(model, text_t, phonemes, prompt_t[:, 0], sampling, frame_rate, language_t)
    q1 = list(sampler)
    if q1:
        codes = model.nar_predict(text_t, prompt_t, torch.tensor([q1], device=model.device), language_t)[0]
        grid = codes.cpu().numpy().astype(np.int64)
    else:
        grid = np.zeros((model.config.n_codebooks, 0), dtype=np.int64)
    return Generated(grid, dict(sampler.trips), sampler.cap, time.perf_counter() - started)


@dataclass
class CodecStream:
    """Decoded audio of one utterance, chunk by chunk, while the AR is still generating."""

    model: CodecLM
    codec: Any
    text: np.ndarray
    phonemes: int
    prompt: np.ndarray | None
    sampling: Sampling
    language: int = 0
    first_chunk_frames: int = FIRST_CHUNK_FRAMES
    chunk_frames: int = CHUNK_FRAMES
    context_frames: int = CONTEXT_FRAMES
    result: Generated | None = None
    first_audio_s: float | None = None
    """Seconds from the start of iteration to the first chunk."""
    first_audio_frames: int | None = None
    """Codebook-1 frames generated when the first chunk was handed out."""
    chunks: int = 0
    _codes: torch.Tensor | None = field(default=None, repr=False)
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32), repr=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        started = time.perf_counter()
        self._codes, self._pending, self.chunks = None, np.zeros(0, dtype=np.float32), 0
        self.result = self.first_audio_s = self.first_audio_frames = None
        # Inference mode is entered per step, not across the yields: the caller's code runs between them.
        text_t, prompt_t, language_t = _inputs(self.model, self.text, self.prompt, self.language)
        sampler = TokenSampler(self.model, text_t, self.phonemes, prompt_t[:, 0], self.sampling,
                               self.codec.frame_rate, language_t)
        boundary = self.first_chunk_frames
        emitted = 0
        for _ in sampler:
            if len(sampler.tokens) >= boundary:
                samples = self._chunk(sampler.tokens, emitted, text_t, prompt_t, language_t, final=False)
                emitted = len(sampler.tokens)
                boundary = emitted + self.chunk_frames
                yield self._handed_out(samples, started, emitted)
        samples = self._chunk(sampler.tokens, emitted, text_t, prompt_t, language_t, final=True)
        codes = self._codes if self._codes is not None else torch.zeros(self.model.config.n_codebooks, 0)
        self.result = Generated(codes.cpu().numpy().astype(np.int64), dict(sampler.trips), sampler.cap,
                                time.perf_counter() - started)
        if samples.size or not self.chunks:
            yield self._handed_out(samples, started, len(sampler.tokens))

    def _handed_out(self, samples: np.ndarray, started: float, frames: int) -> np.ndarray:
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - started
            self.first_audio_frames = frames
        self.chunks += 1
        return samples

    @torch.inference_mode()
    def _chunk(self, tokens: list[int], emitted: int, text: torch.Tensor, prompt: torch.Tensor,
               language: torch.Tensor, final: bool) -> np.ndarray:
        """Audio of frames [emitted, len(tokens)), the previous chunk's held-back tail crossfaded in."""
        total = len(tokens)
        if total > emitted:
            q1 = torch.tensor([tokens], device=self.model.device)
            fresh = self.model.nar_predict(text, prompt, q1, language)[0]
            self._codes = fresh if self._codes is None else torch.cat([self._codes[:, :emitted], fresh[:, emitted:]], 1)
        if total == 0 or self._codes is None:
            return np.zeros(0, dtype=np.float32)
        hop = self.codec.hop_length
        start = max(0, emitted - self.context_frames)
        audio = self.codec.decode(self._codes[:, start:total])
        pending = self._pending
        head = audio[(emitted - start) * hop - len(pending):].copy()
        if len(pending):
            ramp = np.linspace(0.0, 1.0, len(pending), dtype=np.float32)
            head[: len(pending)] = pending * (1 - ramp) + head[: len(pending)] * ramp
        fade = 0 if final else min(hop // 4, len(head))
        self._pending = head[len(head) - fade:].copy()
        return head[: len(head) - fade]
