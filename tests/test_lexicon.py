"""Pronunciation lexicon: what it matches, what it changes (spoken text, keys, audio) and what it leaves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from narro.errors import ManifestError
from narro.manifest import load_course
from narro.plan import plan
from tests.conftest import write_manifest

EDGE_VOICES = """\
default: narrator
voices:
  narrator:
    fast: {engine: piper, model: joe-us-medium}
  aria:
    fast:
      engine: edge
      model: en-US-AriaNeural
      fallback: {engine: piper, model: joe-us-medium}
"""


def course(folder: Path, lexicon: str = "", shared: str | None = None, voice: str = "narrator") -> Path:
    if shared is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "lexicon.yaml").write_text(shared, encoding="utf-8")
    return write_manifest(folder, f"""\
course: demo
defaults: {{voice: {voice}}}
narrations:
  - id: a
    text: The VALL-E model clones a voice. VALL-E's samples are short.
  - id: b
    text: EnCodec turns audio into tokens, and encodecs are small.
  - id: c
    text: Nothing to respell here.
{lexicon}""", EDGE_VOICES)


def specs(path: Path) -> dict:
    return {spec.narration_id: spec for spec in plan(load_course(path))}


def test_an_entry_changes_the_spoken_text_and_key_of_exactly_the_clips_with_the_term(tmp_path):
    before = specs(course(tmp_path / "plain"))
    after = specs(course(tmp_path / "lex", "lexicon:\n  VALL-E: valley\n"))

    assert after["a"].text == "The valley model clones a voice. valley's samples are short."
    assert after["a"].content_key != before["a"].content_key
    assert [after[i].content_key for i in "bc"] == [before[i].content_key for i in "bc"]
    # The written form stays for captions; the gate expects to hear the respelling.
    assert after["a"].speech.written.startswith("The VALL-E model")
    assert after["a"].heard == after["a"].text


def test_changing_an_entry_rerenders_only_the_clips_that_contain_it(tmp_path):
    one = specs(course(tmp_path / "one", "lexicon:\n  VALL-E: valley\n  EnCodec: en codec\n"))
    two = specs(course(tmp_path / "two", "lexicon:\n  VALL-E: valley\n  EnCodec: encode ek\n"))

    assert [one[i].content_key == two[i].content_key for i in "abc"] == [True, False, True]


def test_matching_is_whole_word_and_case_aware_unless_asked(tmp_path):
    exact = specs(course(tmp_path / "exact", "lexicon:\n  EnCodec: en codec\n"))
    anycase = specs(course(tmp_path / "any", "lexicon:\n  EnCodec: {say: en codec, ignore_case: true}\n"))

    assert exact["b"].text == "en codec turns audio into tokens, and encodecs are small."
    # "encodecs" is another word: not matched even ignoring case.
    assert anycase["b"].text == exact["b"].text
    lower = specs(course(tmp_path / "lower", "lexicon:\n  encodecs: {say: en codecs, ignore_case: true}\n"))
    assert lower["b"].text == "EnCodec turns audio into tokens, and en codecs are small."


def test_a_shared_lexicon_beside_the_manifest_applies_and_the_course_overrides_it(tmp_path):
    shared = "VALL-E: valley\nEnCodec: en codec\n"
    path = course(tmp_path / "c", "lexicon:\n  EnCodec: encode ek\n", shared=shared)

    got = specs(path)

    assert got["a"].text.startswith("The valley model")
    assert got["b"].text.startswith("encode ek turns")


def test_ipa_goes_to_engines_that_take_phonemes_and_the_gate_hears_the_respelling(tmp_path):
    got = specs(course(tmp_path / "ipa", 'lexicon:\n  VALL-E: {ipa: "vˈæli", say: valley}\n'))

    assert got["a"].text == "The [[ vˈæli ]] model clones a voice. [[ vˈæli ]]'s samples are short."
    assert got["a"].heard == "The valley model clones a voice. valley's samples are short."


def test_an_engine_without_phonemes_gets_the_respelling_or_an_error_at_the_entry(tmp_path):
    with_say = specs(course(tmp_path / "say", 'lexicon:\n  VALL-E: {ipa: "vˈæli", say: valley}\n', voice="aria"))
    assert with_say["a"].text.startswith("The valley model")

    path = course(tmp_path / "ipa", 'lexicon:\n  VALL-E: {ipa: "vˈæli"}\n', voice="aria")
    with pytest.raises(ManifestError) as raised:
        load_course(path)
    assert str(raised.value) == (f"{path}:11: lexicon.VALL-E: voice 'aria' (engine edge) cannot take IPA "
                                 "phonemes; add `say:` with a respelling")


@pytest.mark.parametrize(("entry", "message"), [
    ("VALL-E: {}", "lexicon.VALL-E: give `say:` (a respelling), `ipa:` (phonemes) or both"),
    ('VALL-E: {ipa: "v<a>li"}', "lexicon.VALL-E.ipa: 'v<a>li' is not IPA phonemes (unexpected '<', '>')"),
    ("VALL-E: {say: valley, sound: x}", "lexicon.VALL-E.sound: unknown field 'sound'"),
    ('VALL-E: "[[x]]"', "lexicon.VALL-E.say: '[[x]]' must be words to read (letters), not markup"),
    ('"--": dash', "lexicon.--: term '--' has no letters or digits to match"),
])
def test_bad_entries_are_reported_with_their_line(tmp_path, entry, message):
    path = course(tmp_path, f"lexicon:\n  EnCodec: en codec\n  {entry}\n")
    with pytest.raises(ManifestError) as raised:
        load_course(path)
    assert any(str(p).startswith(f"{path}:12: {message}") for p in raised.value.problems), str(raised.value)


def test_a_bad_shared_lexicon_is_reported_with_its_own_file_and_line(tmp_path):
    path = course(tmp_path, shared="VALL-E: valley\nTacotron: {ipa: 't a 3'}\n")
    with pytest.raises(ManifestError) as raised:
        load_course(path)
    assert str(raised.value).startswith(f"{tmp_path / 'lexicon.yaml'}:2: Tacotron.ipa: 't a 3' is not IPA")


def test_the_respelling_changes_the_audio(tmp_path):
    from narro.engines import engine_for
    from narro.settings import Settings

    plain = specs(course(tmp_path / "plain"))["a"]
    respelled = specs(course(tmp_path / "lex", "lexicon:\n  VALL-E: valley\n"))["a"]
    engine = engine_for(plain.engine_voice, Settings())

    one, two = engine.synthesize(plain.text), engine.synthesize(respelled.text)

    assert len(one.samples) != len(two.samples) or not np.array_equal(one.samples, two.samples)


# --------------------------------------------------------------------------- narro lexicon check


def test_misheard_terms_are_counted_per_written_term_and_noise_is_left_out():
    from narro.errors import Problem
    from narro.lexicon import Lexicon, LexiconEntry, misheard_terms
    from narro.text import speech

    script = speech("The VALL-E model uses codebooks, and VALL-E's tokens come from EnCodec.").words()
    hearings = [("a", script, "the volley model uses code books and volleys tokens come and codec"),
                ("b", script, "the valley model uses codebooks and valleys tokens come from encodec")]
    lexicon = Lexicon((LexiconEntry("EnCodec", "en codec", None, False, Problem(Path("x"), 1, "EnCodec", "")),))

    terms = {term.term: term for term in misheard_terms(hearings, lexicon)}

    # "code books" is a compound split, and no entry is for "from": neither is a candidate.
    assert sorted(terms) == ["EnCodec", "VALL-E"]
    assert (terms["VALL-E"].misheard, terms["VALL-E"].spoken, terms["VALL-E"].clips) == (4, 4, ["a", "b"])
    assert terms["VALL-E"].heard_instead == {"volley": 1, "volleys": 1, "valley": 1, "valleys": 1}
    assert (terms["EnCodec"].misheard, terms["EnCodec"].spoken, terms["EnCodec"].heard_instead) == (1, 2, {"and codec": 1})
    assert terms["EnCodec"].in_lexicon and not terms["VALL-E"].in_lexicon


def test_lexicon_check_lists_the_term_misheard_in_the_last_render(tmp_path):
    import json

    from click.testing import CliRunner

    from narro import clip
    from narro.catalogue import Catalogue
    from narro.cli import main
    from narro.plan import RunContext
    from narro.settings import Settings
    from narro.store import LocalStore

    path = write_manifest(tmp_path / "course", """\
course: check
narrations:
  - id: names
    text: Our newest voice model is called Zqorvix, and it reads every lesson of the course aloud for you.
    qa: {max_takes: 1, max_wer: 0.9}
""", EDGE_VOICES)
    spec = plan(load_course(path))[0]
    url = f"sqlite:///{tmp_path / 'clips.db'}"
    catalogue = Catalogue(url)
    catalogue.start_run("run-1", spec.course)
    catalogue.register(spec.course, spec.narration_id, title=spec.title, voice=spec.voice, tier=spec.tier,
                       content_key=spec.content_key)
    clip.render_clip(spec, RunContext("run-1", str(path), "0" * 64), LocalStore(tmp_path / "store"), catalogue,
                     Settings())

    shown = CliRunner().invoke(main, ["lexicon", "check", str(path), "--catalogue", url])
    assert shown.exit_code == 0, shown.output
    assert "check: " in shown.output and "(1 clip, 1 take heard)" in shown.output
    line = next(line for line in shown.output.splitlines() if line.strip().startswith("Zqorvix"))
    assert "misheard 1 of 1" in line and line.rstrip().endswith("in names")
    as_json = json.loads(CliRunner().invoke(main, ["lexicon", "check", "check", "--catalogue", url, "--json"]).output)
    # By slug, terms are shown as the gate compared them.
    assert as_json["takes"] == 1 and "Zqorvix" in [term["term"] for term in as_json["terms"]]
    missing = CliRunner().invoke(main, ["lexicon", "check", "nope", "--catalogue", url])
    assert missing.exit_code == 2 and "no course 'nope'" in missing.output
