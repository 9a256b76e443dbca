"""A course author's first day (issue 15): a dry run that changes nothing and says why, fallback
clips kept while their voice is away, the published take's figures, and status by manifest path."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from narro.audio import PostSettings
from narro.batch import FALLBACK, plan_batch, why
from narro.catalogue import Catalogue, ClipState
from narro.cli import main
from narro.engines import ENGINES, EngineKind, edge
from narro.errors import EngineUnavailable, QualityError
from narro.manifest import load_course
from narro.plan import ClipSpec, effective_spec, plan, text_sha256
from narro.settings import Settings
from narro.store import LocalStore
from narro.voices import EngineVoice
from tests import doubles
from tests.conftest import write_manifest
from tests.test_edge import ARIA, fast_retries, nothing_listening, service, settings  # noqa: F401 (fixtures)

COURSE = """
course: author
title: First day
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

VOICES = doubles.VOICES_WITH_BROKEN_ENGINE + """
  plain:
    fast: {engine: piper, model: joe-us-medium}
"""


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as their text, so a cell's words stay on one line."""
    from narro import cli

    monkeypatch.setattr(cli.console, "_width", 400)


def tables(url: str) -> dict[str, list[tuple]]:
    """Every row of every catalogue table, to compare before and after."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        names = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
        return {name: sorted(db.execute(f"select * from {name}").fetchall(), key=repr) for name in names}


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# --- 1. a dry run changes nothing and says why --------------------------------------------------

@pytest.mark.usefixtures("prefect_harness")
def test_dry_run_changes_nothing_anywhere_and_says_why(tmp_path: Path, isolated_catalogue: str,
                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NARRO_QA_ASR", "false")  # the quality gate's recogniser is not what this is about
    doubles.register(monkeypatch)
    manifest = write_manifest(tmp_path / "course", COURSE, VOICES)
    store = tmp_path / "store"
    assert run("render", str(manifest), "--store", str(store)).exit_code == 1  # "two" fails
    edited = (COURSE.replace("The first clip is short.", "The first clip is short, and edited.")
              .replace("    text: The third clip", "    voice: plain\n    text: The third clip")
              + "  - id: four\n    text: A fourth clip, new today.\n")
    manifest.write_text(edited, encoding="utf-8")
    before, stored, logs = tables(isolated_catalogue), files(store), files(tmp_path / "logs")

    result = run("render", str(manifest), "--store", str(store), "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "would render author/one: text changed" in lines
    assert any(line.startswith("would render author/two: last attempt failed: ") and "engine refused" in line
               for line in lines), result.output
    assert "would render author/three: voice changed: narrator → plain" in lines
    assert "would render author/four: new" in lines
    assert lines[-1] == "4 to render, 0 unchanged; dry run: nothing was written"
    assert tables(isolated_catalogue) == before  # no run row, no pending marks, no registered clip
    assert files(store) == stored and files(tmp_path / "logs") == logs

    status = run("status", "author")
    assert "pending" not in status.output and "1 failed" in status.output
    # A dry run against a catalogue that does not exist yet does not create it.
    fresh = tmp_path / "fresh.db"
    assert run("render", str(manifest), "--store", str(store), "--dry-run", "--catalogue",
               f"sqlite:///{fresh}").exit_code == 0
    assert not fresh.exists()
    asked = run("render", str(manifest), "--store", str(store), "--dry-run", "--only", "one")
    assert "would render author/one: asked for: re-rendered even if unchanged; text changed" in asked.output


PIPER_VOICES = """
voices:
  narrator:
    fast: {engine: piper, model: joe-us-medium}
  plain:
    fast: {engine: piper, model: joe-us-medium, length_scale: 1.0}
"""


def spec_of(folder: Path, course: str, voices: str = PIPER_VOICES) -> ClipSpec:
    return plan(load_course(write_manifest(folder, course, voices)))[0]


def sidecar_of(spec: ClipSpec) -> dict:
    """What `narro.render.sidecar` records about a spec, as far as `why` reads it."""
    from narro.engines import engine_kind

    return {"content_key": spec.content_key, "text_sha256": text_sha256(spec.text), "voice": spec.voice,
            "tier": spec.tier, "title": spec.title, "post": spec.post.as_dict(),
            "engine": {"name": "x", **engine_kind(spec.engine_voice.engine).identity(spec.engine_voice)}}


def state_of(spec: ClipSpec, status: str = "rendered", error: str | None = None, published: str | None = "k",
             attempts: int = 1) -> ClipState:
    return ClipState(spec.course, spec.narration_id, spec.title, status, attempts, error, spec.content_key, published,
                     spec.voice, spec.tier, None, None, None, None, "run", datetime.now(UTC))


ONE = "course: c\nnarrations:\n  - id: a\n    title: A\n    voice: plain\n    text: Hello there.\n"


def test_why_names_each_change(tmp_path: Path):
    spec = spec_of(tmp_path / "a", ONE)
    published = sidecar_of(spec)
    assert why(spec, spec.content_key, published, state_of(spec)) == []

    def reasons(course: str, voices: str = PIPER_VOICES, sidecar: dict = published, state: ClipState | None = None) -> list:
        changed = spec_of(tmp_path / str(len(list(tmp_path.iterdir()))), course, voices)
        return [str(r) for r in why(changed, sidecar["content_key"], sidecar, state)]

    assert reasons(ONE.replace("Hello there.", "Hello here.")) == ["text changed"]
    assert reasons(ONE.replace("title: A", "title: B")) == ["title changed: 'A' → 'B'"]
    slower = PIPER_VOICES.replace("length_scale: 1.0", "length_scale: 1.2")
    assert reasons(ONE, slower) == ["engine changed: length_scale 1.0 → 1.2"]
    assert reasons(ONE.replace("voice: plain", "voice: narrator")) == ["voice changed: plain → narrator"]
    failed = reasons(ONE.replace("Hello there.", "Hello here."), state=state_of(spec, "failed", "engine refused"))
    assert failed == ["text changed", "last attempt failed: engine refused"]
    assert [str(r) for r in why(spec, None, None, None)] == ["new"]
    assert [r.kind for r in why(spec, None, None, state_of(spec, published="old"))] == ["published audio missing"]


def fallback_sidecar(spec: ClipSpec) -> dict:
    """The sidecar of `spec` as its fallback voice spoke it (narro.render.sidecar)."""
    record = {"from": "probed:online", "to": "piper:joe-us-medium", "reason": "service unreachable: no route"}
    spoken = effective_spec(spec, record)
    return {**sidecar_of(spoken), "fallback": {**record, "planned_content_key": spec.content_key}}


class ProbedKind(EngineKind):
    """An online voice whose probe answers as the test says, counting the probes."""

    name = "probed"
    answers = False
    probes = 0

    @classmethod
    def identity(cls, voice) -> dict[str, object]:  # noqa: ANN001
        return {"engine": "probed", "model": voice.model}

    @classmethod
    def probe(cls, voice, settings) -> None:  # noqa: ANN001
        ProbedKind.probes += 1
        if not ProbedKind.answers:
            raise EngineUnavailable("probed service unreachable: no route to host")


ONLINE_VOICES = """
voices:
  narrator:
    fast: {engine: probed, model: online, fallback: {engine: piper, model: joe-us-medium}}
"""
TWO_CLIPS = "course: c\nnarrations:\n  - id: a\n    text: Hello there.\n  - id: b\n    text: Goodbye now.\n"


def test_fallback_clips_are_kept_until_their_voice_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(ENGINES, "probed", ProbedKind)
    monkeypatch.setattr(ProbedKind, "probes", 0)
    manifest = write_manifest(tmp_path / "course", TWO_CLIPS, ONLINE_VOICES)
    store = LocalStore(tmp_path / "store")
    for spec in plan(load_course(manifest)):  # both clips published as the fallback voice spoke them
        sidecar = fallback_sidecar(spec)
        mp3 = b"\xff\xfb" * 50
        store.publish("c", spec.narration_id, mp3,
                      {**sidecar, "mp3": {"bytes": len(mp3), "sha256": hashlib.sha256(mp3).hexdigest()}})
    settings = Settings()

    monkeypatch.setattr(ProbedKind, "answers", False)
    offline = plan_batch(manifest, store, None, settings=settings)
    assert offline.to_render == [] and [s.narration_id for s in offline.kept_fallbacks] == ["a", "b"]
    assert [r.kind for r in offline.reasons["a"]] == [FALLBACK, "kept until its own voice answers"]
    assert "no route to host" in str(offline.reasons["a"][1]) and ProbedKind.probes == 1  # once per run, not per clip

    asked = plan_batch(manifest, store, None, settings=settings, retry_fallbacks=True)
    assert [s.narration_id for s in asked.to_render] == ["a", "b"] and ProbedKind.probes == 1  # not asked

    monkeypatch.setattr(ProbedKind, "answers", True)
    back = plan_batch(manifest, store, None, settings=settings)
    assert [s.narration_id for s in back.to_render] == ["a", "b"] and back.kept_fallbacks == []
    assert str(back.reasons["b"][-1]) == "its own voice answers again" and ProbedKind.probes == 2

    # A clip whose text changed renders whatever the probe says, and is not what decides to probe.
    manifest.write_text(TWO_CLIPS.replace("Hello there.", "Hello again."), encoding="utf-8")
    monkeypatch.setattr(ProbedKind, "answers", False)
    changed = plan_batch(manifest, store, None, settings=settings)
    assert [s.narration_id for s in changed.to_render] == ["a"] and [s.narration_id for s in changed.kept_fallbacks] == ["b"]
    assert "text changed" in [r.kind for r in changed.reasons["a"]]


def test_the_edge_probe_says_unreachable_in_plain_words_and_holds_the_service(nothing_listening: Settings):
    with pytest.raises(EngineUnavailable, match=r"^edge-tts service unreachable: cannot connect to 127\.0\.0\.1") as caught:
        edge.EdgeKind.probe(ARIA, nothing_listening)
    assert "SSLContext" not in str(caught.value) and "ssl:" not in str(caught.value)
    # Clips of this process now go to the fallback at once instead of waiting through the retries.
    with pytest.raises(EngineUnavailable, match="unreachable"):
        edge.EdgeEngine(ARIA, nothing_listening.edge)._request_with_retries("Hello.")


def test_the_edge_probe_passes_when_the_service_speaks(service, settings: Settings):  # noqa: ANN001
    edge.EdgeKind.probe(ARIA, settings)
    assert [request.text for request in service.requests] == [edge.PROBE_TEXT]


# --- 3. the published take's figures; 8. status by manifest path ----------------------------------

def record_attempts(url: str) -> None:
    """Clip `x` of course `author`: attempt 1 published (WER 28.6%), attempt 2 failed later (WER 35.7%)."""
    catalogue = Catalogue(url)
    catalogue.start_run("r1", "author")
    catalogue.register("author", "x", title="X", voice="narrator", tier="fast", content_key="k1")
    checks = {"wer": {"value": 0.357, "threshold": "<= 0.3", "passed": False, "reason": "35.7% of 14 words"}}
    for number, (wer, status) in enumerate(((0.286, "rendered"), (0.357, "failed")), 1):
        attempt = catalogue.mark_running("author", "x", f"r{number}")
        metrics = {"take": 1, "variant": "as asked", "wer": wer, "wpm": 150.0, "passed": status == "rendered",
                   "failed": [] if status == "rendered" else ["wer"],
                   "qa": {"checks": checks if status == "failed" else {}, "transcript": "the cat sat on a mat",
                          "script": "The cat sat on the mat."}}
        catalogue.finish_attempt("author", "x", attempt, status=status, metrics=metrics,
                                 error=None if status == "rendered" else "wer: 35.7% of 14 words")
        if status == "rendered":
            catalogue.mark_rendered("author", "x", content_key="k1", engine="piper", duration_s=3.0,
                                    loudness_lufs=-16.0, true_peak_dbtp=-2.0, run_id="r1")
    # The second run found the key in the store again: "unchanged", and still rendered.
    catalogue.mark_cached("author", "x", content_key="k1", sidecar=None)
    catalogue.dispose()


def test_status_shows_the_published_takes_figures_and_the_later_failure_apart(isolated_catalogue: str,
                                                                               tmp_path: Path, wide: None):
    record_attempts(isolated_catalogue)
    data = json.loads(run("status", "author", "--json").output)
    clip = data["clips"][0]
    assert clip["status"] == "rendered" and clip["qa"]["wer"] == 0.286 and clip["qa"]["attempt"] == 1
    assert clip["failed_after"]["wer"] == 0.357 and clip["failed_after"]["attempt"] == 2
    table = run("status", "author", "--wide")
    assert table.exit_code == 0 and "28.6%" in table.output and "35.7%" in table.output
    assert "attempt 2 failed after the published take (WER 35.7%): wer: 35.7% of 14 words; the published take stays" \
        in table.output

    detail = run("status", "author", "--clip", "x")
    assert detail.exit_code == 0, detail.output
    assert "published take: attempt 1" in detail.output
    assert "wer: 0.357, must be <= 0.3: FAILED (35.7% of 14 words)" in detail.output
    assert "the cat sat on [-the-] {+a+} mat" in detail.output
    assert run("status", "author", "--clip", "nope").exit_code == 2

    # A manifest path is accepted wherever a slug is.
    manifest = write_manifest(tmp_path / "m", "course: author\nnarrations:\n  - id: x\n    text: The cat sat.\n")
    assert json.loads(run("status", str(manifest), "--json").output)["course"] == "author"
    broken = write_manifest(tmp_path / "bad", "course: Not A Slug\nnarrations: []\n")
    answer = run("status", str(broken))
    assert answer.exit_code == 2 and "course.yaml:2" in answer.output


# --- 4. takes numbered as made; a fallback take after the fallback already spoke is a retake ----

def test_takes_are_numbered_as_made_and_a_second_fallback_take_is_a_retake():
    from types import SimpleNamespace

    from narro import heal
    from narro.qa import Check, QaReport

    piper = EngineVoice(engine="piper", model="joe-us-medium")
    edge_voice = EngineVoice(engine="edge", model="en-US-AriaNeural", fallback=piper)
    spec = ClipSpec("c", "C", "a", "A", "Hello there.", "narrator", "fast", edge_voice, PostSettings())
    wer = QaReport(checks=[Check("wer", 0.5, "<= 0.3", False, "50% of 2 words")])

    def made(take_spec, plan, reason):  # noqa: ANN001, ANN202 (heal's callback)
        # The online engine is away: every take is spoken by the fallback voice, and fails the gate.
        return heal.Take(plan, report=wer, result=SimpleNamespace(fallback={"to": "piper:joe-us-medium"}),
                         unavailable=not plan.fallback)

    outcome = heal.heal(spec, 4, made)
    assert [(t.plan.number, t.plan.variant) for t in outcome.takes] == [
        (1, "as asked"), (2, "retake by the fallback voice"), (3, "retake by the fallback voice, pace x1.04")]
    assert "take 2 (retake by the fallback voice)" in outcome.failure() and not outcome.unavailable


# --- 5. typos in voices.yaml; 8. small things --------------------------------------------------------

def test_validate_finds_a_model_typo_at_its_line_with_a_suggestion(tmp_path: Path):
    voices = "voices:\n  narrator:\n    description: x\n    fast: {engine: piper, model: joe-us-medum}\n" \
             "  unused:\n    fast: {engine: piper, model: not-installed-anywhere}\n"
    manifest = write_manifest(tmp_path / "c", "course: c\nnarrations:\n  - id: a\n    text: Hello there.\n", voices)
    expected = (f"{manifest.parent / 'voices.yaml'}:4: voices.narrator.fast.model: piper voice 'joe-us-medum' is "
                "neither a bundled voice nor a model file; did you mean 'joe-us-medium'?")
    result = run("validate", str(manifest))
    assert result.exit_code == 2 and expected in result.output
    assert "unused" not in result.output  # a voice no course uses costs nothing
    rendered = run("render", str(manifest), "--store", str(tmp_path / "store"))
    assert rendered.exit_code == 2 and expected in rendered.output  # not a bare engine error mid-render


def test_a_missing_reference_is_reported_at_its_own_line_not_at_the_model(tmp_path: Path):
    voices = ("default: ada\nvoices:\n  ada:\n    quality:\n      engine: codec-lm\n      model: models/none\n"
              "      reference: refs/none.wav\n")
    manifest = write_manifest(tmp_path / "q", "course: q\nnarrations:\n  - id: a\n    text: Hello there.\n"
                              "    voice: ada\n    tier: quality\n", voices)
    result = run("validate", str(manifest))
    assert result.exit_code == 2
    assert f"{manifest.parent / 'voices.yaml'}:7: voices.ada.quality.reference: " in result.output
    assert "cannot read the reference" in result.output


def test_a_tab_is_named_and_one_narration_is_singular(tmp_path: Path):
    tabbed = write_manifest(tmp_path / "t", "course: c\nnarrations:\n\t- id: a\n\t  text: Hi.\n")
    result = run("validate", str(tabbed))
    assert result.exit_code == 2 and f"{tabbed}:3: manifest: YAML syntax error" in result.output
    assert "use spaces, not tabs, to indent YAML" in result.output
    one = write_manifest(tmp_path / "o", "course: c\nnarrations:\n  - id: a\n    text: Hi.\n")
    assert run("validate", str(one)).output.strip() == f"{one}: ok: course c, 1 narration, 1 word"


# --- a manifest's `qa:` block --------------------------------------------------------------------

QA_COURSE = """course: c
defaults:
  qa: {max_wer: 0.4, max_takes: 1}
narrations:
  - id: glossary
    qa:
      max_wer: 0.45
      min_active_ratio: 0.99
    text: The encoder quantises each frame with residual vector quantisation.
  - id: plain
    text: Hello there.
"""


def test_manifest_qa_thresholds_are_validated_merged_and_used(tmp_path: Path):
    from narro import clip as clips
    from narro.catalogue import Catalogue as Records
    from narro.render import RunContext
    from narro.settings import QaSettings

    specs = {s.narration_id: s for s in plan(load_course(write_manifest(tmp_path / "ok", QA_COURSE)))}
    assert dict(specs["glossary"].qa) == {"max_wer": 0.45, "max_takes": 1, "min_active_ratio": 0.99}
    assert dict(specs["plain"].qa) == {"max_wer": 0.4, "max_takes": 1}
    base = QaSettings(max_wer=0.3, max_gap_words=7)
    assert specs["plain"].thresholds(base).max_wer == 0.4 and specs["plain"].thresholds(base).max_gap_words == 7
    assert specs["plain"].content_key == plan(load_course(write_manifest(
        tmp_path / "none", QA_COURSE.replace("  qa: {max_wer: 0.4, max_takes: 1}\n", "  tier: fast\n"))))[1].content_key

    typo = write_manifest(tmp_path / "typo", QA_COURSE.replace("max_wer: 0.45", "max_wr: 0.45")
                          .replace("max_takes: 1", "max_takes: 0"))
    result = run("validate", str(typo))
    assert result.exit_code == 2
    assert f"{typo}:3: defaults.qa.max_takes: Input should be greater than or equal to 1" in result.output
    assert f"{typo}:7: narrations[0].qa.max_wr: unknown field 'max_wr'; did you mean 'max_wer'?" in result.output

    # The narration's own thresholds judge its take (a real piper take is far from 99% active) and go in the sidecar.
    settings = Settings(qa=QaSettings(asr=False))
    records = Records(f"sqlite:///{tmp_path / 'qa.db'}")
    store = LocalStore(tmp_path / "store")
    with pytest.raises(QualityError, match="active"):
        clips.render_clip(specs["glossary"], RunContext("r1", "m", "x"), store, records, settings)
    assert len(records.attempts("c", "glossary")) == 1  # max_takes: 1 from the manifest
    sidecar = clips.render_clip(specs["plain"], RunContext("r1", "m", "x"), store, records, settings)
    assert sidecar["qa"]["manifest"] == {"max_wer": 0.4, "max_takes": 1}
    assert sidecar["qa"]["settings"]["max_wer"] == 0.4 and sidecar["qa"]["settings"]["asr"] is False
