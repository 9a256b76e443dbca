"""Benchmark of the quality gate (narro.qa): its cost against synthesis, WER, and detection.

    .venv/bin/python bench/qa.py [--bench-limit N] [--broken 100] [--out bench/results/qa.json]

In one process, one clip at a time, with the engine and the ASR model loaded once (as a worker
does): synthesise each clip of the example course and of the 125-narration bench course (the
first N with --bench-limit), post-process it, then run every check. Reported:

- cost: QA seconds (all checks + ASR) / synthesis seconds, summed over clips, and per minute of
  audio. Target: at most 0.5 (QA adds at most 50% to the offline voice's synthesis time).
- WER after normalisation, per course: median (target < 8%), p90, max.
- false rejects: good example-course takes the gate fails (target 0).
- detection: deliberately broken takes (sentence removed, phrase repeated 3x, 4 s of silence
  inserted, cut in half, clipped, wrong script's audio) over many clips; caught share
  (target >= 95%) and which checks caught each kind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from narro import render  # noqa: E402
from narro.engines import Synthesis  # noqa: E402
from narro.heal import check_take  # noqa: E402
from narro.manifest import load_course  # noqa: E402
from narro.plan import ClipSpec, plan  # noqa: E402
from narro.settings import Settings  # noqa: E402

SETTINGS = Settings()
"""The defaults: the benchmark measures the quality gate as shipped."""
KINDS = ("sentence_removed", "phrase_repeated", "silence_inserted", "cut_in_half", "clipped", "wrong_script")


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def measure(spec: ClipSpec, synthesis: Synthesis, settings: Settings, text: str | None = None) -> dict:
    clip = render.post_process(spec, synthesis)
    checked = spec if text is None else replace(spec, text=text)
    report = check_take(checked, synthesis, clip, settings)
    return {"passed": report.passed, "failed": [c.name for c in report.failed], "wer": report.value("wer"),
            "qa_s": report.asr_s + report.checks_s, "asr_s": report.asr_s, "audio_s": clip.duration_s}


def broken(kind: str, spec: ClipSpec, good: Synthesis, other: Synthesis) -> Synthesis | None:
    """A deliberately broken take of `spec` (None when the script is too short for this kind)."""
    rate = good.sample_rate
    samples = good.samples
    parts = sentences(spec.text)
    if kind == "sentence_removed":
        candidates = [s for s in parts[1:-1] if len(s.split()) >= 6]
        if not candidates:
            return None
        return render.synthesize(replace(spec, text=spec.text.replace(candidates[0], "", 1)), SETTINGS)[0]
    if kind == "phrase_repeated":
        candidates = [s for s in parts[1:] if 4 <= len(s.split()) <= 12]
        if not candidates:
            return None
        return render.synthesize(replace(spec, text=spec.text.replace(candidates[0], f"{candidates[0]} " * 3, 1)),
                                 SETTINGS)[0]
    if kind == "silence_inserted":
        middle = len(samples) // 2
        return Synthesis(np.concatenate([samples[:middle], np.zeros(4 * rate, np.float32), samples[middle:]]),
                         rate, good.engine)
    if kind == "cut_in_half":
        return Synthesis(samples[: len(samples) // 2], rate, good.engine)
    if kind == "clipped":
        return Synthesis(np.clip(samples * 8, -1, 1).astype(np.float32), rate, good.engine)
    return other  # wrong_script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench-limit", type=int, default=125)
    parser.add_argument("--broken", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "qa.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = SETTINGS
    courses = {"example": plan(load_course(ROOT / "manifests" / "example-course.yaml")),
               "bench": plan(load_course(ROOT / "manifests" / "bench-course.yaml"))[: args.bench_limit]}
    # Warm up: load the voice and the ASR model outside the timings (a worker keeps both loaded).
    warm = courses["example"][0]
    measure(warm, render.synthesize(warm, settings)[0], settings)

    results: dict[str, list[dict]] = {}
    takes: list[tuple[ClipSpec, Synthesis]] = []
    for name, specs in courses.items():
        results[name] = []
        for spec in specs:
            synthesis, synthesis_s = render.synthesize(spec, settings)
            row = {"id": spec.narration_id, "synthesis_s": synthesis_s, **measure(spec, synthesis, settings)}
            results[name].append(row)
            takes.append((spec, synthesis))
            print(f"{name} {spec.narration_id}: wer {row['wer']:.3f} qa/synth {row['qa_s'] / synthesis_s:.2f}"
                  f" {'ok' if row['passed'] else 'FAILED ' + ','.join(row['failed'])}", file=sys.stderr, flush=True)

    detections: list[dict] = []
    index = 0
    while len(detections) < args.broken and index < len(takes) * len(KINDS):
        kind = KINDS[index % len(KINDS)]
        spec, good = takes[(index // len(KINDS) * 7 + index) % len(takes)]
        other = takes[(index * 5 + 3) % len(takes)][1]
        index += 1
        take = broken(kind, spec, good, other)
        if take is None or (kind == "wrong_script" and other is good):
            continue
        row = measure(spec, take, settings)
        detections.append({"kind": kind, "id": spec.narration_id, "caught": not row["passed"], "failed": row["failed"]})

    all_rows = results["example"] + results["bench"]
    synthesis_total = sum(r["synthesis_s"] for r in all_rows)
    qa_total = sum(r["qa_s"] for r in all_rows)
    audio_min = sum(r["audio_s"] for r in all_rows) / 60
    ratio = qa_total / synthesis_total

    def wer_stats(rows: list[dict]) -> dict:
        wers = sorted(r["wer"] for r in rows)
        return {"clips": len(rows), "median": statistics.median(wers), "p90": wers[int(0.9 * (len(wers) - 1))],
                "max": wers[-1], "rejected": sum(not r["passed"] for r in rows)}

    stats = {name: wer_stats(rows) for name, rows in results.items()}
    caught = sum(d["caught"] for d in detections)
    by_kind = {kind: {"takes": sum(d["kind"] == kind for d in detections),
                      "caught": sum(d["kind"] == kind and d["caught"] for d in detections),
                      "checks": sorted({c for d in detections if d["kind"] == kind for c in d["failed"]})}
               for kind in KINDS}
    checks = [
        ("QA cost / synthesis time", f"{ratio:.2f}", "<= 0.50", ratio <= 0.5),
        ("QA s per minute of audio", f"{qa_total / audio_min:.2f}", f"(synthesis {synthesis_total / audio_min:.2f})", True),
        ("WER median, example course", f"{stats['example']['median']:.1%}", "< 8%", stats["example"]["median"] < 0.08),
        (f"WER median, bench course ({stats['bench']['clips']} clips)", f"{stats['bench']['median']:.1%}", "< 8%",
         stats["bench"]["median"] < 0.08),
        ("good example takes rejected", str(stats["example"]["rejected"]), "0", stats["example"]["rejected"] == 0),
        ("good bench takes rejected", str(stats["bench"]["rejected"]), "(info)", True),
        ("broken takes caught", f"{caught}/{len(detections)}", ">= 95%", caught >= 0.95 * len(detections)),
    ]
    print(f"\n{'measure':<44} {'value':>10}  {'target':<24} result")
    for label, value, target, ok in checks:
        print(f"{label:<44} {value:>10}  {target:<24} {'PASS' if ok else 'MISS'}")
    print("\nWER        clips  median     p90     max")
    for name, s in stats.items():
        print(f"{name:<10} {s['clips']:>5}  {s['median']:>6.1%}  {s['p90']:>6.1%}  {s['max']:>6.1%}")
    print("\nbroken kind        caught  checks that failed")
    for kind, k in by_kind.items():
        print(f"{kind:<18} {k['caught']:>3}/{k['takes']:<3} {', '.join(k['checks'])}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        "settings": settings.qa.as_dict(), "ratio": ratio, "qa_s": qa_total, "synthesis_s": synthesis_total,
        "audio_min": audio_min, "wer": stats, "clips": results, "detections": detections, "by_kind": by_kind,
    }, indent=2))
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
