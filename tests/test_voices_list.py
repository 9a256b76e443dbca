"""`narro voices`: a course's narro voices (engine, model, options, fallback, consent) and the engines' own, apart."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from narro.cli import main
from narro.engines import edge
from tests.conftest import write_manifest
from tests.edge_emulator import EdgeEmulator

VOICES = """default: narrator
voices:
  narrator:
    fast: {engine: piper, model: joe-us-medium, length_scale: 1.1}
  aria:
    fast:
      engine: edge
      model: en-US-AriaNeural
      rate: "-10%"
      fallback: {engine: piper, model: joe-us-medium}
  ada:
    quality: {engine: codec-lm, model: ckpt, reference: refs/ada.wav, reference_text: "Hello [there]."}
  bob:
    quality: {engine: codec-lm, model: ckpt, reference: refs/bob.wav, reference_text: Hello there.}
"""
COURSE = """course: voices-list
title: Voices list
narrations:
  - {id: n1, text: One line., voice: narrator}
  - {id: n2, text: Two lines., voice: narrator}
  - {id: n3, text: Three lines., voice: aria}
  - {id: n4, text: Four lines., voice: ada, tier: quality}
"""


def consent_record(name: str, reference: Path, revoked: str = "") -> str:
    digest = hashlib.sha256(reference.read_bytes()).hexdigest()
    return (f"  {name}:\n    id: consent-test-{name}\n    speaker: {name.title()} Example\n    collected_by: narro tests\n"
            f"    collected_at: 2026-01-01\n    scope: [course:voices-list]\n    expires: 2099-12-31\n"
            f"    references: ['{digest}']\n    document_sha256: '{'0' * 64}'\n{revoked}")


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A course beside a voices.yaml with a piper, an edge and two cloned voices, one of them revoked."""
    manifest = write_manifest(tmp_path / "course", COURSE, VOICES)
    folder = manifest.parent
    (folder / "ckpt").mkdir()
    (folder / "ckpt" / "config.json").write_text("{}")  # the listing hashes a checkpoint, it never loads one
    (folder / "ckpt" / "model.safetensors").write_bytes(b"weights")
    (folder / "refs").mkdir()
    for name in ("ada", "bob"):
        (folder / "refs" / f"{name}.wav").write_bytes(f"a recording of {name}".encode())
    revoked = "    revoked: {at: 2026-06-01T09:30:00Z, reason: withdrawn by the speaker}\n"
    (folder / "consent.yaml").write_text("consent:\n" + consent_record("ada", folder / "refs" / "ada.wav")
                                         + consent_record("bob", folder / "refs" / "bob.wav", revoked))
    return manifest


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[EdgeEmulator]:
    """The edge voice list from the local emulator; a terminal wide enough that no table cell wraps."""
    monkeypatch.setenv("COLUMNS", "250")
    edge.reset_unreachable()
    with EdgeEmulator(voice="tones") as emulator:
        monkeypatch.setenv("NARRO_EDGE_VOICES_URL", emulator.voices_url)
        yield emulator
    edge.reset_unreachable()


def rows(output: str) -> dict[str, list[str]]:
    """Table rows by their first cell ('voice/tier' in the narro voices table), cells stripped."""
    found = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) > 2:
            found[f"{cells[0]}/{cells[1]}"] = cells
    return found


def test_lists_the_courses_voices_with_engine_fallback_consent_and_use_then_the_engines_apart(
        course: Path, service: EdgeEmulator):
    result = CliRunner().invoke(main, ["voices", "--manifest", str(course)])
    assert result.exit_code == 0, result.output
    narro_part, _, engines_part = result.output.partition("engine voices")
    assert f"narro voices in {course.parent / 'voices.yaml'} (default: narrator" in narro_part
    found = rows(narro_part)
    assert found["narrator/fast"][2:] == ["piper", "joe-us-medium", "length_scale 1.1", "-", "-", "2"]
    assert found["aria/fast"][2:] == ["edge", "en-US-AriaNeural", "rate -10%", "piper:joe-us-medium", "-", "1"]
    assert found["ada/quality"][2:4] == ["codec-lm", "ckpt"]  # the model as written, not resolved to a full path
    assert found["ada/quality"][4] == "reference refs/ada.wav, reference_text Hello [there]."  # brackets: not markup
    assert found["ada/quality"][-2:] == ["consent-test-ada, until 2099-12-31", "1"]
    assert found["bob/quality"][-2:] == ["refused (revoked)", "0"]
    assert "consent refused for voice 'bob' (rule: revoked): consent consent-test-bob was revoked on 2026-06-01: " \
           "withdrawn by the speaker" in narro_part
    assert "en-GB-SoniaNeural" in engines_part and "en-GB-SoniaNeural" not in narro_part
    assert "joe-us-medium" in rows(engines_part)["piper/joe-us-medium"]


def test_a_voices_file_lists_without_a_course_so_no_scope_and_no_use(course: Path, service: EdgeEmulator):
    (course.parent / "consent.yaml").write_text((course.parent / "consent.yaml").read_text()
                                                .replace("course:voices-list", "course:another-course"))
    result = CliRunner().invoke(main, ["voices", "--voices", str(course.parent / "voices.yaml")])
    assert result.exit_code == 0, result.output
    found = rows(result.output.partition("engine voices")[0])
    assert found["ada/quality"][-1] == "consent-test-ada, until 2099-12-31"  # its scope needs a course to check
    assert "used by" not in result.output
    # With the course, the same record does not cover it.
    result = CliRunner().invoke(main, ["voices", "--manifest", str(course)])
    assert result.exit_code == 0, result.output
    assert rows(result.output)["ada/quality"][-2] == "refused (scope)"
    assert "course 'voices-list' is not in the scope of consent consent-test-ada" in result.output


@pytest.mark.parametrize("option", ["--voices", "--manifest"])
def test_a_broken_voices_yaml_is_reported_at_its_lines_with_exit_2(course: Path, service: EdgeEmulator, option: str):
    voices = course.parent / "voices.yaml"
    voices.write_text(VOICES.replace("length_scale: 1.1", "length_scal: 1.1").replace('rate: "-10%"', 'rate: fast'))
    target = voices if option == "--voices" else course
    result = CliRunner().invoke(main, ["voices", option, str(target)])
    assert result.exit_code == 2
    assert f"{voices}:4: voices.narrator.fast.length_scal: unknown field 'length_scal'; did you mean 'length_scale'?" \
           in result.stderr
    assert f"{voices}:9: voices.aria.fast.rate:" in result.stderr and "'fast' is not like '+10%'" in result.stderr
    assert "engine voices" not in result.stdout  # nothing listed from a registry that does not load


def test_a_model_that_cannot_be_found_is_reported_at_its_line_even_for_a_voice_no_course_uses(
        course: Path, service: EdgeEmulator):
    voices = course.parent / "voices.yaml"
    voices.write_text(VOICES.replace("fallback: {engine: piper, model: joe-us-medium}",
                                     "fallback: {engine: piper, model: joe-us-medum}"))
    result = CliRunner().invoke(main, ["voices", "--voices", str(voices)])
    assert result.exit_code == 2
    assert (f"{voices}:10: voices.aria.fast.fallback.model: piper voice 'joe-us-medum' is neither a bundled voice nor "
            "a model file; did you mean 'joe-us-medium'?") in result.stderr
    assert "joe-us-medum" in rows(result.stdout)["aria/fast"][-2]  # listed as written, then reported


def test_manifest_and_voices_together_are_refused(course: Path):
    result = CliRunner().invoke(main, ["voices", "--manifest", str(course), "--voices", str(course.parent / "voices.yaml")])
    assert result.exit_code == 2 and "not both" in result.stderr


@pytest.mark.parametrize("path, says", [("/no/such/list?x=1", "answered 404 Not Found"),
                                        ("https", "cannot connect to 127.0.0.1:")])
def test_an_engine_list_that_fails_is_one_line_without_the_clients_internals(
        service: EdgeEmulator, monkeypatch: pytest.MonkeyPatch, path: str, says: str):
    url = (service.voices_url.replace("http://", "https://") if path == "https"
           else f"http://127.0.0.1:{service.port}{path}")
    monkeypatch.setenv("NARRO_EDGE_VOICES_URL", url)
    result = CliRunner().invoke(main, ["voices"])
    assert result.exit_code == 0 and "joe-us-medium" in result.output
    notes = [line for line in result.output.splitlines() if line.startswith("edge:")]
    assert len(notes) == 1 and says in notes[0], result.output
    for internal in ("object at 0x", "ssl:", "Sec-MS-GEC", "url=", "<"):  # an SSLContext, the client's tokens
        assert internal not in notes[0]
