"""The quality gate on real sentences with symbols, before and after narro's text handling changed.

    .venv/bin/python bench/text.py [--corpus tests/corpus/sentences.yaml] [--limit N]
                                   [--before c9ebd57] [--out bench/results/text.json]

Each sentence of the corpus (real documentation, not written for narro: see its header) is
normalised, spoken by the default piper voice and heard by the gate's recogniser, then judged
by the gate's intelligibility checks (WER, longest missing or inserted run, the last words
heard) with the default thresholds, as narro.qa does. A sentence that fails is re-made as the
heal loop would, with the pace nudged (x1.04, then x0.96), up to 3 takes. "before" runs
narro/text.py and narro/wer.py as they were at git revision `--before`; "after" the working
tree's. "WER as meant" compares what was heard with the sentence as it should be read (the new
reading) for both: the old gate could pass a take that skipped "<" because its reference
skipped it too. The other gate checks (loudness, pauses, speech rate) are left out: they judge the
audio, not the words, and a single sentence is under the speech-rate minimum anyway.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from narro import text as text_now  # noqa: E402
from narro import wer as wer_now  # noqa: E402
from narro.asr import transcriber_for  # noqa: E402
from narro.engines import engine_for  # noqa: E402
from narro.settings import Settings  # noqa: E402
from narro.voices import EngineVoice  # noqa: E402

PACES = (1.0, 1.04, 0.96)  # the heal loop's takes for a piper voice (narro.heal.PACE_VARIANTS)


def module_at(revision: str, path: str, folder: Path) -> ModuleType:
    """A module as it was at a git revision (narro's text and wer modules import nothing of narro)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{path}"], capture_output=True, text=True,
                            check=True).stdout
    file = folder / f"before_{Path(path).name}"
    file.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def verdict(align: object, qa: object) -> tuple[bool, float]:
    gap = max(align.longest_missing, align.longest_inserted)  # type: ignore[attr-defined]
    passed = align.wer <= qa.max_wer and gap <= qa.max_gap_words and align.tail_matched >= qa.min_tail_words  # type: ignore[attr-defined]
    return passed, align.wer  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(ROOT / "tests" / "corpus" / "sentences.yaml"))
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--before", default="c9ebd57", help="git revision of the old text handling")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "text.json"))
    args = parser.parse_args()
    items = yaml.safe_load(Path(args.corpus).read_text(encoding="utf-8"))
    if args.limit:
        items = items[: args.limit]
    settings = Settings()
    qa = settings.qa
    transcriber = transcriber_for(settings.asr)
    engines = {pace: engine_for(EngineVoice(engine="piper", model="joe-us-medium", length_scale=pace), settings)
               for pace in PACES}
    heard: dict[tuple[str, float], str] = {}

    def hear(spoken: str, pace: float) -> str:
        if (spoken, pace) not in heard:
            synthesis = engines[pace].synthesize(spoken)
            heard[spoken, pace] = transcriber.transcribe(synthesis.samples, synthesis.sample_rate).text
        return heard[spoken, pace]

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        before = (module_at(args.before, "narro/text.py", Path(folder)), module_at(args.before, "narro/wer.py", Path(folder)))
        rows = []
        for number, item in enumerate(items, start=1):
            row: dict[str, object] = {"text": item["text"], "url": item["url"]}
            for label, (text_module, wer_module) in (("before", before), ("after", (text_now, wer_now))):
                spoken = text_module.normalise(item["text"])
                takes = []
                for pace in PACES:
                    transcript = hear(spoken, pace)
                    passed, rate = verdict(wer_module.align(spoken, transcript), qa)
                    takes.append({"pace": pace, "wer": round(rate, 3), "passed": passed, "transcript": transcript})
                    if passed:
                        break
                # Against the sentence as it is meant to be read (the new reading): did the listener
                # hear the operators, or did the voice skip them (which the old gate could not see)?
                meant = wer_now.align(text_now.normalise(item["text"]), takes[-1]["transcript"]).wer
                row[label] = {"spoken": spoken, "first_take": takes[0]["passed"], "passed": takes[-1]["passed"],
                              "takes": takes, "wer_as_meant": round(meant, 3)}
            rows.append(row)
            print(f"{number:3d} before {'pass' if row['before']['passed'] else 'FAIL'} "  # type: ignore[index]
                  f"after {'pass' if row['after']['passed'] else 'FAIL'}  {item['text'][:70]}", flush=True)  # type: ignore[index]
    summary = {}
    for label in ("before", "after"):
        runs = [row[label] for row in rows]
        summary[label] = {
            "passed": sum(r["passed"] for r in runs), "passed_first_take": sum(r["first_take"] for r in runs),
            "sentences": len(runs), "pass_rate": round(sum(r["passed"] for r in runs) / len(runs), 3),
            "first_take_rate": round(sum(r["first_take"] for r in runs) / len(runs), 3),
            "median_first_wer": round(statistics.median(r["takes"][0]["wer"] for r in runs), 3),
            "mean_first_wer": round(statistics.mean(r["takes"][0]["wer"] for r in runs), 3),
            "mean_wer_as_meant": round(statistics.mean(r["wer_as_meant"] for r in runs), 3),
        }
    result = {"corpus": args.corpus, "before_revision": args.before, "summary": summary, "sentences": rows,
              "wall_s": round(time.perf_counter() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\n{'':8}{'pass (3 takes)':>16}{'first take':>12}{'median WER':>12}{'mean WER':>10}{'WER as meant':>14}")
    for label in ("before", "after"):
        s = summary[label]
        print(f"{label:8}{s['passed']:>9}/{s['sentences']:<3} {s['pass_rate']:>4.0%}{s['first_take_rate']:>11.0%}"
              f"{s['median_first_wer']:>12.3f}{s['mean_first_wer']:>10.3f}{s['mean_wer_as_meant']:>14.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
