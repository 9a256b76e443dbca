"""Benchmark: the quality tier's speed (tokens/s, time to first audio, RTF) beside every tier's `narro say`.

    .venv/bin/python bench/quality.py [--sentences 10] [--base-sentences 2] [--trip-sentences 100]
                                      [--say-sentences 5] [--no-base] [--out bench/results/quality.json]

No weights can be downloaded here, so the codec-LM rows use random weights of the real shapes:
EnCodec 24 kHz at 6 kbps (8 codebooks of 1024, transformers' default config, codebooks filled
with random vectors so that tokens decode differently) and the `tiny` and `base` presets. Speed
does not depend on the weights, except through when the model ends speech: a random `tiny` model
never chooses to, so its sentences run to their frame cap (0.25 s per phoneme + 1 s) and their
audio is longer than real speech would be (a random `base` does end its lines). RTF is computed on
the audio actually produced.

  codec-lm tiny/base  in-process, as a worker runs it: the engine loaded once through
                      narro.engines.engine_for from a voices.yaml (checkpoint, 5 s piper reference
                      with its transcript), one warm-up line, then `stream()` per sentence. TTFA is
                      the time to the first decoded chunk; tokens/s counts all 8 codebooks of the
                      frames produced per wall second, NAR and decoding included.
  guard trips         the AR sampler alone (where both guards act), --trip-sentences lines, tiny model:
                      how many hit the frame cap, and repetition-aware-sampling redraws per 100 frames.
  narro say           the CLI, one process per sentence: piper (offline), edge against the local
                      emulator (tests/edge_emulator.py, first audio after 200-400 ms, 5x real time
                      as bench/edge.py) and the tiny codec-lm voice. TTFA excludes the engine load,
                      which the CLI reports apart.

Sentences come from the bench course (manifests/bench-course.yaml), 5-15 words each. The
benchmark fails (exit 1) when its premise breaks: a `narro say` that fell back to another voice,
exited non-zero or produced no audio; a codec-LM line that did not stream (one chunk, or the
first chunk only at the end); a device other than the one asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from narro.manifest import load_course  # noqa: E402
from tests.edge_emulator import EdgeEmulator  # noqa: E402
from tests.piper_speech import SENTENCES, consented_clone, piper_sentences, write_wav  # noqa: E402

BIN = Path(sys.executable).parent
SAY_LINE = re.compile(r"TTFA (?P<ttfa>\d+) ms, RTF (?P<rtf>[\d.]+|inf), (?P<audio>[\d.]+) s of audio at "
                      r"(?P<rate>\d+) Hz, "
                      r"(?P<how>streamed in \d+ chunks|not streamed), voice (?P<voice>\S+) "
                      r"\(loaded in (?P<load>[\d.]+) s\)(?P<fallback>; fallback: .*)?")


class PremiseBroken(Exception):
    """The benchmark would measure something else than it says: stop, loudly."""


def sentences(limit: int) -> list[str]:
    course = load_course(REPO / "manifests" / "bench-course.yaml")
    found: list[str] = []
    for narration in course.narrations:
        for sentence in re.split(r"(?<=[.!?])\s+", narration.text):
            if 5 <= len(sentence.split()) <= 15 and sentence not in found:
                found.append(sentence)
    if len(found) < limit:
        raise PremiseBroken(f"the bench course has {len(found)} sentences of 5-15 words, {limit} asked for")
    return found[:limit]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def build_models(work: Path, presets: list[str]) -> dict[str, Path]:
    """A random-weight full-size EnCodec and a random-weight checkpoint per preset, saved as narro loads them."""
    import torch
    from transformers import EncodecConfig, EncodecModel

    from narro.engines.codec_lm.checkpoint import save_checkpoint
    from narro.engines.codec_lm.codec import load_codec
    from narro.engines.codec_lm.frontend import Vocabulary
    from narro.engines.codec_lm.model import CodecLM, ModelConfig

    torch.manual_seed(0)
    encodec = EncodecModel(EncodecConfig())
    with torch.no_grad():
        for layer in encodec.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.inited.fill_(1.0)
    encodec.save_pretrained(str(work / "encodec"))
    codec = load_codec("encodec", work / "encodec", n_codebooks=8)
    vocabulary = Vocabulary.default()
    folders = {}
    for preset in presets:
        config = ModelConfig.preset(preset, n_text_tokens=len(vocabulary), codebook_size=codec.codebook_size,
                                    n_codebooks=codec.n_codebooks)
        model = CodecLM(config)
        folders[preset] = save_checkpoint(work / preset, model, vocabulary, codec, {"preset": preset,
                                                                                    "weights": "random"})
        print(f"{preset}: {model.parameter_count() / 1e6:.1f} M parameters (random weights)", flush=True)
        del model
    return folders


def write_voices(work: Path, folders: dict[str, Path]) -> tuple[Path, Path]:
    """voices.yaml with piper, edge and a codec-lm voice per preset; and a course whose consent covers `tiny`."""
    clips, rate = piper_sentences()
    reference = write_wav(work / "reference.wav", np.concatenate([clips[1], np.zeros(rate // 3, np.float32), clips[3]]),
                          rate)
    text = f"{SENTENCES[1]} {SENTENCES[3]}"
    lines = ["default: piper", "voices:", "  piper:", "    fast: {engine: piper, model: joe-us-medium}",
             "  aria:", "    fast: {engine: edge, model: en-US-AriaNeural,",
             "           fallback: {engine: piper, model: joe-us-medium}}"]
    for preset, folder in folders.items():
        lines += [f"  {preset}:", "    quality:", "      engine: codec-lm", f"      model: {folder}",
                  f"      reference: {reference}", f"      reference_text: {json.dumps(text)}", "      seed: 1"]
    path = work / "voices.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, consented_clone(work / "clone", "tiny", folders["tiny"], reference, text)


def stream_in_process(voices: Path, name: str, texts: list[str], device: str, whole: bool = True) -> dict:
    """The engine loaded once; per sentence the time to the first chunk, the wall time and the audio.

    `whole=False`: only the first chunk of each line (and no warm-up line): `base` on a CPU takes
    minutes per chunk, because every chunk runs the NAR's 7 stages over the prompt and the frames so far.
    """
    from narro.engines import engine_for
    from narro.settings import Settings
    from narro.voices import load_registry

    voice = load_registry(voices).resolve(name, "quality")
    settings = Settings.load(environ={"NARRO_CODEC_LM_DEVICE": device})
    loading = time.perf_counter()
    engine = engine_for(voice, settings)
    load_s = time.perf_counter() - loading
    actual = str(engine.checkpoint.model.device)
    if not actual.startswith(device):
        raise PremiseBroken(f"codec-lm {name}: asked for {device}, the model is on {actual}")
    n_q, frame_rate = engine.codec.n_codebooks, engine.codec.frame_rate
    if whole:
        list(engine.stream("Warm up."))  # first-call costs (allocator, kernels) are not a line's
    rows = []
    for text in texts:
        started = time.perf_counter()
        first, chunks, samples = None, 0, 0
        stream = engine.stream(text)
        for chunk in stream:
            if first is None:
                first = time.perf_counter() - started
            chunks += 1
            samples += len(chunk)
            if not whole:
                stream.close()
                break
        wall = time.perf_counter() - started
        audio_s = samples / engine.sample_rate
        if first is None or audio_s <= 0 or (whole and (chunks < 2 or first >= wall * 0.9)):
            raise PremiseBroken(f"codec-lm {name} did not stream '{text}': {chunks} chunks, first after "
                                f"{first} s of {wall:.2f} s, {audio_s:.2f} s of audio")
        row = {"text": text, "ttfa_s": first, "wall_s": wall, "audio_s": audio_s, "chunks": chunks}
        if whole:
            row.update(tokens_per_s=audio_s * frame_rate * n_q / wall, rtf=wall / audio_s)
        rows.append(row)
        print(f"  {name} {device}: TTFA {first * 1000:.0f} ms" + (f", RTF {wall / audio_s:.2f}, {audio_s:.1f} s audio"
                                                                  if whole else " (first chunk only)"), flush=True)
    return {"engine": f"codec-lm {name}", "how": "in-process stream()" if whole else "stream(), 1st chunk",
            "device": actual, "parameters_m": round(engine.checkpoint.model.parameter_count() / 1e6, 1),
            "load_s": load_s, "lines": rows, **summary(rows), **ar_speed(engine, texts[0])}


def ar_speed(engine: Any, text: str, frames: int = 30) -> dict:
    """Codebook-1 frames per second of the AR alone, after its prefill (KV cache; what a GPU makes cheap)."""
    import torch

    from narro.engines.codec_lm.frontend import join_text
    from narro.engines.codec_lm.generate import TokenSampler

    model = engine.checkpoint.model
    encoded = engine.frontend.encode(text)
    ids = join_text(engine.checkpoint.vocabulary, engine.reference_ids, encoded.ids)
    prompt = torch.as_tensor(engine.reference.codes[0], device=model.device)[None]
    no_end = dataclasses.replace(engine.sampling, min_s_per_phoneme=10.0)
    sampler = TokenSampler(model, torch.as_tensor(ids, device=model.device)[None], encoded.phonemes, prompt, no_end,
                           engine.codec.frame_rate, torch.tensor([engine.language], device=model.device))
    next(sampler)  # the prefill over [text ; reference]
    started = time.perf_counter()
    made = sum(1 for _, _ in zip(range(frames), sampler, strict=False))
    return {"ar_frames_per_s": made / (time.perf_counter() - started)}


def guard_trips(voices: Path, texts: list[str]) -> dict:
    """Frame-cap trips and repetition redraws of the tiny model: the AR sampler alone, where both guards act."""
    import torch

    from narro.engines import engine_for
    from narro.engines.codec_lm.frontend import join_text
    from narro.engines.codec_lm.generate import TokenSampler
    from narro.settings import Settings
    from narro.voices import load_registry

    engine = engine_for(load_registry(voices).resolve("tiny", "quality"), Settings.load(environ={}))
    model = engine.checkpoint.model
    prompt = torch.as_tensor(engine.reference.codes[0], device=model.device)[None]
    language = torch.tensor([engine.language], device=model.device)
    capped, redraws, frames = 0, 0, 0
    started = time.perf_counter()
    for index, text in enumerate(texts):
        encoded = engine.frontend.encode(text)
        ids = torch.as_tensor(join_text(engine.checkpoint.vocabulary, engine.reference_ids, encoded.ids),
                              device=model.device)[None]
        sampler = TokenSampler(model, ids, encoded.phonemes, prompt, dataclasses.replace(engine.sampling, seed=index),
                               engine.codec.frame_rate, language)
        frames += sum(1 for _ in sampler)
        capped += sampler.trips["frame_cap"] > 0
        redraws += sampler.trips["repetition"]
    return {"sentences": len(texts), "frame_cap_trips": capped, "frame_cap_rate": capped / len(texts),
            "repetition_redraws": redraws, "redraws_per_100_frames": 100 * redraws / max(frames, 1),
            "frames": frames, "ar_frames_per_s": frames / (time.perf_counter() - started)}


def narro_say(source: list[str], voice: str, tier: str, label: str, texts: list[str], env: dict[str, str],
              work: Path) -> dict:
    """`narro say` per line; `source`: the options naming the voices (--voices FILE, or --manifest and --store)."""
    rows = []
    for index, text in enumerate(texts):
        target = work / f"say-{voice}-{index}.wav"
        done = subprocess.run([str(BIN / "narro"), "say", text, "--voice", voice, "--tier", tier, *source,
                               "--out", str(target)], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=600)
        match = SAY_LINE.search(done.stderr)
        if done.returncode != 0 or match is None:
            raise PremiseBroken(f"narro say --voice {voice} exited {done.returncode}: {done.stderr.strip()[-400:]}")
        if match["fallback"]:
            raise PremiseBroken(f"narro say --voice {voice} fell back{match['fallback']}")
        if float(match["audio"]) <= 0 or target.stat().st_size <= 44:
            raise PremiseBroken(f"narro say --voice {voice} wrote no audio for '{text}'")
        rows.append({"text": text, "ttfa_s": int(match["ttfa"]) / 1000, "rtf": float(match["rtf"]),
                     "audio_s": float(match["audio"]), "load_s": float(match["load"]), "voice": match["voice"],
                     "streamed": match["how"].startswith("streamed")})
        print(f"  narro say {voice}: TTFA {match['ttfa']} ms, RTF {match['rtf']}", flush=True)
    return {"engine": label, "how": "narro say (CLI)", "device": "cpu", "lines": rows, **summary(rows)}


def summary(rows: list[dict]) -> dict:
    ttfa = [r["ttfa_s"] for r in rows]
    tokens = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    rtf = [r["rtf"] for r in rows if "rtf" in r]
    return {"n": len(rows), "ttfa_p50_s": percentile(ttfa, 50), "ttfa_p95_s": percentile(ttfa, 95),
            "rtf_median": statistics.median(rtf) if rtf else None,
            "tokens_per_s": statistics.median(tokens) if tokens else None}


def print_table(rows: list[dict], trips: dict | None) -> None:
    header = (f"{'engine':<22} {'how':<20} {'device':<8} {'n':>3} {'TTFA p50':>10} {'TTFA p95':>10} {'RTF':>7} "
              f"{'tokens/s':>9} {'AR frames/s':>11}")
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        tokens = f"{row['tokens_per_s']:.0f}" if row["tokens_per_s"] else "-"
        rtf = f"{row['rtf_median']:.2f}" if row["rtf_median"] is not None else "-"
        ar = f"{row['ar_frames_per_s']:.1f}" if row.get("ar_frames_per_s") else "-"
        print(f"{row['engine']:<22} {row['how']:<20} {row['device']:<8} {row['n']:>3} "
              f"{row['ttfa_p50_s'] * 1000:>7.0f} ms {row['ttfa_p95_s'] * 1000:>7.0f} ms {rtf:>7} {tokens:>9} {ar:>11}")
    if trips:
        print(f"\nguard trips, tiny (random weights), {trips['sentences']} sentences: frame cap "
              f"{trips['frame_cap_trips']}/{trips['sentences']} ({trips['frame_cap_rate']:.0%}), repetition-aware "
              f"redraws {trips['redraws_per_100_frames']:.1f} per 100 frames; AR "
              f"{trips['ar_frames_per_s']:.0f} frames/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=10, help="Lines streamed per codec-lm model (tiny).")
    parser.add_argument("--base-sentences", type=int, default=1,
                        help="Lines base streams on the CPU (first chunk only: minutes per chunk there).")
    parser.add_argument("--trip-sentences", type=int, default=100)
    parser.add_argument("--say-sentences", type=int, default=5, help="`narro say` runs per voice.")
    parser.add_argument("--no-base", action="store_true", help="Leave out the base model (slow on a CPU).")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quality.json")
    args = parser.parse_args()

    import torch

    texts = sentences(max(args.sentences, args.trip_sentences, args.say_sentences, args.base_sentences))
    presets = ["tiny"] + ([] if args.no_base else ["base"])
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                                 "threads": torch.get_num_threads(),
                                 "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
                     "weights": "random (no downloadable weights here)", "rows": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def record(key: str, value: object) -> None:
        """Keep each figure as soon as it is measured: a run cut short still leaves what it got (complete: false)."""
        if key == "rows":
            results["rows"].append(value)
        else:
            results[key] = value
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    results["complete"] = False
    try:
        with tempfile.TemporaryDirectory(prefix="narro-quality-") as folder:
            work = Path(folder)
            voices, clone_course = write_voices(work, build_models(work, presets))
            say = texts[: args.say_sentences]
            registry = ["--voices", str(voices)]
            record("rows", narro_say(registry, "piper", "fast", "piper joe-us-medium", say, {}, work))
            with EdgeEmulator(first_audio_s=(0.2, 0.4), pace=5.0) as service:
                service.warm(say)
                record("rows", narro_say(registry, "aria", "fast", "edge (emulator)", say,
                                         {"NARRO_EDGE_WSS_URL": service.url}, work))
            record("rows", narro_say(["--manifest", str(clone_course), "--store", str(work / "store")], "tiny",
                                     "quality", "codec-lm tiny", say[:2], {"OMP_NUM_THREADS": "1"}, work))
            record("rows", stream_in_process(voices, "tiny", texts[: args.sentences], "cpu"))
            record("guard_trips", guard_trips(voices, texts[: args.trip_sentences]))
            if torch.cuda.is_available():
                for preset in presets:
                    record("rows", stream_in_process(voices, preset, texts[: args.sentences], "cuda"))
            if not args.no_base:
                record("rows", stream_in_process(voices, "base", texts[: args.base_sentences], "cpu", whole=False))
    except PremiseBroken as error:
        print(f"PREMISE BROKEN: {error}", file=sys.stderr)
        return 1
    record("complete", True)
    print_table(results["rows"], results.get("guard_trips"))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
