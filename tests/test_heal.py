"""Self-healing: a take that fails the quality gate is re-made, then the fallback voice speaks."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from narro import clip, heal
from narro.catalogue import Catalogue
from narro.cli import main
from narro.engines import ENGINES, Synthesis, engine_for
from narro.engines.piper import PiperKind
from narro.manifest import load_course
from narro.plan import plan
from narro.settings import Settings
from narro.voices import EngineVoice
from tests.conftest import write_manifest

TEXT = ("A neural audio codec learns to compress sound into a short list of numbers. It cuts the waveform "
        "into frames, about 75 of them every second. Those entries are called tokens.")


class FirstTakeCutKind(PiperKind):
    """Speaks with piper (its options and pace variants too), but its first take of each text is cut in
    half; `always` cuts every take."""

    name = "first-take-cut"
    seen: set[str] = set()
    always = False

    @classmethod
    def identity(cls, voice: EngineVoice) -> dict[str, object]:
        return {"engine": "first-take-cut", "model": voice.model, "length_scale": cls.options(voice).length_scale}

    @classmethod
    def load(cls, voice: EngineVoice, settings: Settings) -> FirstTakeCutEngine:
        return FirstTakeCutEngine(voice, settings)


class FirstTakeCutEngine:
    def __init__(self, voice: EngineVoice, settings: Settings):
        piper = EngineVoice(engine="piper", model=voice.model, length_scale=PiperKind.options(voice).length_scale)
        self._piper = engine_for(piper, settings)

    def synthesize(self, text: str) -> Synthesis:
        take = self._piper.synthesize(text)
        if FirstTakeCutKind.always or text not in FirstTakeCutKind.seen:
            FirstTakeCutKind.seen.add(text)
            take = Synthesis(take.samples[: len(take.samples) // 2], take.sample_rate, "first-take-cut")
        return take


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> type[FirstTakeCutKind]:
    monkeypatch.setitem(ENGINES, FirstTakeCutKind.name, FirstTakeCutKind)
    monkeypatch.setattr(FirstTakeCutKind, "seen", set())
    monkeypatch.setattr(FirstTakeCutKind, "always", False)
    return FirstTakeCutKind


VOICES = """
default: narrator
voices:
  narrator:
    fast:
      engine: first-take-cut
      model: joe-us-medium
      fallback: {engine: piper, model: joe-us-medium}
"""

COURSE = f"""
course: heal-test
title: Heal test
narrations:
  - id: codec
    title: Codec
    text: "{TEXT}"
"""


# One take's steps as plain calls: synthesise, post-process, watermark, check.
STEPS = functools.partial(clip.make_take, settings=Settings())


def spec_in(folder: Path):
    return plan(load_course(write_manifest(folder, COURSE, VOICES)))[0]


def test_take_plan_order():
    piper = EngineVoice(engine="piper", model="joe-us-medium")
    edge = EngineVoice(engine="edge", model="en-US-GuyNeural", fallback=piper)
    plans = heal.take_plan(edge, 4)
    assert [(p.variant, p.fallback) for p in plans] == [
        ("as asked", False), ("rate -4%", False), ("fallback", True), ("fallback, pace x1.04", True)]
    assert plans[1].voice.rate == "-4%" and plans[3].voice.fallback.length_scale == 1.04
    assert [p.variant for p in heal.take_plan(piper, 3)] == ["as asked", "pace x1.04", "pace x0.96"]
    assert [p.variant for p in heal.take_plan(edge, 3, allow_fallback=False)] == ["as asked", "rate -4%", "rate +4%"]


def test_a_failing_first_take_is_remade_with_a_varied_pace(flaky, tmp_path: Path):
    spec = spec_in(tmp_path)
    recorded: list[heal.Take] = []
    outcome = heal.heal(spec, 3, lambda s, p, r: heal.run_take(s, p, r, STEPS), on_take=recorded.append)
    assert [t.passed for t in outcome.takes] == [False, True] and recorded == outcome.takes
    first, second = outcome.takes
    assert {"speech_rate", "tail"} <= set(first.metrics["failed"])
    assert outcome.chosen is second
    assert second.metrics["variant"] == "pace x1.04" and second.metrics["options"] == {"length_scale": 1.04}
    assert second.metrics["wer"] < 0.2


def test_the_fallback_voice_speaks_when_every_own_take_fails(flaky, tmp_path: Path):
    flaky.always = True
    outcome = heal.heal(spec_in(tmp_path), 3, lambda s, p, r: heal.run_take(s, p, r, STEPS))
    assert [(t.plan.variant, t.passed) for t in outcome.takes] == [
        ("as asked", False), ("pace x1.04", False), ("fallback", True)]
    clip = outcome.chosen.result
    assert clip.fallback["to"] == "piper:joe-us-medium" and "quality gate" in clip.fallback["reason"]


@pytest.mark.usefixtures("prefect_harness")
def test_render_publishes_the_passing_take_and_keeps_every_attempt(flaky, tmp_path: Path, isolated_catalogue: str):
    manifest = write_manifest(tmp_path / "course", COURSE, VOICES)
    store = tmp_path / "store"
    result = CliRunner().invoke(main, ["render", str(manifest), "--store", str(store)])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((store / "heal-test" / "codec.json").read_text())
    assert sidecar["qa"]["take"] == 2 and sidecar["qa"]["passed"]
    assert sidecar["engine"]["length_scale"] == 1.04
    assert [t["passed"] for t in sidecar["qa"]["takes"]] == [False, True]
    attempts = Catalogue(isolated_catalogue).attempts("heal-test", "codec")
    assert [a.status for a in attempts] == ["failed", "rendered"]
    assert "speech_rate" in attempts[0].error and attempts[1].metrics["wer"] < 0.2
    assert (store / "heal-test" / "report.html").is_file()


@pytest.mark.usefixtures("prefect_harness")
def test_no_passing_take_publishes_nothing_and_keeps_the_previous_version(flaky, tmp_path: Path,
                                                                           isolated_catalogue: str,
                                                                           monkeypatch: pytest.MonkeyPatch):
    manifest = write_manifest(tmp_path / "course", COURSE, VOICES)
    store = tmp_path / "store"
    assert CliRunner().invoke(main, ["render", str(manifest), "--store", str(store)]).exit_code == 0
    before = (store / "heal-test" / "codec.mp3").read_bytes()
    flaky.always = True
    monkeypatch.setenv("NARRO_QA_MAX_TAKES", "2")
    manifest.write_text(COURSE.replace("called tokens.", "called tokens, and models predict them."))
    result = CliRunner().invoke(main, ["render", str(manifest), "--store", str(store)])
    assert result.exit_code == 1, result.output
    assert "quality gate" in result.output and "speech_rate" in result.output
    assert (store / "heal-test" / "codec.mp3").read_bytes() == before
    state = Catalogue(isolated_catalogue).clip("heal-test", "codec")
    assert state.status == "failed" and "take 2" in state.last_error
