"""The engine seam: outside engines installed as packages, broken plugins, options, variants, the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from narro import engines, heal
from narro.audio import PostSettings
from narro.engines import EngineKind, EngineTable, engine_for, engine_kind
from narro.engines.edge import EdgeKind
from narro.engines.piper import PiperKind
from narro.errors import EngineUnavailable, ManifestError
from narro.manifest import load_course
from narro.plan import ClipSpec
from narro.settings import EdgeSettings, Settings
from narro.voices import EngineVoice
from tests.conftest import write_manifest

NARRO = Path(sys.executable).with_name("narro")

# An outside engine, as its own package would ship it: it imports narro.engines at its top.
TONE_ENGINE = '''
"""A test engine: each word is a short tone at `tone_hz`."""

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from narro.engines import EngineKind, Synthesis, Variant, engine_for

RATE = 24_000


class ToneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tone_hz: float = Field(default=220.0, gt=50, lt=1000)


class ToneKind(EngineKind):
    name = "tone"
    Options = ToneOptions

    @classmethod
    def identity(cls, voice):
        return {"engine": "tone", "version": 1, "tone_hz": cls.options(voice).tone_hz}

    @classmethod
    def load(cls, voice, settings):
        return ToneEngine(cls.options(voice).tone_hz)

    @classmethod
    def voices(cls, settings):
        return [{"name": "sine", "locale": "zz-ZZ", "gender": ""}]

    @classmethod
    def variants(cls, voice):
        hz = cls.options(voice).tone_hz
        return [Variant(f"tone {hz * 1.5:g} Hz", voice.model_copy(update={"tone_hz": hz * 1.5}))]


class ToneEngine:
    sample_rate = RATE

    def __init__(self, hz):
        time = np.arange(int(0.3 * RATE)) / RATE
        envelope = np.minimum(1.0, np.minimum(time, time[::-1]) / 0.02)
        self._word = (0.5 * envelope * np.sin(2 * np.pi * hz * time)).astype(np.float32)
        self._gap = np.zeros(int(0.1 * RATE), dtype=np.float32)

    def synthesize(self, text):
        pieces = []
        for _ in text.split():
            pieces += [self._word, self._gap]
        return Synthesis(np.concatenate(pieces[:-1]), RATE, "tone-1")
'''


def install(site: Path, distribution: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """Install a package into `site` as pip would: its modules, and a dist-info with METADATA and entry points."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = site / f"{distribution.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n", encoding="utf-8")
    points = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[narro.engines]\n{points}", encoding="utf-8")
    return site


def tone_site(tmp_path: Path) -> Path:
    return install(tmp_path / "site", "narro-tone", {"narro_tone": TONE_ENGINE}, {"tone": "narro_tone:ToneKind"})


def broken_site(tmp_path: Path) -> Path:
    return install(tmp_path / "site", "narro-broken", {
        "narro_broken": "raise ImportError(\"narro_broken needs the 'tonelib' package\")\n",
        "narro_not_a_kind": "class Thing:\n    name = 'not-a-kind'\n",
        "narro_eager": "from narro.engines import engine_kind\n\nPIPER = engine_kind('piper')\n",
    }, {"broken": "narro_broken:BrokenKind", "not-a-kind": "narro_not_a_kind:Thing", "eager": "narro_eager:Kind"})


def narro(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`narro ARGS` in a fresh process that finds the packages installed in `site`."""
    environment = {**os.environ, "PYTHONPATH": str(site), "NARRO_QA_ASR": "false",
                   # `narro voices` asks the edge service: answer at once that it is not there.
                   "NARRO_EDGE_VOICES_URL": "http://127.0.0.1:9/voices/list?x=1", **env}
    return subprocess.run([str(NARRO), *args], capture_output=True, text=True, env=environment, timeout=300)


COURSE = """course: tones
title: Tones
narrations:
  - id: hello
    title: Hello
    text: Hello there, this is a tone.
"""

TONE_VOICES = """default: narrator
voices:
  narrator:
    fast:
      engine: tone
      model: sine
      tone_hz: 330
"""


@pytest.mark.usefixtures("prefect_harness")
def test_an_engine_installed_as_a_package_renders_a_course(tmp_path: Path, isolated_catalogue: str):
    from prefect.settings import PREFECT_API_URL

    site = tone_site(tmp_path)
    manifest = write_manifest(tmp_path / "course", COURSE, TONE_VOICES)
    store = tmp_path / "store"
    rendered = narro(site, "render", str(manifest), "--store", str(store), PREFECT_API_URL=str(PREFECT_API_URL.value()))
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    sidecar = json.loads((store / "tones" / "hello.json").read_text())
    assert sidecar["engine"] == {"name": "tone-1", "engine": "tone", "version": 1, "tone_hz": 330.0}
    assert (store / "tones" / "hello.mp3").stat().st_size > 1000
    listed = narro(site, "voices")
    assert listed.returncode == 0 and "sine" in listed.stdout and "zz-ZZ" in listed.stdout, listed.stdout


def test_an_engine_module_may_import_narro_engines_at_its_top_in_either_order(tmp_path: Path):
    site = tone_site(tmp_path)
    for first in ("narro_tone", "narro.engines"):
        probe = (f"import {first}\n"
                 "from narro.engines import ENGINES, engine_kind\n"
                 "import narro_tone\n"
                 "assert engine_kind('tone') is narro_tone.ToneKind, dict(ENGINES)\n")
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYTHONPATH": str(site)})
        assert result.returncode == 0, result.stderr


def test_a_broken_plugin_is_recorded_and_the_other_engines_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(broken_site(tmp_path)))
    table = EngineTable(engines.ENTRY_POINT_GROUP)
    monkeypatch.setattr(engines, "ENGINES", table)
    assert {"piper", "edge"} <= set(table) and not {"broken", "not-a-kind", "eager"} & set(table)
    assert table.broken["broken"] == ("plugin narro_broken:BrokenKind: ImportError: "
                                      "narro_broken needs the 'tonelib' package")
    assert "not a narro.engines.EngineKind subclass" in table.broken["not-a-kind"]
    # A plugin that reads the table while it is being imported is refused, not deadlocked.
    assert "RuntimeError: the engine table was used while engine plugins were being imported" in table.broken["eager"]
    with pytest.raises(EngineUnavailable, match=r"^engine 'broken' cannot be used: plugin narro_broken:BrokenKind: "
                                                r"ImportError: narro_broken needs the 'tonelib' package$"):
        engine_kind("broken")
    assert engine_kind("piper") is PiperKind
    with pytest.raises(EngineUnavailable, match=r"^unknown engine 'nope'; known: (.+, )?edge, piper$"):
        engine_kind("nope")


def test_a_broken_plugin_fails_only_the_courses_that_use_it(tmp_path: Path):
    site = broken_site(tmp_path)
    voices = "voices:\n  narrator:\n    fast: {engine: piper, model: joe-us-medium}\n" \
             "  fancy:\n    fast: {engine: broken, model: x}\n"
    plain = write_manifest(tmp_path / "plain", COURSE, voices)
    ok = narro(site, "validate", str(plain))
    assert ok.returncode == 0, ok.stderr
    assert "engine 'broken' is unavailable: plugin narro_broken:BrokenKind: ImportError" in ok.stderr

    with_fancy = COURSE.replace("title: Hello\n", "title: Hello\n    voice: fancy\n")
    uses_it = write_manifest(tmp_path / "uses", with_fancy, voices)
    failed = narro(site, "validate", str(uses_it))
    assert failed.returncode == 2
    assert (f"{uses_it}:6: narrations[0].voice: voice 'fancy' (fast tier): engine 'broken' cannot be used: "
            f"plugin narro_broken:BrokenKind: ImportError: narro_broken needs the 'tonelib' package") in failed.stderr

    listed = narro(site, "voices")
    assert listed.returncode == 0 and "joe-us-medium" in listed.stdout
    assert "engine 'broken' is unavailable: plugin narro_broken:BrokenKind: ImportError" in listed.stderr
    assert "engine 'not-a-kind' is unavailable" in listed.stderr


def problems(tmp_path: Path, voices: str) -> dict[tuple[int | None, str], str]:
    with pytest.raises(ManifestError) as caught:
        load_course(write_manifest(tmp_path, COURSE, voices))
    return {(p.line, p.field): p.message for p in caught.value.problems}


def test_engine_options_are_checked_by_their_engine_with_file_and_line(tmp_path: Path):
    voices = ("voices:\n"
              "  narrator:\n"
              "    fast:\n"
              "      engine: piper\n"
              "      model: joe-us-medium\n"
              "      lenght_scale: 1.1\n"
              "  quick:\n"
              "    fast: {engine: piper, model: joe-us-medium, length_scale: 9}\n"
              "  aria:\n"
              "    fast:\n"
              "      engine: edge\n"
              "      model: en-US-AriaNeural\n"
              "      rate: fast\n"
              "      length_scale: 1.2\n"
              "      fallback: {engine: piper, model: joe-us-medium, rate: '+5%'}\n")
    assert problems(tmp_path, voices) == {
        (6, "voices.narrator.fast.lenght_scale"): "unknown field 'lenght_scale'; did you mean 'length_scale'?",
        (8, "voices.quick.fast.length_scale"): "Input should be less than or equal to 4",
        (13, "voices.aria.fast.rate"): "'fast' is not like '+10%' (a sign, up to three digits, then the unit)",
        (14, "voices.aria.fast.length_scale"): ("unknown field 'length_scale'; "
                                                   "allowed: engine, fallback, model, pitch, rate, volume"),
        (15, "voices.aria.fast.fallback.rate"): "unknown field 'rate'; allowed: engine, fallback, length_scale, model",
    }


def test_an_outside_engines_options_are_checked_by_its_own_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(tone_site(tmp_path)))
    monkeypatch.setattr(engines, "ENGINES", EngineTable(engines.ENTRY_POINT_GROUP))
    found = problems(tmp_path / "bad", TONE_VOICES.replace("tone_hz: 330", "tone_hz: 5\n      tone_db: 3"))
    assert found == {(7, "voices.narrator.fast.tone_hz"): "Input should be greater than 50",
                     (8, "voices.narrator.fast.tone_db"): "unknown field 'tone_db'; did you mean 'tone_hz'?"}
    voice = load_course(write_manifest(tmp_path / "good", COURSE, TONE_VOICES)).voices.resolve("narrator", "fast")
    assert engine_kind("tone").options(voice).tone_hz == 330.0


def test_engine_for_caches_per_voice_options_and_settings():
    piper = EngineVoice(engine="piper", model="joe-us-medium")
    slower = EngineVoice(engine="piper", model="joe-us-medium", length_scale=1.1)
    settings = Settings()
    assert engine_for(piper, settings) is engine_for(EngineVoice(engine="piper", model="joe-us-medium"), Settings())
    assert engine_for(slower, settings) is not engine_for(piper, settings)
    assert engine_for(slower, settings) is engine_for(piper.model_copy(update={"length_scale": 1.1}), settings)
    aria = EngineVoice(engine="edge", model="en-US-AriaNeural")
    elsewhere = Settings(edge=EdgeSettings(wss_url="ws://127.0.0.1:9/edge?x=1"))
    assert engine_for(aria, settings) is not engine_for(aria, elsewhere)


class Steady(EngineKind):
    """An engine that cannot vary its take."""

    name = "steady"

    @classmethod
    def identity(cls, voice: EngineVoice) -> dict[str, object]:
        return {"engine": "steady"}


def test_each_engine_names_its_own_retakes(monkeypatch: pytest.MonkeyPatch):
    piper = EngineVoice(engine="piper", model="joe-us-medium", length_scale=1.25)
    assert [(v.label, v.voice.length_scale) for v in PiperKind.variants(piper)] == [
        ("pace x1.04", 1.3), ("pace x0.96", 1.2), ("pace x1.08", 1.35)]
    aria = EngineVoice(engine="edge", model="en-US-AriaNeural", rate="+10%", pitch="-5Hz")
    assert [(v.label, v.voice.rate, v.voice.pitch) for v in EdgeKind.variants(aria)] == [
        ("rate +6%", "+6%", "-5Hz"), ("rate +14%", "+14%", "-5Hz"), ("rate +2%", "+2%", "-5Hz")]
    monkeypatch.setitem(engines.ENGINES, "steady", Steady)
    steady = EngineVoice(engine="steady", model="x", fallback=piper)
    assert [p.variant for p in heal.take_plan(steady, 4)] == ["as asked", "fallback", "fallback, pace x1.04",
                                                              "fallback, pace x0.96"]
    assert [p.variant for p in heal.take_plan(steady, 4, allow_fallback=False)] == ["as asked"]


def test_only_engines_with_a_rate_limit_get_one():
    from tasks.edge_limit import rate_limits

    def spec(voice: EngineVoice) -> ClipSpec:
        return ClipSpec("c", "C", "n", "N", "Hello.", "narrator", "fast", voice, PostSettings())

    piper = EngineVoice(engine="piper", model="joe-us-medium")
    assert EdgeKind.rate_limit == "narro-edge-tts" and PiperKind.rate_limit is None
    assert rate_limits([spec(piper)]) == set()
    assert rate_limits([spec(piper), spec(EngineVoice(engine="edge", model="en-US-AriaNeural"))]) == {"narro-edge-tts"}
    offline_first = piper.model_copy(update={"fallback": EngineVoice(engine="edge", model="en-US-GuyNeural")})
    assert rate_limits([spec(offline_first)]) == {"narro-edge-tts"}


def test_only_engine_kinds_can_be_registered():
    with pytest.raises(TypeError, match="not a narro.engines.EngineKind subclass"):
        engines.ENGINES["plain"] = object  # type: ignore[assignment]
    with pytest.raises(TypeError, match="registered as 'other'"):
        engines.ENGINES["other"] = Steady
