"""Review verdicts (held per published key) and lexicon entries added from a flag, on real files and a real catalogue."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from narro.catalogue import APPROVED, FLAGGED, Catalogue
from narro.errors import ManifestError
from narro.lexicon_edit import add_lexicon_entry, entry_value
from narro.manifest import load_course
from narro.plan import plan
from narro.review import REVIEW_AGAIN, UNREVIEWED, ReviewError, check_verdict, describe, standing
from tests.conftest import write_manifest

VOICES = """\
default: narrator
voices:
  narrator:
    fast: {engine: piper, model: joe-us-medium}
  aria:
    fast: {engine: edge, model: en-US-AriaNeural}
"""

NARRATIONS = """\
course: demo
narrations:
  - id: a
    text: The VALL-E model clones a voice. VALL-E's samples are short.
  - id: b
    voice: aria
    text: Nothing to respell here.
  - id: c
    text: Compare VALL-E with EnCodec.
"""


def keys(path: Path) -> dict[str, str]:
    return {spec.narration_id: spec.content_key for spec in plan(load_course(path))}


def test_a_verdict_holds_for_the_audio_it_was_given_on(tmp_path: Path):
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    catalogue.register("demo", "a", title="", voice="narrator", tier="fast", content_key="k1")
    assert standing(catalogue.verdict("demo", "a"), "k1") == UNREVIEWED
    catalogue.record_verdict("demo", "a", content_key="k1", verdict=FLAGGED, note="says 'Volley' for VALL-E")
    flagged = catalogue.verdict("demo", "a")
    assert standing(flagged, "k1") == FLAGGED and describe(flagged, "k1") == "flagged: says 'Volley' for VALL-E"
    # New audio: the flag no longer holds, and says what it was.
    assert standing(flagged, "k2") == REVIEW_AGAIN
    assert describe(flagged, "k2") == "review again (audio changed; was flagged: says 'Volley' for VALL-E)"
    catalogue.record_verdict("demo", "a", content_key="k2", verdict=APPROVED)
    assert standing(catalogue.verdict("demo", "a"), "k2") == APPROVED
    lines = {line.narration_id: line for line in catalogue.clip_lines("demo")}
    assert lines["a"].verdict is not None and lines["a"].verdict.content_key == "k2"


def test_check_verdict_refuses_what_cannot_be_recorded():
    assert check_verdict(FLAGGED, "  says  'Volley' ", "k1", "k1") == "says 'Volley'"
    with pytest.raises(ReviewError, match="say what is wrong"):
        check_verdict(FLAGGED, "  ", "k1", "k1")
    with pytest.raises(ReviewError, match="changed since this page was loaded"):
        check_verdict(APPROVED, "", "k1", "k2")
    with pytest.raises(ReviewError, match="nothing is published"):
        check_verdict(APPROVED, "", None, None)
    with pytest.raises(ReviewError, match="unknown verdict"):
        check_verdict("maybe", "", "k1", "k1")


def test_an_entry_goes_to_lexicon_yaml_and_changes_exactly_the_clips_with_the_term(tmp_path: Path):
    manifest = write_manifest(tmp_path, NARRATIONS, VOICES)
    before = keys(manifest)
    added = add_lexicon_entry(manifest, "VALL-E", entry_value("valley", "", False))
    assert added.file == tmp_path / "lexicon.yaml" and added.clips == ("a", "c")
    assert added.file.read_text().splitlines()[added.line - 1] == "VALL-E: valley"
    after = keys(manifest)
    assert [i for i in before if before[i] != after[i]] == ["a", "c"]
    second = add_lexicon_entry(manifest, "EnCodec", entry_value("en codec", "", True))
    assert second.line == added.line + 1 and second.clips == ("c",)
    assert "EnCodec: {say: en codec, ignore_case: true}" in second.file.read_text()


def test_an_entry_goes_under_the_manifests_own_lexicon_block(tmp_path: Path):
    manifest = write_manifest(tmp_path, NARRATIONS + "lexicon:\n    Tacotron: {say: tack oh tron}\n# end\n", VOICES)
    added = add_lexicon_entry(manifest, "VALL-E", "valley")
    assert added.file == manifest and not (tmp_path / "lexicon.yaml").exists()
    assert manifest.read_text().splitlines()[added.line - 1] == "    VALL-E: valley"
    assert {e.term for e in load_course(manifest).lexicon.entries} == {"Tacotron", "VALL-E"}


def test_a_bad_entry_names_file_line_field_and_leaves_the_file_untouched(tmp_path: Path):
    manifest = write_manifest(tmp_path, NARRATIONS, VOICES)
    shared = tmp_path / "lexicon.yaml"
    shared.write_text("# shared\nEnCodec: en codec\n")
    before = shared.read_bytes(), shared.stat().st_mtime_ns
    with pytest.raises(ManifestError) as bad_ipa:
        add_lexicon_entry(manifest, "VALL-E", entry_value("", "v@l!", False))
    assert f"{shared}:3: VALL-E.ipa:" in str(bad_ipa.value) and "not IPA phonemes" in str(bad_ipa.value)
    with pytest.raises(ManifestError, match="already has an entry at line 2"):
        add_lexicon_entry(manifest, "EnCodec", "encode ack")
    with pytest.raises(ManifestError, match="has no letters or digits"):
        add_lexicon_entry(manifest, "--", "dash")
    # IPA only, but clip b's edge voice takes text only: refused at the entry's line.
    with pytest.raises(ManifestError, match="cannot take IPA phonemes"):
        add_lexicon_entry(manifest, "here", entry_value("", "hɪɹ", False))
    assert (shared.read_bytes(), shared.stat().st_mtime_ns) == before


def test_the_manifests_own_entry_wins_so_the_shared_file_is_refused(tmp_path: Path):
    manifest = write_manifest(tmp_path, NARRATIONS + "lexicon: {VALL-E: valley}\n", VOICES)
    with pytest.raises(ManifestError, match="manifest's own entry for 'VALL-E' wins"):
        add_lexicon_entry(manifest, "VALL-E", "val ee")
    assert not (tmp_path / "lexicon.yaml").exists()


def test_the_course_report_exports_each_verdict(tmp_path: Path):
    from narro.report import course_report
    from narro.settings import QaSettings
    from narro.store import open_store

    manifest = write_manifest(tmp_path / "course", NARRATIONS, VOICES)
    specs = plan(load_course(manifest))
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    for spec in specs:
        catalogue.register("demo", spec.narration_id, title="", voice="narrator", tier="fast", content_key=spec.content_key)
        catalogue.mark_rendered("demo", spec.narration_id, content_key=spec.content_key, engine="piper", duration_s=3.0,
                                loudness_lufs=-16.0, true_peak_dbtp=-1.5, run_id="r1")
    catalogue.record_verdict("demo", "a", content_key=specs[0].content_key, verdict=FLAGGED, note="says 'Volley'")
    catalogue.record_verdict("demo", "b", content_key="an older take", verdict=APPROVED)
    html = course_report(specs, catalogue.results("demo"), open_store(str(tmp_path / "store")), QaSettings())
    rows = dict(re.findall(r"<tr><td>\d+</td><td>([a-z])</td>.*?<td class=\"note[^\"]*\">([^<]*)</td></tr>", html))
    assert rows == {"a": "flagged: says &#x27;Volley&#x27;", "b": "review again (audio changed; was approved)", "c": ""}
    assert "3 clips, 0 failed, 1 flagged by a reviewer." in html
