"""Convert the published VALL-E-X checkpoint (Plachtaa/VALL-E-X, MIT licence) to a narro checkpoint.

    python -m narro.engines.codec_lm.convert vallex-checkpoint.pt OUT_DIR --codec ENCODEC_DIR [--copy-codec]

The weights are `vallex-checkpoint.pt` (about 1.5 GB) from the Hugging Face repository
Plachta/VALL-E-X; the codec is EnCodec 24 kHz in the Hugging Face layout (facebook/encodec_24khz:
config.json and model.safetensors). narro downloads neither: fetch both once, then convert.

API:

    vallex_shapes(d_model, n_layers, n_text_tokens, codebook_size, n_codebooks, n_languages)
        -> {name: shape}   # the published state dict's layout, from VALL-E-X's models/vallex.py
    VALLEX_VOCABULARY      # its 70 phoneme symbols (utils/g2p/bpe_69.json) and espeak mappings
    read_state_dict(path) -> {name: tensor}
    convert(source, out, codec, n_heads=16, copy_codec=False) -> Path

Narro's CodecLM uses the published parameter names, so conversion is a check, not a rename:
every name and shape must match `vallex_shapes` for the sizes read off the tensors (the head
count cannot be read off, VALL-E-X uses 16), and the tensors VALL-E-X shares (NAR output layer
j and the audio embedding of codebook j+2) must be equal. The shared copies are stored once.

The text front end cannot be matched exactly: VALL-E-X phonemised English with eng_to_ipa
(CMU dictionary), narro uses espeak-ng. `VALLEX_VOCABULARY` maps espeak's symbols onto the
published 70-symbol set (length marks dropped, r-coloured vowels spelled ə+ɹ, dark l marked as
VALL-E-X does); stress marks still sit where espeak puts them (before the vowel, not the
syllable). How much that costs is unmeasured without the weights.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from narro.engines.codec_lm.checkpoint import save_checkpoint
from narro.engines.codec_lm.codec import load_codec
from narro.engines.codec_lm.frontend import Vocabulary
from narro.engines.codec_lm.model import CodecLM, ModelConfig
from narro.errors import CheckpointError, NarroError

VALLEX_LANGUAGES = ["en", "zh", "ja"]
"""VALLE.language_ID order in models/vallex.py."""
VALLEX_HEADS = 16

VALLEX_VOCABULARY = Vocabulary(
    # utils/g2p/bpe_69.json: a BPE model without merges over these symbols, ids in this order.
    symbols=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "!", "#", "*", ",", "-", ".", "=", "?", "N", "Q", "^", "_",
             "`", "a", "b", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "s", "t", "u", "v", "w",
             "x", "y", "z", "~", "æ", "ç", "ð", "ŋ", "ɑ", "ɔ", "ə", "ɛ", "ɥ", "ɪ", "ɫ", "ɯ", "ɸ", "ɹ", "ɾ", "ʃ", "ʊ",
             "ʑ", "ʒ", "ʰ", "ˈ", "ˌ", "θ", "…", "⁼", "↑", "→", "↓"],
    pad="[PAD]", unk="[UNK]", space="_", dark_l=True, espeak_voice="en-us", language="en",
    aliases={
        "ː": "", "\u0329": "", "\u0303": "", "ʲ": "",  # length, syllabic and nasal marks: not in the set
        "ɜ": "əɹ", "ɚ": "əɹ",                         # eng_to_ipa writes r-coloured vowels as ər
        "ɐ": "ə", "ʌ": "ə", "ᵻ": "ɪ", "ɒ": "ɑ",
        "ɡ": "g", "r": "ɹ", "ʔ": "t", "ɾ": "t", "ɬ": "l",
        ";": ",", ":": ",",
    },
)


def vallex_shapes(d_model: int = 1024, n_layers: int = 12, n_text_tokens: int = 2048, codebook_size: int = 1024,
                  n_codebooks: int = 8, n_languages: int = 3) -> dict[str, tuple[int, ...]]:
    """Every tensor of VALL-E-X's `checkpoint["model"]` and its shape (VALLE with norm_first, no prenet,
    prepend_bos, share_embedding, nar_scale_factor 1)."""
    d, v = d_model, codebook_size
    shapes: dict[str, tuple[int, ...]] = {}
    for side in ("ar", "nar"):
        shapes[f"{side}_text_embedding.word_embeddings.weight"] = (n_text_tokens, d)
        shapes[f"{side}_language_embedding.word_embeddings.weight"] = (n_languages, d)
        shapes[f"{side}_text_position.alpha"] = (1,)
        shapes[f"{side}_audio_position.alpha"] = (1,)
        for layer in range(n_layers):
            prefix = f"{side}_decoder.layers.{layer}"
            shapes |= {f"{prefix}.self_attn.in_proj_weight": (3 * d, d), f"{prefix}.self_attn.in_proj_bias": (3 * d,),
                       f"{prefix}.self_attn.out_proj.weight": (d, d), f"{prefix}.self_attn.out_proj.bias": (d,),
                       f"{prefix}.linear1.weight": (4 * d, d), f"{prefix}.linear1.bias": (4 * d,),
                       f"{prefix}.linear2.weight": (d, 4 * d), f"{prefix}.linear2.bias": (d,)}
            for norm in ("norm1", "norm2"):
                shapes |= _norm_shapes(f"{prefix}.{norm}", d, adaptive=side == "nar")
        shapes |= _norm_shapes(f"{side}_decoder.norm", d, adaptive=side == "nar")
    shapes["ar_audio_embedding.word_embeddings.weight"] = (v + 2, d)  # + EOS and BOS
    shapes["ar_predict_layer.weight"] = (v + 1, d)  # + EOS
    for j in range(n_codebooks):
        shapes[f"nar_audio_embeddings.{j}.word_embeddings.weight"] = (v + 1 if j == 0 else v, d)
    for j in range(n_codebooks - 1):
        shapes[f"nar_predict_layers.{j}.weight"] = (v, d)
        shapes[f"nar_stage_embeddings.{j}.word_embeddings.weight"] = (1, d)
    return shapes


def _norm_shapes(prefix: str, d: int, adaptive: bool) -> dict[str, tuple[int, ...]]:
    if adaptive:
        return {f"{prefix}.project_layer.weight": (2 * d, d), f"{prefix}.project_layer.bias": (2 * d,),
                f"{prefix}.norm.weight": (d,), f"{prefix}.norm.bias": (d,)}
    return {f"{prefix}.weight": (d,), f"{prefix}.bias": (d,)}


class _Opaque:
    """Stands in for any non-tensor object pickled beside the weights (paths, hyper-parameters)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def read_state_dict(source: Path) -> dict[str, torch.Tensor]:
    """The tensors of a VALL-E-X .pt file (its "model" entry), read without running pickled code.

    torch's weights-only loader refuses unknown classes; the training state saved beside the
    weights (a pathlib path from the trainer's machine, for one) is replaced by inert stand-ins.
    """
    if not source.is_file():
        raise CheckpointError(f"{source}: no such file")
    try:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(str(source))
        with torch.serialization.safe_globals([(_Opaque, name) for name in unknown]):
            data = torch.load(str(source), map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError, OSError, EOFError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint ({first})") from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{source}: holds no state dict of tensors (expected VALL-E-X's {{'model': ...}})")
    # Saved from a DistributedDataParallel wrapper, names carry a 'module.' prefix.
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for name in state if (m := re.match(pattern, name))}
    return max(indices) + 1 if indices else 0


def model_config_of(state: dict[str, torch.Tensor], source: Path, n_heads: int = VALLEX_HEADS) -> ModelConfig:
    """The sizes a VALL-E-X state dict was built with, checked against the published layout."""
    try:
        n_text_tokens, d_model = state["ar_text_embedding.word_embeddings.weight"].shape
        n_languages = state["ar_language_embedding.word_embeddings.weight"].shape[0]
        codebook_size = state["ar_predict_layer.weight"].shape[0] - 1
    except KeyError as missing:
        raise CheckpointError(f"{source}: tensor {missing} is missing; not a VALL-E-X checkpoint") from None
    ar_layers = _count(state, r"ar_decoder\.layers\.(\d+)\.")
    nar_layers = _count(state, r"nar_decoder\.layers\.(\d+)\.")
    n_codebooks = _count(state, r"nar_audio_embeddings\.(\d+)\.")
    if ar_layers != nar_layers:
        raise CheckpointError(f"{source}: {ar_layers} AR layers but {nar_layers} NAR layers; VALL-E-X has as many of each")
    if n_languages > len(VALLEX_LANGUAGES):
        raise CheckpointError(f"{source}: {n_languages} language embeddings, VALL-E-X has {len(VALLEX_LANGUAGES)}")
    expected = vallex_shapes(d_model, ar_layers, n_text_tokens, codebook_size, n_codebooks, n_languages)
    for name, shape in expected.items():
        if name not in state:
            raise CheckpointError(f"{source}: tensor '{name}' is missing; not a VALL-E-X checkpoint of this layout")
        if tuple(state[name].shape) != shape:
            raise CheckpointError(f"{source}: tensor '{name}' has shape {list(state[name].shape)}, "
                                  f"VALL-E-X's layout gives {list(shape)}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensor '{unexpected[0]}'"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    try:
        return ModelConfig(d_model=d_model, n_heads=n_heads, ar_layers=ar_layers, nar_layers=nar_layers,
                           n_text_tokens=n_text_tokens, codebook_size=codebook_size, n_codebooks=n_codebooks,
                           languages=VALLEX_LANGUAGES[:n_languages], dropout=0.1)
    except ValueError as error:
        raise CheckpointError(f"{source}: {str(error).splitlines()[-1].strip()}") from None


def convert(source: str | Path, out: str | Path, codec_folder: str | Path, n_heads: int = VALLEX_HEADS,
            copy_codec: bool = False) -> Path:
    """Write a narro checkpoint at `out` from a VALL-E-X .pt file and an EnCodec folder."""
    source, out = Path(source), Path(out)
    state = read_state_dict(source)
    config = model_config_of(state, source, n_heads)
    if copy_codec:
        shutil.copytree(codec_folder, out / "codec", dirs_exist_ok=True)
        codec_folder = out / "codec"
    codec = load_codec("encodec", codec_folder, n_codebooks=config.n_codebooks)
    if codec.codebook_size != config.codebook_size:
        raise CheckpointError(f"{codec.path}: codebooks of {codec.codebook_size}, the checkpoint predicts "
                              f"{config.codebook_size}; give EnCodec 24 kHz")
    model = CodecLM(config)
    aliases = model.tied_aliases()
    for alias, stored in aliases.items():
        if not torch.equal(state[alias], state[stored]):
            raise CheckpointError(f"{source}: '{alias}' differs from '{stored}'; VALL-E-X shares them "
                                  "(share_embedding), this checkpoint does not")
    model.load_state_dict(state, strict=True)
    return save_checkpoint(out, model, VALLEX_VOCABULARY, codec,
                           {"converted_from": source.name, "origin": "Plachtaa/VALL-E-X (MIT)"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m narro.engines.codec_lm.convert",
                                     description="Convert a VALL-E-X checkpoint to a narro codec-LM checkpoint folder.")
    parser.add_argument("source", type=Path, help="vallex-checkpoint.pt")
    parser.add_argument("out", type=Path, help="checkpoint folder to write")
    parser.add_argument("--codec", type=Path, required=True, help="EnCodec 24 kHz folder (Hugging Face layout)")
    parser.add_argument("--heads", type=int, default=VALLEX_HEADS, help="attention heads (VALL-E-X: 16)")
    parser.add_argument("--copy-codec", action="store_true", help="copy the codec into OUT/codec")
    args = parser.parse_args(argv)
    try:
        written = convert(args.source, args.out, args.codec, args.heads, args.copy_codec)
    except NarroError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
