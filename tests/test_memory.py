"""Memory stays flat in clip count: 40 short clips rendered with real piper, real ASR and the whole gate.

The render runs in a fresh interpreter (this file run as a script), so nothing an earlier test
loaded or cached counts, and reports its RSS after each clip. Before the fix it grew 9.4 MB a clip
over clips 10 to 40: CTranslate2's oneDNN kept a kernel per matrix shape (every chunk length and
token count is new: 1.8 MB a clip here), and each retake pace loaded the piper model again (one
clip's two retakes: +340 MB). Now it is -0.1 to 0.5 (bench/memory.py has whole-course curves).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLIPS = 40
WARM_UP = 10
"""Clips before growth is measured: the first takes load the models and fill the allocators."""
MAX_GROWTH_MB_PER_CLIP = 1.0


def short_texts(count: int) -> list[str]:
    """`count` different sentences of the bench course (8 to 25 words), the longest first, the rest shuffled.

    The longest comes first so that piper's onnxruntime arena, which grows to the largest
    sentence seen and then stays, is full before growth is measured.
    """
    import yaml

    course = yaml.safe_load((REPO / "manifests" / "bench-course.yaml").read_text(encoding="utf-8"))
    sentences = sorted({sentence for narration in course["narrations"]
                        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(narration["text"].split()))
                        if 8 <= len(sentence.split()) <= 25})
    chosen = random.Random(12).sample(sentences, count)
    longest = max(chosen, key=lambda sentence: len(sentence.split()))
    return [longest] + [sentence for sentence in chosen if sentence != longest]


def render_clips(folder: Path) -> list[float]:
    """Render one course of short clips clip by clip, as a worker does; RSS (MB) after each."""
    import yaml

    from narro import clip
    from narro.catalogue import Catalogue
    from narro.errors import QualityError
    from narro.manifest import load_course
    from narro.plan import plan
    from narro.render import RunContext
    from narro.settings import Settings
    from narro.store import LocalStore

    narrations = [{"id": f"s{index:02d}", "title": f"Sentence {index}", "text": text}
                  for index, text in enumerate(short_texts(CLIPS))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "voices.yaml").write_text("default: narrator\nvoices:\n  narrator:\n"
                                        "    fast: {engine: piper, model: joe-us-medium}\n", encoding="utf-8")
    manifest = folder / "course.yaml"
    manifest.write_text(yaml.safe_dump({"course": "memory-test", "title": "Memory", "narrations": narrations}),
                        encoding="utf-8")
    specs = plan(load_course(manifest))
    catalogue, store = Catalogue(f"sqlite:///{folder / 'clips.db'}"), LocalStore(folder / "store")
    context = RunContext("memory-run", str(manifest), "0" * 64)
    catalogue.start_run(context.run_id, "memory-test")
    page = 4096
    rss = []
    for spec in specs:
        catalogue.register(spec.course, spec.narration_id, title=spec.title, voice=spec.voice, tier=spec.tier,
                           content_key=spec.content_key)
        try:
            clip.render_clip(spec, context, store, catalogue, Settings())
        except QualityError:
            pass  # a refused clip made its takes all the same: its memory counts
        rss.append(int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20)
    return rss


def growth_per_clip(rss: list[float]) -> float:
    """Least-squares slope of RSS against clip number after the warm-up, MB per clip."""
    points = list(enumerate(rss))[WARM_UP:]
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


def test_rss_does_not_grow_with_the_clips_rendered(tmp_path: Path):
    done = subprocess.run([sys.executable, __file__, str(tmp_path / "render")], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(rss) == CLIPS
    growth = growth_per_clip(rss)
    assert growth < MAX_GROWTH_MB_PER_CLIP, (
        f"RSS grew {growth:.2f} MB per clip over clips {WARM_UP}-{CLIPS} (bound {MAX_GROWTH_MB_PER_CLIP}): "
        f"{[round(x) for x in rss]}")


def test_retake_paces_share_one_loaded_piper_model_and_sound_as_with_their_own():
    from narro.engines import engine_kind
    from narro.engines.piper import PiperEngine, _load_voice, model_path
    from narro.voices import EngineVoice

    voice = EngineVoice(engine="piper", model="joe-us-medium")
    variant = engine_kind("piper").variants(voice)[0].voice
    asked, retake = PiperEngine(voice), PiperEngine(variant)
    assert retake._voice is asked._voice  # one onnxruntime session, not one per pace
    text = "A retake is spoken a little slower, and a little longer than the first one was."
    shared = retake.synthesize(text).samples
    retake._voice = _load_voice(model_path(variant))  # what a session of its own gives
    assert shared.tobytes() == retake.synthesize(text).samples.tobytes()
    assert len(shared) != len(asked.synthesize(text).samples)


def test_the_clips_are_all_different_sentences():
    texts = short_texts(CLIPS)
    assert len(set(texts)) == CLIPS and len({len(t) for t in texts}) >= 30


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(json.dumps(render_clips(Path(sys.argv[1]))))
