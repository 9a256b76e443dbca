"""Benchmark: the edge fast tier through narro against a plain loop over the `edge-tts` CLI.

    .venv/bin/python bench/edge.py [--manifest manifests/bench-course.yaml] [--limit N]
                                   [--concurrency 8] [--out bench/results/edge.json]

Both talk to the same local emulator of the service (tests/edge_emulator.py) with a realistic
latency profile: first audio after 200-400 ms, then audio streamed at `--pace` seconds of audio
per wall second (default 5, about what the service does). Takes are rendered into the
emulator's cache before timing, so neither side pays for the emulator's own synthesis.

  narro       `narro render` of the course with every narration on an edge voice (piper
              fallback), fresh store and catalogue, `--concurrency N`, default request cap.
  narro 429   the same with the emulator refusing 20% of handshakes with 429: must lose no clip
              and use no fallback.
  baseline    sequentially, one process per narration: `edge-tts --text ... --write-media
              clip.mp3` (the CLI pointed at the emulator by a tiny `python -c` wrapper that sets
              WSS_URL, since the CLI cannot see narro's setting). No post-processing at all.

Target: baseline wall / narro wall >= 5, and zero clips lost in the 429 run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from narro.manifest import load_course  # noqa: E402
from narro.plan import plan  # noqa: E402
from tests.edge_emulator import EdgeEmulator  # noqa: E402

BIN = Path(sys.executable).parent
VOICES = """default: aria
voices:
  aria:
    fast: {engine: edge, model: en-US-AriaNeural, fallback: {engine: piper, model: joe-us-medium}}
"""
CLI = ("import sys, edge_tts.communicate as c; c.WSS_URL = sys.argv.pop(1); "
       "from edge_tts.util import main; sys.argv[0] = 'edge-tts'; main()")


def course_copy(manifest: Path, limit: int | None, folder: Path) -> tuple[Path, list[str]]:
    import yaml

    data = yaml.safe_load(manifest.read_text())
    data["narrations"] = data["narrations"][:limit] if limit else data["narrations"]
    data["defaults"] = {"voice": "aria", "tier": "fast"}
    for narration in data["narrations"]:
        narration.pop("voice", None)
    (folder / "course.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (folder / "voices.yaml").write_text(VOICES)
    for script in {n["script"] for n in data["narrations"] if "script" in n}:
        target = folder / script
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((manifest.parent / script).read_bytes())
    texts = [spec.text for spec in plan(load_course(folder / "course.yaml"))]
    return folder / "course.yaml", texts


def run_narro(manifest: Path, work: Path, name: str, url: str, concurrency: int) -> dict:
    store, catalogue = work / f"{name}-store", f"sqlite:///{work / name}.db"
    env = {**os.environ, "NARRO_EDGE_WSS_URL": url, "PREFECT_LOGGING_LEVEL": "WARNING"}
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "narro"), "render", str(manifest), "--store", str(store), "--catalogue",
                           catalogue, "--concurrency", str(concurrency)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    sidecars = [json.loads(p.read_text()) for p in store.glob("*/*.json") if p.name != "index.json"]
    return {"wall_s": round(wall, 2), "exit": done.returncode, "published": len(sidecars),
            "fallbacks": sum("fallback" in s for s in sidecars), "captions": len(list(store.glob("*/*.vtt"))),
            "audio_s": round(sum(s["duration_s"] for s in sidecars), 1), "stdout_tail": done.stdout[-1500:],
            "stderr_tail": done.stderr[-1500:]}


def run_baseline(texts: list[str], work: Path, url: str) -> dict:
    out = work / "baseline"
    out.mkdir()
    started = time.perf_counter()
    failures = 0
    for index, text in enumerate(texts):
        done = subprocess.run([sys.executable, "-c", CLI, url, "--voice", "en-US-AriaNeural", "--text", text,
                               "--write-media", str(out / f"{index}.mp3")], capture_output=True)
        failures += done.returncode != 0
    return {"wall_s": round(time.perf_counter() - started, 2), "failed": failures,
            "published": len(list(out.glob("*.mp3")))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=REPO / "manifests" / "bench-course.yaml")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pace", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "edge.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="narro-edge-bench-") as tmp:
        work = Path(tmp)
        (work / "course").mkdir()
        manifest, texts = course_copy(args.manifest, args.limit, work / "course")
        with EdgeEmulator(first_audio_s=(0.2, 0.4), pace=args.pace) as service:
            warm_started = time.perf_counter()
            service.warm(texts)
            warm_s = time.perf_counter() - warm_started
            narro = run_narro(manifest, work, "narro", service.url, args.concurrency)
            narro["max_active_requests"] = service.max_active
            service.rates, service.max_active = {"429": 0.2}, 0
            handshakes = service.handshakes
            narro429 = run_narro(manifest, work, "narro429", service.url, args.concurrency)
            narro429["handshakes"] = service.handshakes - handshakes
            service.rates = {}
            baseline = run_baseline(texts, work, service.url)
    speedup = baseline["wall_s"] / narro["wall_s"]
    lost = len(texts) - narro429["published"] + narro429["fallbacks"]
    rows = [
        ("narro (edge, emulator)", narro["wall_s"], f"{narro['published']}/{len(texts)}", narro["fallbacks"]),
        ("narro, 20% 429", narro429["wall_s"], f"{narro429['published']}/{len(texts)}", narro429["fallbacks"]),
        ("edge-tts CLI loop", baseline["wall_s"], f"{baseline['published']}/{len(texts)}", "-"),
    ]
    print(f"{'run':<26}{'wall s':>9}{'clips':>10}{'fallbacks':>11}")
    for row in rows:
        print(f"{row[0]:<26}{row[1]:>9.1f}{row[2]:>10}{row[3]!s:>11}")
    checks = {"speedup_vs_cli >= 5": (round(speedup, 2), speedup >= 5),
              "clips lost with 20% 429 == 0": (lost, lost == 0 and narro429["exit"] == 0)}
    for name, (value, ok) in checks.items():
        print(f"{name:<32}{value!s:>8}  {'PASS' if ok else 'MISS'}")
    print(f"({len(texts)} narrations, {narro['audio_s']:.0f} s of audio; concurrency {args.concurrency}; "
          f"emulator pace {args.pace}x, warm-up {warm_s:.0f} s untimed; 429 run: {narro429['handshakes']} handshakes)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"narrations": len(texts), "limit": args.limit, "concurrency": args.concurrency,
                                    "pace": args.pace, "narro": narro, "narro_429": narro429, "baseline": baseline,
                                    "checks": {k: {"value": v, "pass": ok} for k, (v, ok) in checks.items()}},
                                   indent=2))
    return 0 if all(ok for _, ok in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
