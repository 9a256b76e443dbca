"""Codec-LM checkpoints: a folder holding `model.safetensors` and `config.json`.

API:

    save_checkpoint(folder, model, vocabulary, codec, training=None) -> Path
        # codec: the loaded codec; its identity and folder are recorded (the folder relative to
        # the checkpoint when it lies inside it). training: a JSON-able dict kept under "training".
        # Optimizer state for resuming is the trainer's own file beside these two (it is not
        # part of the checkpoint's sha256).
    load_checkpoint(folder, device="cpu", codec=None) -> Checkpoint
        # .path .model (eval mode) .config (ModelConfig) .vocabulary .codec .sha256 .training
        # codec=None loads the codec config.json names; a given codec is checked against it.
    read_config(folder) -> CheckpointConfig     # config.json validated, no weights read
    checkpoint_sha256(folder) -> str            # over config.json then model.safetensors (digest.py)
    expected_tensors(model_config) -> {name: shape}   # what model.safetensors must hold

config.json:

    {"format": "narro-codec-lm", "format_version": 1,
     "model": {ModelConfig}, "vocabulary": {Vocabulary},
     "codec": {"name": "encodec", "path": "codec-folder", "identity": {codec.identity}},
     "training": {...}}

Every problem raises CheckpointError with one line naming the file and the field or tensor:
a missing file, bad JSON, a missing, unexpected or mis-shaped tensor, a codec whose identity
differs from the one the model was trained with, or a vocabulary the text embedding cannot hold.
Tied tensors (CodecLM.tied_aliases) are stored once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from narro.engines.codec_lm.codec import Codec, load_codec
from narro.engines.codec_lm.digest import CONFIG_FILE, WEIGHTS_FILE, checkpoint_sha256
from narro.engines.codec_lm.frontend import Vocabulary
from narro.engines.codec_lm.model import CodecLM, ModelConfig
from narro.errors import CheckpointError

FORMAT = "narro-codec-lm"
FORMAT_VERSION = 1


class CodecRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str
    """Key of the codec table (narro.engines.codec_lm.codec.CODECS)."""
    path: str
    """The codec's folder: relative to the checkpoint folder, or absolute."""
    identity: dict[str, Any]
    """The codec's identity when the model was trained; the loaded codec must match it."""


class CheckpointConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    format: Literal["narro-codec-lm"]
    format_version: Literal[1]
    model: ModelConfig
    codec: CodecRef
    vocabulary: Vocabulary
    training: dict[str, Any] = {}
    """Whatever the trainer records (steps, losses, data); not read by inference."""


@dataclass
class Checkpoint:
    path: Path
    model: CodecLM
    config: ModelConfig
    vocabulary: Vocabulary
    codec: Codec
    sha256: str
    training: dict[str, Any] = field(default_factory=dict)


def _files(folder: Path) -> tuple[Path, Path]:
    return folder / CONFIG_FILE, folder / WEIGHTS_FILE


def read_config(folder: str | Path) -> CheckpointConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no checkpoint folder here (narro train or the VALL-E-X converter writes one)")
    config_file, weights_file = _files(folder)
    for path in (config_file, weights_file):
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; a checkpoint folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{config_file}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_file}:{error.lineno}: not valid JSON ({error.msg})") from None
    if isinstance(data, dict) and data.get("format") != FORMAT:
        raise CheckpointError(f"{config_file}: format: {data.get('format')!r} is not a narro codec-LM checkpoint "
                              f"(expected '{FORMAT}')")
    try:
        config = CheckpointConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise CheckpointError(f"{config_file}: {where}: {first['msg']}") from None
    if len(config.vocabulary) > config.model.n_text_tokens:
        raise CheckpointError(f"{config_file}: vocabulary has {len(config.vocabulary)} symbols but the text embedding "
                              f"has {config.model.n_text_tokens} rows (model.n_text_tokens)")
    if config.vocabulary.language not in config.model.languages:
        raise CheckpointError(f"{config_file}: vocabulary.language '{config.vocabulary.language}' is not among "
                              f"model.languages {config.model.languages}")
    return config


def expected_tensors(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes model.safetensors must hold for this model config (tied aliases left out)."""
    with torch.device("meta"):
        model = CodecLM(config)
    aliases = model.tied_aliases()
    return {name: tuple(t.shape) for name, t in model.state_dict().items() if name not in aliases}


def _check_tensors(weights_file: Path, expected: dict[str, tuple[int, ...]]) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            found = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for any damage
        raise CheckpointError(f"{weights_file}: not a readable safetensors file ({error})") from None
    missing = sorted(set(expected) - set(found))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{weights_file}: tensor '{missing[0]}' is missing{more}; the weights do not match "
                              f"{CONFIG_FILE}'s model")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{weights_file}: unexpected tensor '{unexpected[0]}'{more}; the weights do not match "
                              f"{CONFIG_FILE}'s model")
    for name, shape in expected.items():
        if found[name] != shape:
            raise CheckpointError(f"{weights_file}: tensor '{name}' has shape {list(found[name])}, "
                                  f"{CONFIG_FILE}'s model expects {list(shape)}")


def check_codec(folder: Path, config: CheckpointConfig, codec: Codec) -> None:
    """The codec must be the one the model was trained with, field by field."""
    actual = codec.identity
    for key, wanted in config.codec.identity.items():
        if actual.get(key) != wanted:
            raise CheckpointError(f"{folder / CONFIG_FILE}: codec mismatch: the model was trained with "
                                  f"{config.codec.name} {key}={wanted!r}, the codec at {codec.path} has {actual.get(key)!r}")
    model = config.model
    if (codec.codebook_size, codec.n_codebooks) != (model.codebook_size, model.n_codebooks):
        raise CheckpointError(f"{folder / CONFIG_FILE}: codec mismatch: the model predicts {model.n_codebooks} codebooks "
                              f"of {model.codebook_size}, the codec at {codec.path} has {codec.n_codebooks} of "
                              f"{codec.codebook_size}")


def codec_folder(folder: Path, config: CheckpointConfig) -> Path:
    path = Path(config.codec.path)
    return path if path.is_absolute() else (folder / path)


def load_checkpoint(folder: str | Path, device: str = "cpu", codec: Codec | None = None) -> Checkpoint:
    from safetensors.torch import load_file

    folder = Path(folder).resolve()
    config = read_config(folder)
    config_file, weights_file = _files(folder)
    _check_tensors(weights_file, expected_tensors(config.model))
    if codec is None:
        codec = load_codec(config.codec.name, codec_folder(folder, config), n_codebooks=config.model.n_codebooks,
                           device=device)
    check_codec(folder, config, codec)

    with torch.device("meta"):
        model = CodecLM(config.model)
    model = model.to_empty(device=device)
    model.tie_weights()
    tensors = load_file(str(weights_file), device=str(device))
    model.load_state_dict(tensors, strict=False)  # names and shapes were checked above; aliases follow their tie
    model.eval()
    return Checkpoint(folder, model, config.model, config.vocabulary, codec, checkpoint_sha256(folder),
                      dict(config.training))


def save_checkpoint(folder: str | Path, model: CodecLM, vocabulary: Vocabulary, codec: Codec,
                    training: dict[str, Any] | None = None) -> Path:
    """Write model.safetensors and config.json (each replaced whole, so a reader never sees half a file)."""
    from safetensors.torch import save_file

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    codec_path = Path(codec.path).resolve()
    stored_path = str(codec_path.relative_to(folder)) if codec_path.is_relative_to(folder) else str(codec_path)
    config = CheckpointConfig(format=FORMAT, format_version=FORMAT_VERSION, model=model.config,
                              codec=CodecRef(name=codec.name, path=stored_path, identity=codec.identity),
                              vocabulary=vocabulary, training=training or {})
    aliases = model.tied_aliases()
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items() if name not in aliases}
    config_file, weights_file = _files(folder)
    save_file(tensors, str(weights_file.with_suffix(".tmp")), metadata={"format": FORMAT})
    os.replace(weights_file.with_suffix(".tmp"), weights_file)
    config_file.with_suffix(".tmp").write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n",
                                               encoding="utf-8")
    os.replace(config_file.with_suffix(".tmp"), config_file)
    return folder
