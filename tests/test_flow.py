"""The course flow end to end through the CLI: real piper audio, a real Prefect API, partial failure."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from narro.catalogue import Catalogue
from narro.cli import main
from narro.engines import ENGINES, EngineKind, Synthesis, engine_for
from narro.voices import EngineVoice
from tests import doubles
from tests.conftest import write_manifest

pytestmark = pytest.mark.usefixtures("prefect_harness")

COURSE = """
course: flow-test
title: Flow test
narrations:
  - id: one
    title: One
    text: The first clip is short.
  - id: two
    title: Two
    text: This clip is unspeakable for the test engine.
  - id: three
    title: Three
    text: The third clip is short too.
"""


def render(*args: str):
    result = CliRunner().invoke(main, ["render", *args])
    return result


@pytest.fixture
def course(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    doubles.register(monkeypatch)
    return write_manifest(tmp_path / "course", COURSE, doubles.VOICES_WITH_BROKEN_ENGINE)


def test_one_failing_clip_does_not_stop_the_others(course: Path, tmp_path: Path, isolated_catalogue: str):
    store = tmp_path / "store"
    result = render(str(course), "--store", str(store))
    assert result.exit_code == 1, result.output
    assert "two" in result.output and "engine refused the text" in result.output
    folder = store / "flow-test"
    assert sorted(p.name for p in folder.iterdir()) == ["index.json", "one.json", "one.mp3", "one.srt", "one.vtt",
                                                           "report.html", "three.json", "three.mp3", "three.srt",
                                                           "three.vtt"]
    index = json.loads((folder / "index.json").read_text())
    assert [clip["id"] for clip in index["clips"]] == ["one", "three"]
    states = {c.narration_id: c for c in Catalogue(isolated_catalogue).clips("flow-test")}
    assert states["two"].status == "failed" and "unspeakable" in (states["two"].last_error or "")
    assert states["one"].status == states["three"].status == "rendered"
    assert -16.5 <= (states["one"].loudness_lufs or 0) <= -15.5


def test_rerender_does_only_failed_and_changed_clips(course: Path, tmp_path: Path, isolated_catalogue: str):
    store = tmp_path / "store"
    render(str(course), "--store", str(store))
    one_before = (store / "flow-test" / "one.mp3").stat().st_mtime_ns
    course.write_text(COURSE.replace("is unspeakable for the test engine", "is fine now"), encoding="utf-8")
    result = render(str(course), "--store", str(store))
    assert result.exit_code == 0, result.output
    assert "1 to render (1 last attempt failed), 2 unchanged" in result.output
    assert "3/3 1 done 0 failed 2 cached" in result.output  # the bar counts the whole course
    assert (store / "flow-test" / "two.mp3").is_file()
    assert (store / "flow-test" / "one.mp3").stat().st_mtime_ns == one_before
    states = {c.narration_id: c for c in Catalogue(isolated_catalogue).clips("flow-test")}
    # Run 1 made one take of "two" (the test engine offers no variants to re-take with); run 2 one.
    assert states["two"].status == "rendered" and states["two"].attempts == 2
    assert states["one"].attempts == 1


def test_store_is_trusted_over_catalogue(course: Path, tmp_path: Path):
    store = tmp_path / "store"
    render(str(course), "--store", str(store))
    (store / "flow-test" / "three.mp3").unlink()
    result = render(str(course), "--store", str(store), "--dry-run")
    assert "would render flow-test/three" in result.output
    assert "would render flow-test/one" not in result.output


def test_status_reports_what_the_catalogue_knows(course: Path, tmp_path: Path):
    render(str(course), "--store", str(tmp_path / "store"))
    result = CliRunner().invoke(main, ["status", "flow-test", "--json"])
    assert result.exit_code == 1  # a clip failed
    clips = {c["narration_id"]: c for c in json.loads(result.output)["clips"]}
    assert clips["two"]["status"] == "failed"
    assert clips["one"]["duration_s"] > 0.5
    table = CliRunner().invoke(main, ["status", "flow-test"])
    assert "rendered" in table.output and "failed" in table.output


class CountingKind(EngineKind):
    """Piper behind a counter of simultaneous calls, to observe the concurrency cap."""

    name = "counting"
    lock = threading.Lock()
    active = 0
    peak = 0

    @classmethod
    def identity(cls, voice: EngineVoice) -> dict[str, object]:
        return {"engine": "counting"}

    @classmethod
    def load(cls, voice: EngineVoice, settings: object):
        piper = engine_for(EngineVoice(engine="piper", model="joe-us-medium"), settings)

        class Counting:
            def synthesize(self, text: str) -> Synthesis:
                with CountingKind.lock:
                    CountingKind.active += 1
                    CountingKind.peak = max(CountingKind.peak, CountingKind.active)
                try:
                    return piper.synthesize(text)
                finally:
                    with CountingKind.lock:
                        CountingKind.active -= 1

        return Counting()


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_cap_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, concurrency: int):
    monkeypatch.setitem(ENGINES, "counting", CountingKind)
    monkeypatch.setattr(CountingKind, "peak", 0)
    narrations = "".join(f"  - id: c{i}\n    text: Clip number {i} says a few words.\n" for i in range(6))
    voices = "voices:\n  narrator:\n    fast: {engine: counting, model: joe-us-medium}\n"
    manifest = write_manifest(tmp_path / f"cap{concurrency}", f"course: cap\nnarrations:\n{narrations}", voices)
    result = render(str(manifest), "--store", str(tmp_path / "store"), "--concurrency", str(concurrency))
    assert result.exit_code == 0, result.output
    assert CountingKind.peak == concurrency


def test_only_rerenders_the_chosen_clip_even_if_unchanged(course: Path, tmp_path: Path):
    store = tmp_path / "store"
    render(str(course), "--store", str(store))
    first = json.loads((store / "flow-test" / "one.json").read_text())["run_id"]
    result = render(str(course), "--store", str(store), "--only", "one")
    assert result.exit_code == 0, result.output
    assert json.loads((store / "flow-test" / "one.json").read_text())["run_id"] != first
    assert "1 to render" in render(str(course), "--store", str(store), "--only", "three", "--dry-run").output
    unknown = render(str(course), "--store", str(store), "--only", "nope")
    assert unknown.exit_code == 2 and "nope" in unknown.output


def test_store_that_is_a_file_is_refused_before_rendering(course: Path, tmp_path: Path):
    not_a_folder = tmp_path / "store"
    not_a_folder.write_text("")
    result = render(str(course), "--store", str(not_a_folder / "sub"))
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    assert not_a_folder.read_text() == ""
