"""How far caption times are from when the words are really said.

    .venv/bin/python bench/captions.py [--manifest manifests/bench-course.yaml] [--clips 12]
                                       [--out bench/results/captions.json]

Two kinds of clip whose true word times are known:

- piper (the default engine; captions *aligned* from the quality gate's ASR pass): the voice
  model patched in memory to also output each phoneme's duration (piper's own
  `include_alignments`, which needs the `onnx` package: `pip install onnx`). A written word's
  true start is the start of its first phoneme: each word is phonemised alone by the same
  espeak-ng and its phonemes are matched, character by character, to the phonemes the voice
  spoke (espeak joins "of the" and splits "EnCodec", so words are not simply counted off).
- edge (captions from the *engine's* word boundaries): the protocol emulator's synthetic voice,
  whose boundaries are exact (tests/edge_emulator.py).

For every cue: |cue start - true start of its first word|; for every word with a true time:
|aligned word start - true start|. Median and 95th percentile of each, the alignment's
coverage, and what word timings add to the ASR pass. Audio as the engine made it (no trimming
or encoding: those shift both sides alike).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from narro.align import align  # noqa: E402
from narro.asr import transcriber_for  # noqa: E402
from narro.captions import build  # noqa: E402
from narro.engines.piper import SENTENCE_PAUSE_S, model_path  # noqa: E402
from narro.manifest import load_course  # noqa: E402
from narro.settings import Settings  # noqa: E402
from narro.text import speech  # noqa: E402
from narro.voices import EngineVoice  # noqa: E402
from tests.edge_emulator import SAMPLE_RATE as EDGE_RATE  # noqa: E402
from tests.edge_emulator import synthetic_speech  # noqa: E402

SILENT = set("^$ ,.;:!?ˈˌ")  # markers, pauses and stress: not sounds of their own


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summary(signed: list[float]) -> dict[str, float | None]:
    """Median, 95th percentile and largest |error|, and the median signed error (+: captions late)."""
    errors = [abs(e) for e in signed]
    return {"n": len(errors), "median_s": round(statistics.median(errors), 3) if errors else None,
            "p95_s": round(percentile(errors, 95), 3), "max_s": round(max(errors), 3) if errors else None,
            "bias_s": round(statistics.median(signed), 3) if signed else None}


class PiperTruth:
    """Piper speech for a text with the true start of each written word."""

    def __init__(self) -> None:
        from piper import PiperVoice, SynthesisConfig

        self.voice = PiperVoice.load(model_path(EngineVoice(engine="piper", model="joe-us-medium")),
                                     include_alignments=True)
        # As narro's piper engine speaks: deterministic, sentences joined by a fixed pause.
        self.config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
        self.rate = self.voice.config.sample_rate

    def phonemes(self, text: str) -> str:
        return "".join(ch for sentence in self.voice.phonemize(text) for ch in sentence if ch not in SILENT)

    def speak(self, script: list[tuple[str, str]], spoken: str) -> tuple[np.ndarray, list[float | None]]:
        pieces, sounds = [], []  # sounds: (phoneme, start in seconds) in speaking order
        position = 0
        pause = np.zeros(int(SENTENCE_PAUSE_S * self.rate), np.float32)
        for chunk in self.voice.synthesize(spoken, self.config, include_alignments=True):
            if pieces:
                pieces.append(pause)
                position += len(pause)
            if chunk.phoneme_alignments is None:
                raise SystemExit("piper gave no phoneme alignments: pip install onnx")
            at = position
            for aligned in chunk.phoneme_alignments:
                if aligned.phoneme not in SILENT:
                    sounds.append((aligned.phoneme, at / self.rate))
                at += int(aligned.num_samples)
            pieces.append(chunk.audio_float_array)
            position += len(chunk.audio_float_array)
        owners, expected = [], []
        for index, (_, said) in enumerate(script):
            for ch in self.phonemes(said) if said.strip(" ,.;:!?\"'") else "":
                owners.append(index)
                expected.append(ch)
        starts: list[float | None] = [None] * len(script)
        matcher = SequenceMatcher(a=expected, b=[s for s, _ in sounds], autojunk=False)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                owner = owners[block.a + k]
                if starts[owner] is None:
                    # Only a word whose first phoneme was found has a trustworthy start.
                    first = owners.index(owner)
                    if block.a + k == first:
                        starts[owner] = sounds[block.b + k][1]
        return np.concatenate(pieces).astype(np.float32), starts


def measure_piper(texts: list[tuple[str, str]], settings: Settings) -> dict:
    truth = PiperTruth()
    transcriber = transcriber_for(settings.asr)
    cue_errors, word_errors, clips = [], [], []
    for narration_id, written in texts:
        script = speech(written)
        words = script.words()
        audio, starts = truth.speak(words, script.spoken)
        duration = len(audio) / truth.rate
        heard = transcriber.transcribe(audio, truth.rate, words=True)
        made = build(words, heard.words, duration, "aligned")
        aligned = align(words, heard.words, (0.0, duration)).words
        errors = [a.start_s - s for a, s in zip(aligned, starts, strict=True) if s is not None]
        word_errors += errors
        first_words, index = [], 0
        for cue in made.cues:
            first_words.append(index)
            index += len(cue.text.split())
        clip_cues = [cue.start_s - starts[i] for cue, i in zip(made.cues, first_words, strict=True)
                     if starts[i] is not None]
        cue_errors += clip_cues
        clips.append({"id": narration_id, "audio_s": round(duration, 2), "words": len(words),
                      "words_with_truth": sum(s is not None for s in starts), "cues": len(made.cues),
                      "coverage": round(made.coverage, 3), "asr_s": round(heard.seconds, 3),
                      "align_s": round(heard.align_s, 3),
                      "cue_start": summary(clip_cues)})
        print(f"  {narration_id}: {duration:.1f} s, {len(made.cues)} cues, coverage {made.coverage:.2f}, "
              f"ASR {heard.seconds:.2f} s of which word timing {heard.align_s:.2f} s", flush=True)
    asr = sum(c["asr_s"] for c in clips)
    timing = sum(c["align_s"] for c in clips)
    audio_s = sum(c["audio_s"] for c in clips)
    return {"cue_start": summary(cue_errors), "word_start": summary(word_errors), "clips": clips,
            "coverage_mean": round(statistics.mean(c["coverage"] for c in clips), 3),
            "word_timing_cost": {"align_s": round(timing, 2), "asr_s": round(asr, 2), "audio_s": round(audio_s, 1),
                                 "share_of_asr": round(timing / asr, 3),
                                 "per_minute_of_audio_s": round(60 * timing / audio_s, 3)}}


def measure_edge(texts: list[tuple[str, str]]) -> dict:
    cue_errors = []
    for _, written in texts:
        script = speech(written)
        audio, boundaries = synthetic_speech(script.spoken)
        duration = len(audio) / EDGE_RATE
        from narro.engines.base import WordTiming

        heard = [WordTiming(w, s, e) for w, s, e in boundaries]
        made = build(script.words(), heard, duration, "engine")
        truth = align(script.words(), heard, (0.0, duration)).words  # exact: every word has its boundary
        index = 0
        for cue in made.cues:
            cue_errors.append(cue.start_s - truth[index].start_s)
            index += len(cue.text.split())
    return {"cue_start": summary(cue_errors)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", default=str(ROOT / "manifests" / "bench-course.yaml"))
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "captions.json"))
    args = parser.parse_args()
    course = load_course(args.manifest)
    texts = [(n.id, n.written or n.text) for n in course.narrations[: args.clips]]
    started = time.perf_counter()
    print(f"piper, aligned from the ASR pass ({len(texts)} clips of {args.manifest}):")
    piper = measure_piper(texts, Settings())
    edge = measure_edge(texts)
    result = {"manifest": args.manifest, "clips": len(texts), "piper_aligned": piper, "edge_engine": edge,
              "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
              "wall_s": round(time.perf_counter() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'clips':<26}{'what':<14}{'n':>6}{'median':>9}{'p95':>9}{'max':>9}{'bias':>9}")
    for label, what, figures in (("piper, aligned (ASR)", "cue start", piper["cue_start"]),
                                 ("piper, aligned (ASR)", "word start", piper["word_start"]),
                                 ("edge emulator, engine", "cue start", edge["cue_start"])):
        print(f"{label:<26}{what:<14}{figures['n']:>6}{figures['median_s']:>8.3f}s{figures['p95_s']:>8.3f}s"
              f"{figures['max_s']:>8.3f}s{figures['bias_s']:>+8.3f}s")
    cost = piper["word_timing_cost"]
    print(f"\nalignment coverage (mean): {piper['coverage_mean']:.3f}")
    print(f"word timings add {cost['align_s']} s to {cost['asr_s']} s of ASR ({cost['share_of_asr']:.1%}), "
          f"{cost['per_minute_of_audio_s']} s per minute of audio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
