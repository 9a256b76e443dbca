"""Benchmark: the edge fast tier through narro against a plain loop over the `edge-tts` CLI.

    .venv/bin/python bench/edge.py [--manifest manifests/bench-course.yaml] [--limit N]
                                   [--concurrency 8] [--pace 5] [--out bench/results/edge.json]

Both talk to the same local emulator of the service (tests/edge_emulator.py), which speaks
intelligible speech (narro's piper voice, with exact word boundaries), so the quality gate
judges the edge takes as it would a real edge voice's. Its timing model: first audio after
200-400 ms, then audio streamed at `--pace` seconds of audio per wall second (default 5, about
what the service does). Every request's take is synthesised into the emulator's cache before
timing (`warm`, untimed), so neither side pays for the emulator's own synthesis; a request that
still finds no take (a re-take at another rate) is counted as a cold take and reported.

  narro       `narro render` of the course with every narration on an edge voice (piper
              fallback), fresh store and catalogue, `--concurrency N`, default request cap.
  narro 429   the same with the emulator refusing 20% of handshakes with 429: must lose no clip
              and use no fallback (retries absorb the refusals).
  baseline    sequentially, one process per narration: `edge-tts --text ... --write-media
              clip.mp3` (the CLI pointed at the emulator by a tiny `python -c` wrapper that sets
              WSS_URL, since the CLI cannot see narro's setting). No post-processing at all.

For each narro run it also reports the CPU seconds of the render's process tree (user+sys of
the reaped child) against wall × cores, and the seconds each step took summed over the clips
(from the sidecars: synthesis, which for edge is mostly waiting on the service, post-processing
with the watermark, the ASR round trip and the other checks), so a CPU-bound run says which
step. "other load" is the CPU everything else on the machine used during the run, in cores:
the noise.

Exit status: 0 every check passed; 1 a target was missed (speed-up); 2 the run did not measure
the edge tier: a clip was published by the fallback voice, or lost, in a run that expects
neither (the message names the clips and the fallback's reasons).
Target: baseline wall / narro wall >= 5, zero fallbacks in both runs, zero clips lost with 429s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
STEPS = ("synthesis", "post", "asr", "checks")


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


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used since boot (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_narro(manifest: Path, work: Path, name: str, service: EdgeEmulator, concurrency: int) -> dict:
    store, catalogue = work / f"{name}-store", f"sqlite:///{work / name}.db"
    env = {**os.environ, "NARRO_EDGE_WSS_URL": service.url, "PREFECT_LOGGING_LEVEL": "WARNING"}
    cold, handshakes, service.max_active = service.cold_takes, service.handshakes, 0
    children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    busy, started = machine_busy_s(), time.perf_counter()
    done = subprocess.run([str(BIN / "narro"), "render", str(manifest), "--store", str(store), "--catalogue",
                           catalogue, "--concurrency", str(concurrency)], env=env, capture_output=True, text=True)
    wall, busy = time.perf_counter() - started, machine_busy_s() - busy
    after_children, after_own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    sidecars = {p.stem: json.loads(p.read_text()) for p in store.glob("*/*.json") if p.name != "index.json"}
    cpu = after_children.ru_utime + after_children.ru_stime - children.ru_utime - children.ru_stime
    emulator_cpu = after_own.ru_utime + after_own.ru_stime - own.ru_utime - own.ru_stime
    steps = {step: 0.0 for step in STEPS}
    for sidecar in sidecars.values():
        timings, qa = sidecar.get("timings_s", {}), sidecar.get("qa", {})
        steps["synthesis"] += timings.get("synthesis", 0.0)
        steps["post"] += timings.get("post", 0.0)
        steps["asr"] += qa.get("asr_s", 0.0)
        steps["checks"] += qa.get("checks_s", 0.0)
    return {
        "wall_s": round(wall, 2), "exit": done.returncode, "published": len(sidecars),
        "fallbacks": {clip: s["fallback"].get("reason", "") for clip, s in sorted(sidecars.items()) if s.get("fallback")},
        "retaken": sum(len(s.get("qa", {}).get("takes", [])) > 1 for s in sidecars.values()),
        "captions": len(list(store.glob("*/*.vtt"))),
        "audio_s": round(sum(s["duration_s"] for s in sidecars.values()), 1),
        "cpu_s": round(cpu, 1), "emulator_cpu_s": round(emulator_cpu, 1),
        "other_load_cores": round(max(0.0, busy - cpu - emulator_cpu) / wall, 2),
        "steps_s": {step: round(seconds, 1) for step, seconds in steps.items()},
        "cold_takes": service.cold_takes - cold, "handshakes": service.handshakes - handshakes,
        "max_active_requests": service.max_active,
        "stdout_tail": done.stdout[-1500:], "stderr_tail": done.stderr[-1500:],
    }


def run_baseline(texts: list[str], work: Path, url: str) -> dict:
    out = work / "baseline"
    out.mkdir()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, started = machine_busy_s(), time.perf_counter()
    failures = 0
    for index, text in enumerate(texts):
        done = subprocess.run([sys.executable, "-c", CLI, url, "--voice", "en-US-AriaNeural", "--text", text,
                               "--write-media", str(out / f"{index}.mp3")], capture_output=True)
        failures += done.returncode != 0
    wall, busy = time.perf_counter() - started, machine_busy_s() - busy
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return {"wall_s": round(wall, 2), "failed": failures, "published": len(list(out.glob("*.mp3"))),
            "cpu_s": round(cpu, 1), "other_load_cores": round(max(0.0, busy - cpu) / wall, 2)}


def not_the_edge_tier(name: str, run: dict, expected: int) -> list[str]:
    """Why `run` did not measure the edge tier (clips spoken by the fallback, or lost), one line each."""
    problems = [f"{name}: {clip} was published by the piper fallback: {reason}"
                for clip, reason in run["fallbacks"].items()]
    if run["published"] < expected or run["exit"] != 0:
        problems.append(f"{name}: {expected - run['published']} of {expected} clips lost (narro exit {run['exit']}); "
                        f"its output ends:\n{run['stdout_tail'][-600:]}{run['stderr_tail'][-600:]}")
    return problems


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
            narro = run_narro(manifest, work, "narro", service, args.concurrency)
            service.rates = {"429": 0.2}
            narro429 = run_narro(manifest, work, "narro429", service, args.concurrency)
            service.rates = {}
            baseline = run_baseline(texts, work, service.url)
    speedup = baseline["wall_s"] / narro["wall_s"]
    cores = os.cpu_count() or 1
    print(f"{'run':<26}{'wall s':>9}{'clips':>10}{'fallbacks':>11}{'retaken':>9}{'cold':>6}{'CPU s':>8}"
          f"{'CPU/(wall*cores)':>18}{'other load':>12}")
    for label, run in (("narro (edge, emulator)", narro), ("narro, 20% 429", narro429)):
        print(f"{label:<26}{run['wall_s']:>9.1f}{run['published']:>6}/{len(texts):<3}{len(run['fallbacks']):>11}"
              f"{run['retaken']:>9}{run['cold_takes']:>6}{run['cpu_s']:>8.0f}"
              f"{run['cpu_s'] / (run['wall_s'] * cores):>18.2f}{run['other_load_cores']:>12.2f}")
    print(f"{'edge-tts CLI loop':<26}{baseline['wall_s']:>9.1f}{baseline['published']:>6}/{len(texts):<3}{'':>26}"
          f"{baseline['cpu_s']:>8.0f}{baseline['cpu_s'] / (baseline['wall_s'] * cores):>18.2f}"
          f"{baseline['other_load_cores']:>12.2f}")
    print("\nseconds per step, summed over the clips (clips run concurrently, so they add up past wall time):")
    print(f"{'run':<26}" + "".join(f"{step:>11}" for step in STEPS))
    for label, run in (("narro (edge, emulator)", narro), ("narro, 20% 429", narro429)):
        print(f"{label:<26}" + "".join(f"{run['steps_s'][step]:>11.1f}" for step in STEPS))
    problems = not_the_edge_tier("narro", narro, len(texts)) + not_the_edge_tier("narro 429", narro429, len(texts))
    checks = {"speedup_vs_cli >= 5": (round(speedup, 2), speedup >= 5),
              "fallbacks == 0": (len(narro["fallbacks"]) + len(narro429["fallbacks"]),
                                 not narro["fallbacks"] and not narro429["fallbacks"]),
              "clips lost with 20% 429 == 0": (len(texts) - narro429["published"],
                                               narro429["published"] == len(texts) and narro429["exit"] == 0)}
    print()
    for name, (value, ok) in checks.items():
        print(f"{name:<32}{value!s:>8}  {'PASS' if ok else 'MISS'}")
    print(f"({len(texts)} narrations, {narro['audio_s']:.0f} s of audio; concurrency {args.concurrency}; {cores} cores; "
          f"emulator pace {args.pace}x, warm-up {warm_s:.0f} s untimed; 429 run: {narro429['handshakes']} handshakes)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"narrations": len(texts), "limit": args.limit, "concurrency": args.concurrency,
                                    "pace": args.pace, "cores": cores, "warm_s": round(warm_s, 1), "narro": narro,
                                    "narro_429": narro429, "baseline": baseline, "problems": problems,
                                    "checks": {k: {"value": v, "pass": ok} for k, (v, ok) in checks.items()}},
                                   indent=2))
    if problems:
        print("\nFAILED: this run did not measure the edge tier; its figures are not the edge tier's:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    return 0 if all(ok for _, ok in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
