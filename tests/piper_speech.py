"""Real speech for the quality tier's tests: narro's offline piper voice, synthesised once per session."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

# No commas: a pause inside a sentence would be as good a place to cut a reference as one between two.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Speech synthesis turns written text into spoken audio.",
    "A neural codec turns audio into discrete tokens.",
    "The model is prompted by a short reference recording.",
    "Every clip is watermarked before it is published.",
    "Loudness is brought to the same level for every clip.",
    "Short lines are hard for codec language models.",
    "Open models drop words with long references.",
    "The course team writes one manifest per course.",
    "A failed clip is retried without rendering the others.",
)


@functools.cache
def piper_sentences() -> tuple[tuple[np.ndarray, ...], int]:
    """Each of SENTENCES spoken by the bundled piper voice (float32 mono) and the sample rate."""
    from narro.engines import engine_for
    from narro.settings import Settings
    from narro.voices import EngineVoice

    engine = engine_for(EngineVoice(engine="piper", model="joe-us-medium"), Settings())
    spoken = [engine.synthesize(text) for text in SENTENCES]
    return tuple(s.samples for s in spoken), spoken[0].sample_rate


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Float samples as a 16-bit WAV (as a recorder would save them)."""
    from scipy.io import wavfile

    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, sample_rate, (np.clip(samples, -1, 1) * 32767).astype(np.int16))
    return path


def ljspeech_folder(folder: Path) -> Path:
    """SENTENCES as an LJSpeech-style dataset: metadata.csv (id|text) and wavs/ID.wav."""
    clips, rate = piper_sentences()
    lines = []
    for index, (text, samples) in enumerate(zip(SENTENCES, clips, strict=True)):
        write_wav(folder / "wavs" / f"utt{index:02d}.wav", samples, rate)
        lines.append(f"utt{index:02d}|{text}\n")
    (folder / "metadata.csv").write_text("".join(lines), encoding="utf-8")
    return folder


def data_initialised_encodec(folder: Path) -> Path:
    """A tiny random-weight EnCodec whose codebooks are drawn from its own encoder's output on piper speech.

    This is how EnCodec initialises its codebooks (k-means on the first batch), reduced to a
    random pick: a random encoder's output clusters near one point, so codebooks drawn at random
    (make_tiny_encodec) give one token for everything, and there would be nothing to learn.
    """
    import torch
    from transformers import EncodecModel

    from narro.engines.codec_lm.codec import make_tiny_encodec
    from narro.engines.codec_lm.reference import codec_input

    make_tiny_encodec(folder)
    model = EncodecModel.from_pretrained(str(folder), local_files_only=True)
    clips, rate = piper_sentences()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        residual = torch.cat([model.encoder(torch.from_numpy(codec_input(c, rate, 24000))[None, None])[0].T
                              for c in clips])
        for layer in model.quantizer.layers:
            picked = torch.randint(len(residual), (layer.codebook.embed.shape[0],), generator=generator)
            layer.codebook.embed.copy_(residual[picked] + 1e-3 * torch.randn(len(picked), residual.shape[1],
                                                                               generator=generator))
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            residual = residual - layer.decode(layer.encode(residual.T[None]))[0].T
    model.save_pretrained(str(folder))
    return folder


def consented_clone(folder: Path, name: str, checkpoint: Path, reference: Path, reference_text: str) -> Path:
    """voices.yaml with a codec-lm voice `name`, its consent.yaml record, and a course its consent covers.

    Returns the course manifest: `narro say --manifest` it to speak with the cloned voice.
    """
    import hashlib
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "voices.yaml").write_text(
        f"default: {name}\nvoices:\n  {name}:\n    quality:\n      engine: codec-lm\n      model: {checkpoint}\n"
        f"      reference: {reference}\n      reference_text: {json.dumps(reference_text)}\n      seed: 3\n",
        encoding="utf-8")
    reference_sha256 = hashlib.sha256(reference.read_bytes()).hexdigest()
    (folder / "consent.yaml").write_text(
        f"consent:\n  {name}:\n    id: consent-test-{name}\n    speaker: Joe Piper\n    collected_by: narro tests\n"
        f"    collected_at: 2026-01-01\n    scope: [course:clone-test]\n    expires: 2099-12-31\n"
        f"    references: ['{reference_sha256}']\n    document_sha256: '{'0' * 64}'\n", encoding="utf-8")
    manifest = folder / "course.yaml"
    manifest.write_text(f"course: clone-test\ntitle: Clone test\ndefaults: {{voice: {name}, tier: quality}}\n"
                        "narrations:\n  - id: n1\n    text: A short line.\n", encoding="utf-8")
    return manifest
