"""Script markup ([pause], [slow], [fast]) and a narration's `pace:`: validated with lines, spoken by the real
piper voice through the clip pipeline, judged by the gate, kept out of captions, and part of the content key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from narro import heal, markup, qa, render
from narro.cli import main
from narro.errors import ManifestError
from narro.manifest import load_course
from narro.plan import ClipSpec, plan
from narro.settings import QaSettings, Settings
from tests.conftest import write_manifest
from tests.test_lexicon import EDGE_VOICES as VOICES

FIRST = "A neural codec turns sound into a short list of numbers."
SECOND = "A language model then learns to continue that list, one token at a time."
NO_ASR = Settings(qa=QaSettings(asr=False))


def specs(folder: Path, narrations: str) -> dict[str, ClipSpec]:
    path = write_manifest(folder, f"course: marks\nnarrations:\n{narrations}", VOICES)
    return {spec.narration_id: spec for spec in plan(load_course(path))}


def problems(folder: Path, body: str, script: str | None = None) -> list[str]:
    if script is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "lesson.md").write_text(script, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_course(write_manifest(folder, body, VOICES))
    return [str(problem) for problem in caught.value.problems]


# --------------------------------------------------------------------------- parsing and errors


def test_markup_is_spoken_as_tags_and_neither_written_nor_heard():
    from narro.text import speech

    script = speech("Breathe. [pause 500ms] Now [slow]the 5 kg rule[/slow], then [fast]the rest[/fast].")
    assert script.spoken == "Breathe. [pause 0.5s] Now [slow]the 5 kilograms rule[/slow], then [fast]the rest[/fast]."
    assert "[" not in script.heard and "[" not in script.written
    assert script.written.split() == "Breathe. Now the 5 kg rule, then the rest.".split()
    assert markup.parts(script.spoken) == [
        markup.Part("Breathe."), markup.Part("Now", pause_before_s=0.5),
        markup.Part("the 5 kilograms rule,", speed=markup.SPEEDS["slow"]), markup.Part("then"),
        markup.Part("the rest.", speed=markup.SPEEDS["fast"])]
    # Brackets that are not tags, and do not look like mistyped ones, stay text.
    assert speech("See [sic] and x[0].").spoken == "See [sic] and x[0]."


def test_bad_markup_in_inline_text_is_reported_at_its_manifest_line(tmp_path):
    found = problems(tmp_path, """\
course: marks
narrations:
  - id: one
    text: |
      A first line.
      A second [pasue 2s] line.
      Then [slow]a span that never ends.
  - id: two
    text: "Two spans [slow]nest [fast]here[/fast][/slow], and [pause 20s] is too long."
""")
    manifest = tmp_path / "course.yaml"
    assert found == [
        f"{manifest}:6: narrations[0].text: unknown markup tag '[pasue 2s]'; did you mean [pause]? "
        "(tags are [pause 1.5s], [slow]…[/slow] and [fast]…[/fast])",
        f"{manifest}:7: narrations[0].text: [slow] is never closed; end the span with [/slow]",
        f"{manifest}:9: narrations[1].text: '[fast]' inside [slow]: spans do not nest; close [/slow] first",
        f"{manifest}:9: narrations[1].text: '[pause 20s]': a pause lasts 0.05 to 10 seconds; split a longer "
        "silence into narrations",
    ]


def test_bad_markup_in_a_script_is_reported_at_the_script_line_and_validate_exits_2(tmp_path):
    script = "# Lesson\n\nSome words.\n\n```\n[pause] in code is not markup\n```\n\nA [pause 2] here.\n\n[/fast] end.\n"
    body = "course: marks\nnarrations:\n  - id: one\n    script: lesson.md\n"
    lesson = tmp_path / "lesson.md"
    assert problems(tmp_path, body, script) == [
        f"{lesson}:9: narrations[0].script: '[pause 2]': give the pause a duration, such as [pause 1.5s] or "
        "[pause 500ms]",
        f"{lesson}:11: narrations[0].script: '[/fast]' closes a span that is not open",
    ]
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "course.yaml")])
    assert result.exit_code == 2 and f"{lesson}:9: narrations[0].script:" in result.output


@pytest.mark.parametrize(("text", "message"), [
    ("[pause 1s] Hello there.", "a pause before the first or after the last word does nothing"),
    ("Hello there. [pause 1s]", "a pause before the first or after the last word does nothing"),
    ("Say [slow] [/slow] it.", "[slow]…[/slow] has nothing to say inside"),
    ("Say [fast 2x]it[/fast].", "'[fast 2x]' takes no argument"),
])
def test_markup_mistakes_name_what_to_do(text, message):
    assert message in " ".join(problem.message for problem in markup.parse(text)[1])


def test_a_markdown_script_keeps_its_markup_through_markdown_stripping():
    from narro.text import strip_markdown

    assert strip_markdown("# Title\n\nSome [slow]text[/slow][pause 1s] here, [a link](x).\n") == \
        "Title.\n\nSome [slow]text[/slow][pause 1s] here, a link."


def test_pace_needs_an_engine_with_a_pace_control_and_stays_in_range(tmp_path):
    found = problems(tmp_path, "course: marks\nnarrations:\n  - id: one\n    text: Hello there.\n    pace: 3\n")
    assert len(found) == 1 and ":5: narrations[0].pace:" in found[0] and "less than or equal to 2" in found[0]


# --------------------------------------------------------------------------- content keys


def test_markup_and_pace_are_in_the_key_of_exactly_their_clips(tmp_path):
    plain = specs(tmp_path / "plain", f"  - id: a\n    text: {FIRST} {SECOND}\n  - id: b\n    text: {FIRST}\n")
    marked = specs(tmp_path / "marked",
                   f"  - id: a\n    text: {FIRST} [pause 2s] {SECOND}\n  - id: b\n    text: {FIRST}\n")
    paced = specs(tmp_path / "paced",
                  f"  - id: a\n    text: {FIRST} {SECOND}\n  - id: b\n    text: {FIRST}\n    pace: 0.8\n")
    assert marked["a"].content_key != plain["a"].content_key and marked["b"].content_key == plain["b"].content_key
    assert paced["a"].content_key == plain["a"].content_key and paced["b"].content_key != plain["b"].content_key
    # The same markup written another way is the same clip.
    again = specs(tmp_path / "again", f"  - id: a\n    text: {FIRST} [pause 2000ms] {SECOND}\n")
    assert again["a"].content_key == marked["a"].content_key


def test_pace_overrides_the_voice_pace_of_each_engine_and_its_fallback(tmp_path):
    spec = specs(tmp_path, f"  - id: a\n    text: {FIRST}\n    voice: aria\n    pace: 0.8\n")["a"]
    assert spec.engine_voice.model_extra == {"rate": "-20%"}
    assert spec.engine_voice.fallback is not None and spec.engine_voice.fallback.model_extra == {"length_scale": 1.25}


# --------------------------------------------------------------------------- real speech


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, tuple[ClipSpec, render.FinishedClip]]:
    """The same words plain, with an authored pause, a [slow] or [fast] span, and at pace 0.8, through the pipeline."""
    narrations = (f"  - id: plain\n    text: {FIRST} {SECOND}\n"
                  f"  - id: pause\n    text: {FIRST} [pause 2s] {SECOND}\n"
                  f"  - id: slow\n    text: {FIRST} [slow]{SECOND}[/slow]\n"
                  f"  - id: fast\n    text: {FIRST} [fast]{SECOND}[/fast]\n"
                  f"  - id: paced\n    text: {FIRST} {SECOND}\n    pace: 0.8\n")
    out = {}
    for clip_id, spec in specs(tmp_path_factory.mktemp("marks"), narrations).items():
        synthesis, seconds = render.synthesize(spec, NO_ASR)
        clip = render.post_process(spec, synthesis, seconds)
        out[clip_id] = (spec, clip)
    return out


def test_an_authored_pause_lengthens_the_clip_by_its_duration(rendered):
    plain, paused = rendered["plain"][1], rendered["pause"][1]
    assert paused.duration_s - plain.duration_s == pytest.approx(2.0, abs=0.1)


def test_slow_and_fast_spans_and_pace_change_the_length_the_right_way(rendered):
    plain = rendered["plain"][1].duration_s
    # [slow] and [fast] cover the second sentence (about half the clip); pace 0.8 all of it. Pauses keep
    # their length, so the clip changes less than the speech.
    assert rendered["fast"][1].duration_s < plain - 0.2
    assert plain + 0.3 < rendered["slow"][1].duration_s < rendered["paced"][1].duration_s
    assert rendered["paced"][1].duration_s > plain * 1.08


def test_the_gate_accepts_an_authored_pause_but_flags_an_accidental_one(rendered):
    spec, clip = rendered["pause"]
    settings = QaSettings(asr=False)
    timing = {c.name: c for c in qa.check_timing(clip.decoded, clip.sample_rate, spec.heard, settings,
                                                 markup.authored_pauses(spec.text))}
    assert timing["longest_pause"].passed and timing["speech_rate"].passed, timing
    # Unaccounted for, the same gap fails.
    alone = {c.name: c for c in qa.check_timing(clip.decoded, clip.sample_rate, spec.heard, settings)}
    assert not alone["longest_pause"].passed
    # A gap that was not written, in the first sentence, fails even beside the authored one.
    cut = int(0.25 * len(clip.decoded))
    gap = np.zeros(int(2.5 * clip.sample_rate), dtype=clip.decoded.dtype)
    spliced = np.concatenate([clip.decoded[:cut], gap, clip.decoded[cut:]])
    flagged = {c.name: c for c in qa.check_timing(spliced, clip.sample_rate, spec.heard, settings, [2.0])}
    assert not flagged["longest_pause"].passed
    assert "authored pause" in flagged["longest_pause"].reason


def test_a_marked_up_take_passes_the_gate_and_its_captions_show_the_script_without_markup(rendered):
    spec, clip = rendered["pause"]
    synthesis, _ = render.synthesize(spec, NO_ASR)
    report = heal.check_take(spec, synthesis, clip, Settings())  # the real recogniser, as every render runs it
    assert report.passed, report.reason()
    assert report.script is not None and "[" not in report.script and "pause" not in report.script
    captioned = render.with_captions(spec, synthesis, clip, report.words)
    assert captioned.captions is not None and captioned.captions.timing == "aligned"
    words = " ".join(cue.text for cue in captioned.captions.cues).split()
    assert words == f"{FIRST} {SECOND}".split()


def test_edge_says_each_part_in_its_own_request_at_its_own_rate(tmp_path):
    from narro.engines import edge
    from narro.engines.fallback import speak
    from narro.settings import EdgeSettings
    from tests.edge_emulator import EdgeEmulator

    spec = specs(tmp_path, f"  - id: a\n    voice: aria\n    pace: 0.9\n"
                           f"    text: {FIRST} [pause 1s] [slow]{SECOND}[/slow] Done.\n")["a"]
    edge.reset_unreachable()
    with EdgeEmulator() as service:
        settings = Settings(edge=EdgeSettings(wss_url=service.url, voices_url=service.voices_url))
        take = speak(spec, spec.engine_voice, settings, None)
    sent = [(request.text, request.rate) for request in service.requests]
    # pace 0.9 is the voice's rate; the [slow] span asks for 0.8 of that.
    assert sent == [(FIRST, "-10%"), (SECOND, "-28%"), ("Done.", "-10%")]
    # The engine's word timings stay in order across the joins, so captions can use them.
    assert take.words is not None and [w.word for w in take.words][:3] == ["A", "neural", "codec"]
    starts = [w.start_s for w in take.words]
    assert starts == sorted(starts) and take.words[-1].end_s <= take.duration_s


def test_narro_say_speaks_markup_as_a_render_does_and_refuses_bad_markup(tmp_path):
    from scipy.io import wavfile

    def said(text: str) -> float:
        target = tmp_path / "line.wav"
        result = CliRunner().invoke(main, ["say", text, "--out", str(target)])
        assert result.exit_code == 0, result.output
        rate, samples = wavfile.read(target)
        return len(samples) / rate

    plain, paused = said(f"{FIRST} {SECOND}"), said(f"{FIRST} [pause 2s] {SECOND}")
    assert paused - plain == pytest.approx(2.0, abs=0.3)
    refused = CliRunner().invoke(main, ["say", f"{FIRST} [pasue 2s] {SECOND}", "--out", str(tmp_path / "bad.wav")])
    assert refused.exit_code == 2 and "did you mean [pause]" in refused.output
    assert not (tmp_path / "bad.wav").exists()
    empty = CliRunner().invoke(main, ["say", "[slow][/slow]", "--out", str(tmp_path / "empty.wav")])
    assert empty.exit_code == 2 and not (tmp_path / "empty.wav").exists()
