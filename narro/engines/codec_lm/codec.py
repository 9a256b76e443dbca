"""Neural audio codecs behind one small interface, named in one table.

API:

    codec = load_codec("encodec", folder, n_codebooks=8, device="cpu")   # CODECS[name](...)
    codec.sample_rate, codec.frame_rate, codec.hop_length    # 24000, 75, 320 for EnCodec 24 kHz
    codec.n_codebooks, codec.codebook_size                   # 8, 1024
    codec.identity          # property: dict of what shapes the tokens (name, rates, sizes, weights sha256)
    codec.path              # the folder it was loaded from
    codec.encode(samples)   # mono float32 at sample_rate -> np.int64 [n_codebooks, frames]
    codec.decode(codes)     # int [n_codebooks, frames] (numpy or torch) -> np.float32 [frames * hop_length]
    make_tiny_encodec(folder, seed=0)   # a random-weight EnCodec saved in the Hugging Face layout (tests)

A codec is loaded from a local folder only: nothing is downloaded. EnCodec's folder is the
published Hugging Face layout (`config.json` plus `model.safetensors` or `pytorch_model.bin`),
e.g. a copy of facebook/encodec_24khz. Another codec (SNAC, DAC, Mimi) is one more class with
the same attributes, added to CODECS.

Decoding is causal for EnCodec 24 kHz (causal convolutions, a unidirectional LSTM), so a chunk
decoded with some frames of left context matches the whole decode closely: streaming relies on it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from narro.engines.codec_lm.digest import files_sha256
from narro.errors import EngineUnavailable

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _quiet_transformers() -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # narro reports its own progress; bars would litter logs


class Codec(Protocol):
    name: str
    path: Path
    sample_rate: int
    frame_rate: int
    hop_length: int
    n_codebooks: int
    codebook_size: int

    @property
    def identity(self) -> dict[str, object]: ...

    def encode(self, samples: np.ndarray) -> np.ndarray: ...

    def decode(self, codes: Any) -> np.ndarray: ...


class EncodecCodec:
    """transformers' EncodecModel, from a local folder, at the bandwidth that gives `n_codebooks`."""

    name = "encodec"

    def __init__(self, folder: str | Path, n_codebooks: int = 8, device: str = "cpu"):
        from transformers import EncodecModel

        _quiet_transformers()
        self.path = Path(folder).resolve()
        weights = [self.path / name for name in WEIGHT_FILES if (self.path / name).is_file()]
        if not (self.path / "config.json").is_file() or not weights:
            raise EngineUnavailable(f"{self.path}: no EnCodec model here (config.json and model.safetensors expected, "
                                    "the Hugging Face layout of facebook/encodec_24khz); nothing is downloaded")
        try:
            self.model = EncodecModel.from_pretrained(str(self.path), local_files_only=True).to(device).eval()
        except (OSError, ValueError, RuntimeError) as error:
            raise EngineUnavailable(f"{self.path}: cannot load the EnCodec model: {error}") from error
        config = self.model.config
        self.sample_rate = int(config.sampling_rate)
        self.frame_rate = int(config.frame_rate)
        self.hop_length = int(np.prod(config.upsampling_ratios))
        self.codebook_size = int(config.codebook_size)
        self.n_codebooks = n_codebooks
        # transformers picks the codebook count from a bandwidth: bits per frame times frames per second.
        bandwidth = n_codebooks * self.frame_rate * math.log2(self.codebook_size) / 1000
        allowed = [float(b) for b in config.target_bandwidths]
        if not any(math.isclose(bandwidth, b) for b in allowed):
            raise EngineUnavailable(f"{self.path}: {n_codebooks} codebooks need a {bandwidth:g} kbps bandwidth; "
                                    f"this EnCodec offers {allowed}")
        self.bandwidth = next(b for b in allowed if math.isclose(bandwidth, b))
        self.device = torch.device(device)
        self._weights_sha256 = files_sha256([self.path / "config.json", *weights])

    @property
    def identity(self) -> dict[str, object]:
        return {
            "name": self.name,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "n_codebooks": self.n_codebooks,
            "codebook_size": self.codebook_size,
            "bandwidth_kbps": self.bandwidth,
            "weights_sha256": self._weights_sha256,
        }

    @torch.inference_mode()
    def encode(self, samples: np.ndarray) -> np.ndarray:
        audio = np.asarray(samples, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"encode needs mono samples, got shape {audio.shape}")
        values = torch.from_numpy(audio).to(self.device)[None, None, :]
        codes = self.model.encode(values, bandwidth=self.bandwidth, return_dict=True).audio_codes
        return codes[0, 0].to("cpu", torch.int64).numpy()

    @torch.inference_mode()
    def decode(self, codes: Any) -> np.ndarray:
        grid = torch.as_tensor(codes, dtype=torch.int64, device=self.device)
        if grid.ndim != 2 or grid.shape[0] != self.n_codebooks:
            raise ValueError(f"decode needs codes of shape [{self.n_codebooks}, frames], got {tuple(grid.shape)}")
        if grid.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        if int(grid.min()) < 0 or int(grid.max()) >= self.codebook_size:
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got {int(grid.min())}..{int(grid.max())}")
        audio = self.model.decode(grid[None, None], [None], return_dict=True).audio_values
        return audio[0, 0, : grid.shape[1] * self.hop_length].float().cpu().numpy()


CODECS: dict[str, type[EncodecCodec]] = {"encodec": EncodecCodec}


def load_codec(name: str, folder: str | Path, n_codebooks: int = 8, device: str = "cpu") -> EncodecCodec:
    """The codec `name` (a key of CODECS) from its local folder."""
    try:
        kind = CODECS[name]
    except KeyError:
        raise EngineUnavailable(f"unknown codec '{name}'; known: {', '.join(sorted(CODECS))}") from None
    return kind(folder, n_codebooks=n_codebooks, device=device)


def make_tiny_encodec(folder: str | Path, seed: int = 0) -> Path:
    """A random-weight EnCodec (24 kHz, 75 frames/s, 8 codebooks of 256 at 4.8 kbps) saved in the HF layout.

    Its codebooks are filled with random vectors: transformers starts them at zero, which would
    make every token decode alike. Used by tests; its audio is noise.
    """
    from transformers import EncodecConfig, EncodecModel

    _quiet_transformers()
    torch.manual_seed(seed)
    config = EncodecConfig(hidden_size=16, num_filters=4, num_lstm_layers=1, codebook_size=256,
                           target_bandwidths=[4.8], upsampling_ratios=[8, 5, 4, 2])
    model = EncodecModel(config)
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.inited.fill_(1.0)
    model.save_pretrained(str(folder))
    return Path(folder)
