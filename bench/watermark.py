"""Benchmark: narro's watermark on real clips, through real ffmpeg attacks; false positives; cost.

    .venv/bin/python bench/watermark.py [--clips 50] [--unmarked 500] [--out bench/results/watermark.json]

Clips: the first N narrations of manifests/bench-course.yaml, spoken by narro's own engine
(plan → synthesize), cached as .npy under bench/results/wm-cache/ so reruns skip synthesis.
Each is marked and finished exactly as `post_process` does (embed → trim/loudness/limiter →
MP3 96 kbps → decode). Attacks (ffmpeg where a codec or resampler is involved): MP3 64 and
128 kbps re-encode, resample to 16 kHz and 44.1 kHz, ±6 dB gain, cut 10% at both ends, white
noise at 20 dB SNR (against the clip's mean power). Unmarked set: the same takes without a mark
(whole and in 4 s pieces), espeak-ng takes if installed, digital silence, white/pink noise,
and music-like tone mixtures. Imperceptibility: SNR of the mark and the log-spectral distance
(LSD, dB) between marked and unmarked on the 344-5512 Hz band the mark lives in: LSD is the
standard objective proxy for spectral change in watermarking and codec work, it weighs quiet
bands like loud ones (so it does not hide changes under formant peaks the way SNR does), and
it needs no model or reference weights. Cost: embed + verify seconds per second of audio on one
core, also as a share of piper's synthesis time for the same clips.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from narro import watermark  # noqa: E402
from narro.audio import PostSettings, finish  # noqa: E402
from narro.encode import _run, decode, encode_mp3  # noqa: E402
from narro.manifest import load_course  # noqa: E402
from narro.plan import plan  # noqa: E402
from narro.render import synthesize  # noqa: E402

RATE = watermark.SAMPLE_RATE
ATTACKS = ["none", "mp3-64k", "mp3-128k", "resample-16k", "resample-44.1k", "gain+6dB", "gain-6dB", "cut-10%", "noise-20dB"]


def ffmpeg(data: bytes, *args: str) -> bytes:
    return _run(["-i", "pipe:0", *args, "pipe:1"], data, "benchmark transcode")


def attack(name: str, mp3: bytes, decoded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if name == "none":
        return decoded
    if name.startswith("mp3"):
        return decode(encode_mp3(decoded, RATE, int(name[4:-1]), {}), RATE)
    if name.startswith("resample"):
        return decode(ffmpeg(mp3, "-ar", "16000" if "16k" in name else "44100", "-f", "wav"), RATE)
    if name.startswith("gain"):
        return decode(ffmpeg(mp3, "-af", f"volume={name[4:]}", "-f", "wav"), RATE)
    if name == "cut-10%":
        return decoded[len(decoded) // 10: len(decoded) - len(decoded) // 10]
    noise = rng.standard_normal(len(decoded)) * np.sqrt(np.mean(decoded ** 2) / 100)
    return (decoded + noise).astype(np.float32)


def takes(count: int) -> list[tuple[str, np.ndarray, float, str]]:
    """(id, samples, synthesis seconds, content key) for the first `count` bench narrations, cached."""
    cache = REPO / "bench" / "results" / "wm-cache"
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for spec in plan(load_course(REPO / "manifests" / "bench-course.yaml"))[:count]:
        path = cache / f"{spec.narration_id}.npy"
        meta = cache / f"{spec.narration_id}.json"
        if path.exists() and meta.exists():
            samples, seconds = np.load(path), json.loads(meta.read_text())["synthesis_s"]
        else:
            synthesis, seconds = synthesize(spec)
            samples = synthesis.samples.astype(np.float32)
            np.save(path, samples)
            meta.write_text(json.dumps({"synthesis_s": seconds}))
        out.append((spec.narration_id, samples, seconds, spec.content_key))
    return out


def lsd_db(a: np.ndarray, b: np.ndarray) -> float:
    frames_a, frames_b = watermark._frames(a.astype(np.float64)), watermark._frames(b.astype(np.float64))
    pa = np.abs(np.fft.rfft(frames_a, axis=1)[:, watermark._BAND]) ** 2 + 1e-10
    pb = np.abs(np.fft.rfft(frames_b, axis=1)[:, watermark._BAND]) ** 2 + 1e-10
    active = watermark._active(np.sqrt(pa))
    diff = 10 * np.log10(pa[active] / pb[active])
    return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=1))))


def unmarked_set(clips: list, want: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    settings = PostSettings()
    out: list[tuple[str, np.ndarray]] = []
    for name, samples, _, _ in clips:
        plain = decode(encode_mp3(finish(samples, RATE, settings), RATE, 96, {}), RATE)
        out.append((f"piper:{name}", plain))
        for i in range(0, len(plain) - 4 * RATE, 4 * RATE):
            out.append((f"piper-piece:{name}:{i // RATE}", plain[i: i + 4 * RATE]))
    if shutil.which("espeak-ng"):
        for name, _, _, _ in clips[:40]:
            wav = subprocess.run(["espeak-ng", "--stdout", f"Clip {name} spoken by the robot voice for testing."],
                                 capture_output=True, check=True).stdout
            out.append((f"espeak:{name}", decode(wav, RATE)))
    t = np.arange(6 * RATE) / RATE
    k = 0
    while len(out) < want:
        kind = k % 4
        if kind == 0:
            out.append((f"silence:{k}", np.zeros(int(RATE * rng.uniform(1, 8)), np.float32)))
        elif kind == 1:
            out.append((f"white:{k}", (rng.standard_normal(6 * RATE) * rng.uniform(0.01, 0.3)).astype(np.float32)))
        elif kind == 2:
            white = np.fft.rfft(rng.standard_normal(6 * RATE))
            pink = np.fft.irfft(white / np.sqrt(np.arange(1, len(white) + 1)), n=6 * RATE)
            out.append((f"pink:{k}", (pink / np.abs(pink).max() * 0.5).astype(np.float32)))
        else:
            notes = 220 * 2 ** (rng.integers(0, 24, size=3) / 12)
            tone = sum(np.sin(2 * np.pi * f * t) * np.exp(-((t % 0.5) * 3)) for f in notes)
            out.append((f"tones:{k}", (0.25 * tone / len(notes)).astype(np.float32)))
        k += 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--unmarked", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "watermark.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rng = np.random.default_rng(2024)
    started = time.perf_counter()
    clips = takes(args.clips)
    settings = PostSettings()
    results = {a: [] for a in ATTACKS}
    confidences = {a: [] for a in ATTACKS}
    snr, lsd, embed_s, verify_s, audio_s, synth_s = [], [], 0.0, 0.0, 0.0, 0.0
    for name, samples, seconds, key in clips:
        payload = watermark.payload_for(key)
        t0 = time.process_time()
        marked = watermark.embed(samples, RATE, payload)
        embed_s += time.process_time() - t0
        snr.append(float(10 * np.log10(np.sum(samples.astype(np.float64) ** 2) / np.sum((marked - samples).astype(np.float64) ** 2))))
        lsd.append(lsd_db(marked, samples))
        finished = finish(marked, RATE, settings)
        mp3 = encode_mp3(finished, RATE, settings.bitrate_kbps, {})
        decoded = decode(mp3, RATE)
        t0 = time.process_time()
        watermark.detect(decoded, RATE)
        verify_s += time.process_time() - t0
        audio_s += len(samples) / RATE
        synth_s += seconds
        for name_a in ATTACKS:
            found = watermark.detect(attack(name_a, mp3, decoded, rng), RATE)
            results[name_a].append(found.payload == payload)
            confidences[name_a].append(float(found.confidence))
    unmarked = unmarked_set(clips, args.unmarked, rng)
    false_positives, null_z = [], []
    for label, samples in unmarked:
        found = watermark.detect(samples, RATE)
        null_z.append(float(found.confidence))
        if found.present:
            false_positives.append(label)
    cost = (embed_s + verify_s) / audio_s
    rows = [(a, f"{np.mean(results[a]) * 100:.1f}%", f"{np.min(confidences[a]):.1f}", f"{np.median(confidences[a]):.1f}",
             "PASS" if np.mean(results[a]) >= 0.99 else "MISS") for a in ATTACKS]
    print(f"{len(clips)} clips, {audio_s / 60:.1f} min of piper speech; {len(unmarked)} unmarked clips\n")
    print(f"{'attack':<16}{'recovered':>10}{'min z':>8}{'median z':>10}  target >= 99%")
    for row in rows:
        print(f"{row[0]:<16}{row[1]:>10}{row[2]:>8}{row[3]:>10}  {row[4]}")
    print(f"\nfalse positives: {len(false_positives)} / {len(unmarked)} "
          f"(max z on unmarked {max(null_z):.2f}, threshold {watermark.Z_MIN})  {'PASS' if not false_positives else 'MISS'}")
    print(f"mark SNR: median {np.median(snr):.1f} dB (min {np.min(snr):.1f}); "
          f"log-spectral distance: median {np.median(lsd):.2f} dB (max {np.max(lsd):.2f})")
    print(f"cost: embed {embed_s / audio_s:.4f} + verify {verify_s / audio_s:.4f} = {cost:.4f} x real time per core "
          f"(target < 0.02: {'PASS' if cost < 0.02 else 'MISS'}); {(embed_s + verify_s) / synth_s * 100:.1f}% of piper "
          f"synthesis time")
    print(f"benchmark wall {time.perf_counter() - started:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "clips": len(clips), "audio_s": audio_s, "attacks": {a: {"recovered": float(np.mean(results[a])),
                                                                 "confidences": confidences[a]} for a in ATTACKS},
        "unmarked": len(unmarked), "false_positives": false_positives, "null_confidence_max": max(null_z),
        "snr_db": snr, "lsd_db": lsd, "embed_x_realtime": embed_s / audio_s, "verify_x_realtime": verify_s / audio_s,
        "share_of_synthesis": (embed_s + verify_s) / synth_s, "machine": platform.platform(),
        "params": {"alpha": watermark.ALPHA, "z_min": watermark.Z_MIN, "version": watermark.VERSION},
    }, indent=1), encoding="utf-8")
    ok = all(np.mean(results[a]) >= 0.99 for a in ATTACKS) and not false_positives and cost < 0.02
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
