"""The VALL-E codec language model: an AR transformer for codebook 1, a NAR one for the rest.

API:

    config = ModelConfig.preset("tiny" | "base", n_text_tokens=len(vocab),
                                codebook_size=codec.codebook_size, n_codebooks=codec.n_codebooks)
    model = CodecLM(config)                   # a torch.nn.Module; model.parameter_count()
    batch = collate(texts, codes, pad_id)     # lists of np.int64 [S] and [n_q, T] -> the dict below
    losses = model.training_loss(batch, generator=None)
        # {"loss": ar + nar, "ar": ..., "nar": ...} tensors to backpropagate, and floats
        # "ar_accuracy", "nar_accuracy", "nar_stage" to log
    # inference (generate.py drives these):
    logits, state = model.ar_start(text [1, S], prompt_q1 [1, Tp], language [1])   # logits [1, V+1]
    logits = model.ar_step(token [1], state)                                     # KV cache in state
    codes = model.nar_predict(text [1, S], prompt [1, n_q, Tp], q1 [1, T], language [1])  # [1, n_q, T]

Batch of `training_loss` (int64 tensors on the model's device):

    text       [B, S]       phoneme ids, padded with the vocabulary's pad id
    text_lens  [B]
    codes      [B, n_q, T]  codec tokens; padding is masked, any value
    code_lens  [B]
    language   [B]          optional: index into config.languages (default 0)

Layout (VALL-E, Wang et al. 2023; as published by Plachtaa/VALL-E-X):

- AR: [text ; BOS, codebook-1 tokens] through a decoder-only transformer. Text positions see the
  whole text and no audio; audio positions see the text and earlier audio. It predicts the next
  codebook-1 token or EOS (id `codebook_size`). At inference the text is [reference text ;
  target text] and the audio starts with the reference's codebook-1 tokens: the model continues
  the reference's speech, so it keeps its voice.
- NAR: [text ; embeddings summed over codebooks] through a bidirectional transformer whose
  layer norms are scaled and shifted by a per-stage embedding (adaptive layer norm). Stage s
  predicts codebook s+1 from codebooks 1..s; the reference frames carry all codebooks. Training
  picks one random stage per batch and, as VALL-E-X, a random prefix of the utterance as the
  acoustic prompt (all codebooks given there, loss only after it).

Parameter names and shapes follow the published VALL-E-X state dict, so that checkpoint loads
with no renaming (narro.engines.codec_lm.convert); `base` is its size. One of its quirks is kept
because its weights were trained with it: NAR output layer j shares its weight with the audio
embedding of codebook j+2 (`tied_aliases`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

PRESETS: dict[str, dict[str, Any]] = {
    # A few hundred thousand parameters: tests and CPU smoke runs.
    "tiny": {"d_model": 64, "n_heads": 4, "ar_layers": 2, "nar_layers": 2, "dropout": 0.0},
    # The published VALL-E-X size (macros.py: N_DIM 1024, NUM_HEAD 16, NUM_LAYERS 12).
    "base": {"d_model": 1024, "n_heads": 16, "ar_layers": 12, "nar_layers": 12, "dropout": 0.1},
}
PROMPT_PREFIX_MAX = 225
"""Longest NAR training prefix, in frames (3 s at 75 frames/s, as VALL-E-X)."""


class ModelConfig(BaseModel):
    """Sizes of a codec LM; stored in every checkpoint's config.json under `model`."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    d_model: int = Field(gt=0)
    """Width of both transformers."""
    n_heads: int = Field(gt=0)
    """Attention heads per layer."""
    ar_layers: int = Field(gt=0)
    """Layers of the autoregressive transformer."""
    nar_layers: int = Field(gt=0)
    """Layers of the non-autoregressive transformer."""
    n_text_tokens: int = Field(gt=0)
    """Rows of the text embeddings: at least the vocabulary's size."""
    codebook_size: int = Field(gt=1)
    """Entries per codec codebook."""
    n_codebooks: int = Field(ge=2)
    """Codec codebooks modelled: 1 by the AR, the rest by the NAR."""
    languages: list[str] = ["en"]
    """Language codes with a learned embedding, in id order."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout while training."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.d_model % 2:
            raise ValueError("d_model must be even (sine positions)")
        if not self.languages:
            raise ValueError("languages is empty")
        return self

    @classmethod
    def preset(cls, name: str, **fields: Any) -> ModelConfig:
        """A preset's sizes, with the vocabulary and codec sizes (and any override) given as fields."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset '{name}'; known: {', '.join(PRESETS)}")
        return cls.model_validate({**PRESETS[name], **fields})


class TokenEmbedding(nn.Module):
    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(rows, dim)

    @property
    def weight(self) -> Tensor:
        return self.word_embeddings.weight

    def forward(self, ids: Tensor) -> Tensor:
        return self.word_embeddings(ids)


class SinePosition(nn.Module):
    """x + alpha * sinusoid(position); alpha is learned in the AR, fixed at 1 in the NAR (as VALL-E-X)."""

    def __init__(self, dim: int, dropout: float, learn_alpha: bool):
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.ones(1), requires_grad=learn_alpha)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        position = torch.arange(offset, offset + x.shape[1], device=x.device, dtype=torch.float32)[:, None]
        rate = torch.exp(torch.arange(0, self.dim, 2, device=x.device, dtype=torch.float32) * (-math.log(10000.0) / self.dim))
        table = torch.zeros(x.shape[1], self.dim, device=x.device)
        table[:, 0::2] = torch.sin(position * rate)
        table[:, 1::2] = torch.cos(position * rate)
        return self.dropout(x + (self.alpha * table).to(x.dtype))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed q/k/v projection and an optional KV cache."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, mask: Tensor | None, past: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        batch, length, dim = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim)), (k, v)


class AdaptiveLayerNorm(nn.Module):
    """Layer norm whose scale and shift come from the NAR stage embedding."""

    def __init__(self, dim: int):
        super().__init__()
        self.project_layer = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, stage: Tensor) -> Tensor:
        scale, shift = self.project_layer(stage).chunk(2, dim=-1)
        return scale * self.norm(x) + shift


def _norm(norm: nn.Module, x: Tensor, stage: Tensor | None) -> Tensor:
    return norm(x) if stage is None else norm(x, stage)


class Block(nn.Module):
    """Pre-norm transformer layer: attention, then a ReLU feed-forward of 4x width."""

    def __init__(self, dim: int, heads: int, dropout: float, adaptive: bool):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.linear2 = nn.Linear(4 * dim, dim)
        self.norm1 = AdaptiveLayerNorm(dim) if adaptive else nn.LayerNorm(dim)
        self.norm2 = AdaptiveLayerNorm(dim) if adaptive else nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None, stage: Tensor | None, past: tuple[Tensor, Tensor] | None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        attended, kv = self.self_attn(_norm(self.norm1, x, stage), mask, past)
        x = x + self.dropout(attended)
        hidden = self.dropout(F.relu(self.linear1(_norm(self.norm2, x, stage))))
        return x + self.dropout(self.linear2(hidden)), kv


class Stack(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, dropout: float, adaptive: bool):
        super().__init__()
        self.layers = nn.ModuleList([Block(dim, heads, dropout, adaptive) for _ in range(layers)])
        self.norm = AdaptiveLayerNorm(dim) if adaptive else nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, stage: Tensor | None = None,
                cache: list[tuple[Tensor, Tensor]] | None = None) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """With `cache` (a list, empty at first), keys and values of every layer are kept and reused."""
        new_cache = []
        for index, layer in enumerate(self.layers):
            x, kv = layer(x, mask, stage, cache[index] if cache else None)
            new_cache.append(kv)
        return _norm(self.norm, x, stage), new_cache


@dataclass
class ARState:
    """KV cache of an AR generation, and how many audio positions it holds."""

    cache: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    audio_len: int = 0


class CodecLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d, v, q, p = config.d_model, config.codebook_size, config.n_codebooks, config.dropout
        self.eos = v  # AR output id for the end of speech; the NAR's pad id for codebook 1
        self.bos = v + 1  # AR input id that starts the audio

        self.ar_text_embedding = TokenEmbedding(config.n_text_tokens, d)
        self.ar_language_embedding = TokenEmbedding(len(config.languages), d)
        self.ar_audio_embedding = TokenEmbedding(v + 2, d)
        self.ar_text_position = SinePosition(d, p, learn_alpha=True)
        self.ar_audio_position = SinePosition(d, p, learn_alpha=True)
        self.ar_decoder = Stack(d, config.n_heads, config.ar_layers, p, adaptive=False)
        self.ar_predict_layer = nn.Linear(d, v + 1, bias=False)

        self.nar_text_embedding = TokenEmbedding(config.n_text_tokens, d)
        self.nar_language_embedding = TokenEmbedding(len(config.languages), d)
        self.nar_audio_embeddings = nn.ModuleList([TokenEmbedding(v + 1, d)] + [TokenEmbedding(v, d) for _ in range(q - 1)])
        self.nar_text_position = SinePosition(d, 0.0, learn_alpha=False)
        self.nar_audio_position = SinePosition(d, p, learn_alpha=False)
        self.nar_decoder = Stack(d, config.n_heads, config.nar_layers, p, adaptive=True)
        self.nar_predict_layers = nn.ModuleList([nn.Linear(d, v, bias=False) for _ in range(q - 1)])
        self.nar_stage_embeddings = nn.ModuleList([TokenEmbedding(1, d) for _ in range(q - 1)])
        self.tie_weights()

    def tied_aliases(self) -> dict[str, str]:
        """State-dict names that share another's tensor (alias -> stored name); checkpoints store one."""
        return {f"nar_predict_layers.{j}.weight": f"nar_audio_embeddings.{j + 2}.word_embeddings.weight"
                for j in range(self.config.n_codebooks - 2)}

    def tie_weights(self) -> None:
        for j in range(self.config.n_codebooks - 2):
            self.nar_predict_layers[j].weight = self.nar_audio_embeddings[j + 2].word_embeddings.weight

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return self.ar_predict_layer.weight.device

    # ------------------------------------------------------------------ pieces

    def _ar_text(self, text: Tensor, language: Tensor) -> Tensor:
        return self.ar_text_position(self.ar_text_embedding(text) + self.ar_language_embedding(language)[:, None])

    def _nar_text(self, text: Tensor, language: Tensor) -> Tensor:
        return self.nar_text_position(self.nar_text_embedding(text) + self.nar_language_embedding(language)[:, None])

    @staticmethod
    def _ar_pattern(text_len: int, audio_len: int, device: torch.device) -> Tensor:
        """[L, L] bool, True where a position may attend: text sees text, audio sees text and earlier audio."""
        total = text_len + audio_len
        allowed = torch.ones(total, total, dtype=torch.bool, device=device).tril()
        allowed[:, :text_len] = True
        allowed[:text_len, text_len:] = False
        return allowed

    # ------------------------------------------------------------------ training

    def training_loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Any]:
        """Teacher-forced AR and NAR cross-entropies (means over real tokens) of one batch."""
        text, text_lens = batch["text"], batch["text_lens"]
        codes, code_lens = batch["codes"], batch["code_lens"]
        size, text_len = text.shape
        frames = codes.shape[-1]
        device = text.device
        language = batch.get("language")
        if language is None:
            language = torch.zeros(size, dtype=torch.long, device=device)
        text_valid = torch.arange(text_len, device=device)[None] < text_lens[:, None]
        code_valid = torch.arange(frames, device=device)[None] < code_lens[:, None]

        # AR: inputs BOS q1[0..T-1], targets q1[0..T-1] EOS; positions after EOS are ignored.
        q1 = codes[:, 0].masked_fill(~code_valid, self.eos)
        inputs = F.pad(q1, (1, 0), value=self.bos)
        steps = torch.arange(frames + 1, device=device)[None]
        targets = F.pad(q1, (0, 1), value=self.eos).masked_fill(steps > code_lens[:, None], -100)
        audio_valid = steps <= code_lens[:, None]
        mask = self._ar_pattern(text_len, frames + 1, device)[None] & torch.cat([text_valid, audio_valid], 1)[:, None, :]
        x = torch.cat([self._ar_text(text, language), self.ar_audio_position(self.ar_audio_embedding(inputs))], 1)
        hidden, _ = self.ar_decoder(x, mask[:, None])
        ar_logits = self.ar_predict_layer(hidden[:, text_len:])
        ar_loss = F.cross_entropy(ar_logits.transpose(1, 2), targets, ignore_index=-100)

        # NAR: one random stage; a random prefix of each utterance acts as the acoustic prompt.
        n_q = self.config.n_codebooks
        stage = int(torch.randint(1, n_q, (1,), generator=generator).item())
        shortest = int(code_lens.min().item())
        limit = min(PROMPT_PREFIX_MAX, 2 * int(0.25 * shortest), shortest - 1)
        prefix = int(torch.randint(0, limit, (1,), generator=generator).item()) if limit > 0 else 0
        in_prefix = (torch.arange(frames, device=device) < prefix)[None, :, None]
        emb = self.nar_audio_embeddings[0](codes[:, 0].masked_fill(~code_valid, self.eos))
        for j in range(1, n_q):
            layer = self.nar_audio_embeddings[j](codes[:, j].masked_fill(~code_valid, 0))
            emb = emb + (layer if j < stage else layer * in_prefix)
        x = torch.cat([self._nar_text(text, language), self.nar_audio_position(emb)], 1)
        mask = torch.cat([text_valid, code_valid], 1)[:, None, None, :]
        hidden, _ = self.nar_decoder(x, mask, stage=self.nar_stage_embeddings[stage - 1].weight)
        nar_logits = self.nar_predict_layers[stage - 1](hidden[:, text_len + prefix:])
        nar_targets = codes[:, stage, prefix:].masked_fill(~code_valid[:, prefix:], -100)
        nar_loss = F.cross_entropy(nar_logits.transpose(1, 2), nar_targets, ignore_index=-100)

        return {
            "loss": ar_loss + nar_loss,
            "ar": ar_loss,
            "nar": nar_loss,
            "ar_accuracy": _accuracy(ar_logits, targets),
            "nar_accuracy": _accuracy(nar_logits, nar_targets),
            "nar_stage": stage,
        }

    # ------------------------------------------------------------------ inference

    def ar_start(self, text: Tensor, prompt_q1: Tensor, language: Tensor) -> tuple[Tensor, ARState]:
        """Logits [1, V+1] of the first generated token after [text ; BOS prompt_q1], and the cache."""
        audio = F.pad(prompt_q1, (1, 0), value=self.bos)
        x = torch.cat([self._ar_text(text, language), self.ar_audio_position(self.ar_audio_embedding(audio))], 1)
        mask = self._ar_pattern(text.shape[1], audio.shape[1], text.device)
        hidden, cache = self.ar_decoder(x, mask, cache=[])
        return self.ar_predict_layer(hidden[:, -1]), ARState(cache, audio.shape[1])

    def ar_step(self, token: Tensor, state: ARState) -> Tensor:
        """Logits [1, V+1] of the token after `token` [1]; extends the cache in `state`."""
        x = self.ar_audio_position(self.ar_audio_embedding(token[:, None]), offset=state.audio_len)
        hidden, state.cache = self.ar_decoder(x, None, cache=state.cache)
        state.audio_len += 1
        return self.ar_predict_layer(hidden[:, -1])

    def nar_predict(self, text: Tensor, prompt: Tensor, q1: Tensor, language: Tensor) -> Tensor:
        """Codes [1, n_q, T] for codebook-1 tokens q1 [1, T] (greedy, stage by stage)."""
        x = self._nar_text(text, language)
        offset = x.shape[1] + prompt.shape[-1]
        prompt_emb = sum((self.nar_audio_embeddings[j](prompt[:, j]) for j in range(self.config.n_codebooks)),
                         torch.zeros(1, prompt.shape[-1], self.config.d_model, device=x.device, dtype=x.dtype))
        emb = self.nar_audio_embeddings[0](q1)
        codes = [q1]
        for stage in range(1, self.config.n_codebooks):
            y = self.nar_audio_position(torch.cat([prompt_emb, emb], 1))
            hidden, _ = self.nar_decoder(torch.cat([x, y], 1), stage=self.nar_stage_embeddings[stage - 1].weight)
            predicted = self.nar_predict_layers[stage - 1](hidden[:, offset:]).argmax(-1)
            codes.append(predicted)
            emb = emb + self.nar_audio_embeddings[stage](predicted)
        return torch.stack(codes, 1)


def _accuracy(logits: Tensor, targets: Tensor) -> float:
    real = targets != -100
    return float(((logits.argmax(-1) == targets) & real).sum().item() / max(1, int(real.sum().item())))


def collate(texts: list[np.ndarray], codes: list[np.ndarray], pad_id: int,
            languages: list[int] | None = None, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """A training batch from utterances: phoneme ids [S] and codec tokens [n_q, T] each."""
    if len(texts) != len(codes) or not texts:
        raise ValueError("collate needs as many texts as code grids, at least one")
    text_lens = [len(t) for t in texts]
    code_lens = [c.shape[-1] for c in codes]
    text = np.full((len(texts), max(text_lens)), pad_id, dtype=np.int64)
    grid = np.zeros((len(codes), codes[0].shape[0], max(code_lens)), dtype=np.int64)
    for index, (t, c) in enumerate(zip(texts, codes)):
        text[index, : len(t)] = t
        grid[index, :, : c.shape[-1]] = c
    batch = {
        "text": torch.from_numpy(text),
        "text_lens": torch.tensor(text_lens),
        "codes": torch.from_numpy(grid),
        "code_lens": torch.tensor(code_lens),
        "language": torch.tensor(languages or [0] * len(texts)),
    }
    return {name: value.to(device) for name, value in batch.items()}
