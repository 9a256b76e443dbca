"""Manifests: every bad input becomes located ManifestError problems; `narro validate` prints them.

In the bad manifests below, `# <-` marks the line the problem must be reported on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from narro.cli import main
from narro.errors import ManifestError, Problem
from narro.manifest import MAX_TEXT_CHARS, load_course

MARK = "# <-"
LATIN1 = "course: demo\nnarrations:\n  - id: intro\n    text: Un café, s'il vous plaît.  # <-\n".encode("latin-1")


def write_course(folder: Path, body: str | bytes, files: dict[str, str | bytes | None] | None = None) -> Path:
    """course.yaml in `folder` ({tmp} in the body is the folder), plus files (None makes a directory)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            target.mkdir()
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    path = folder / "course.yaml"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body.replace("{tmp}", str(folder)), encoding="utf-8")
    return path


def marked_line(body: str | bytes) -> int:
    lines = body.decode("latin-1") if isinstance(body, bytes) else body
    return next((n for n, line in enumerate(lines.splitlines(), 1) if MARK in line), 1)


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ManifestError) as caught:
        load_course(path)
    return caught.value.problems


def narration(fields: str) -> str:
    """A one-narration manifest; `fields` are the narration's lines after `- id: intro`."""
    return "course: demo\nnarrations:\n  - id: intro\n" + fields


# (manifest body, extra files, field, words the message must contain)
BAD = {
    "yaml-syntax": ("course: demo\nnarrations:\n  - id: intro\n    text: Hello.\n   title: misaligned  # <-\n",
                    None, "manifest", "YAML syntax error"),
    "unclosed-bracket": ("course: demo\nnarrations:\n  - id: intro\n    text: [Hello\n  - id: next  # <-\n",
                         None, "manifest", "flow sequence on line 4"),
    "tab-indent": ("course: demo\nnarrations:\n\t- id: intro  # <-\n", None, "manifest", "'\\t'"),
    "top-level-list": ("- course: demo  # <-\n  narrations: []\n", None, "(document)", "expected a mapping"),
    "empty-file": ("", None, "(document)", "empty"),
    "comments-only": ("# to do: write the course\n", None, "(document)", "empty"),
    "missing-course": ("title: Speech  # <-\nnarrations:\n  - id: intro\n    text: Hello.\n",
                       None, "course", "required field is missing"),
    "bad-course-slug": ("course: Intro Speech  # <-\nnarrations:\n  - id: intro\n    text: Hello.\n",
                        None, "course", "is not a slug"),
    "missing-id": ("course: demo\nnarrations:\n  - title: Welcome  # <-\n    text: Hello.\n",
                   None, "narrations[0].id", "required field is missing"),
    "bad-id-slug": (narration("    text: Hi.\n  - id: Part_2  # <-\n    text: Hi.\n"),
                    None, "narrations[1].id", "is not a slug"),
    "duplicate-id": (narration("    text: Hello.\n  - id: middle\n    text: Hi.\n  - id: intro  # <-\n    text: Bye.\n"),
                     None, "narrations[2].id", "duplicate id 'intro' (first used at narrations[0], line 3)"),
    "duplicate-key": (narration("    text: Hello.\n    text: Hello again.  # <-\n"),
                      None, "narrations[0].text", "key appears twice"),
    "duplicate-top-key": ("course: demo\ncourse: other  # <-\nnarrations:\n  - id: intro\n    text: Hi.\n",
                          None, "course", "key appears twice"),
    "typo-txt": (narration("    txt: Hello.  # <-\n"), None, "narrations[0].txt", "did you mean 'text'?"),
    "typo-in-defaults": ("course: demo\ndefaults: {voise: narrator}  # <-\nnarrations:\n  - id: intro\n    text: Hi.\n",
                         None, "defaults.voise", "did you mean 'voice'?"),
    "text-and-script": ("course: demo\nnarrations:\n  - id: intro  # <-\n    text: Hello.\n    script: intro.md\n",
                        {"intro.md": "Hello."}, "narrations[0]", "exactly one of 'text' and 'script'"),
    "neither-text-nor-script": ("course: demo\nnarrations:\n  - id: intro  # <-\n    title: Welcome\n",
                                None, "narrations[0]", "exactly one of 'text' and 'script'"),
    "empty-text": (narration('    text: ""  # <-\n'), None, "narrations[0].text", "nothing to speak"),
    "whitespace-text": (narration('    text: " \\t\\n  "  # <-\n'), None, "narrations[0].text", "nothing to speak"),
    "punctuation-only-text": (narration("    text: '...'  # <-\n"), None, "narrations[0].text", "nothing to speak"),
    "empty-script-path": (narration("    script: ''  # <-\n"), None, "narrations[0].script", "is empty"),
    "script-missing": (narration("    script: scripts/intro.md  # <-\n"),
                       None, "narrations[0].script", "'scripts/intro.md' does not exist"),
    "script-escapes-folder": (narration("    script: ../secret.md  # <-\n"),
                              {"../secret.md": "Secret."}, "narrations[0].script", "outside the manifest's folder"),
    "script-absolute-path": (narration("    script: {tmp}/intro.md  # <-\n"),
                             {"intro.md": "Hello."}, "narrations[0].script", "outside the manifest's folder"),
    "script-is-directory": (narration("    script: scripts  # <-\n"),
                            {"scripts": None}, "narrations[0].script", "'scripts' is a directory"),
    "script-latin1": (narration("    script: intro.md  # <-\n"), {"intro.md": "Hello.\nCafé.\n".encode("latin-1")},
                      "narrations[0].script", "not valid UTF-8 (byte 0xe9); save the file as UTF-8"),
    "manifest-latin1": (LATIN1, None, "manifest", "not valid UTF-8 (byte 0xe9)"),
    "script-too-long": (narration("    script: intro.md  # <-\n"), {"intro.md": "A long lesson. " * 13_654},
                        "narrations[0].script", f"the limit is {MAX_TEXT_CHARS:,}: split it into several narrations"),
    "text-escaped-bel": (narration('    text: "Ding\\a dong\\0."  # <-\n'),
                         None, "narrations[0].text", "control characters U+0000, U+0007"),
    "text-raw-bel": (narration("    text: Ding\x07 dong.  # <-\n"), None, "manifest", "control character U+0007"),
    "text-raw-nul": (narration("    text: Ding\x00 dong.  # <-\n"), None, "manifest", "control character U+0000"),
    "script-raw-bel": (narration("    script: intro.md  # <-\n"), {"intro.md": "Ding\x07 dong."},
                       "narrations[0].script", "control characters U+0007"),
    "unknown-voice": (narration("    text: Hello.\n    voice: morgan  # <-\n"),
                      None, "narrations[0].voice", "unknown voice 'morgan'; the built-in voice registry defines: narrator"),
    "unknown-default-voice": ("course: demo\ndefaults:\n  voice: morgan  # <-\nnarrations:\n  - id: intro\n    text: Hi.\n",
                              None, "defaults.voice", "unknown voice 'morgan'"),
    "unknown-tier": (narration("    text: Hello.\n    tier: slow  # <-\n"),
                     None, "narrations[0].tier", "'fast' or 'quality'"),
    "voice-without-quality-tier": (narration("    text: Hello.\n    tier: quality  # <-\n"),
                                   None, "narrations[0].tier", "voice 'narrator' has no quality-tier engine"),
    "no-narrations": ("course: demo\nnarrations: []  # <-\n", None, "narrations", "list at least one entry"),
    "narrations-not-a-list": ("course: demo\nnarrations:  # <-\n  id: intro\n", None, "narrations", "valid list"),
}


@pytest.mark.parametrize(("body", "files", "field", "message"), BAD.values(), ids=BAD.keys())
def test_bad_manifest_raises_one_located_problem(tmp_path, body, files, field, message):
    path = write_course(tmp_path / "course", body, files)

    [problem] = problems_of(path)

    assert (problem.file, problem.line, problem.field) == (path, marked_line(body), field)
    assert message in problem.message


@pytest.mark.parametrize(("body", "files", "field", "message"), BAD.values(), ids=BAD.keys())
def test_validate_prints_file_line_field_message_and_exits_2(tmp_path, body, files, field, message):
    path = write_course(tmp_path / "course", body, files)

    result = CliRunner().invoke(main, ["validate", str(path)])

    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    first, summary = result.stderr.splitlines()
    assert first.startswith(f"{path}:{marked_line(body)}: {field}: ")
    assert message in first
    assert summary == "1 problem found."
    assert "Traceback" not in result.output


def test_script_problem_names_the_script_and_its_line(tmp_path):
    path = write_course(tmp_path, narration("    script: intro.md\n"), {"intro.md": "Hello.\n\nCafé.\n".encode("latin-1")})

    [problem] = problems_of(path)

    assert f"({tmp_path / 'intro.md'}:3)" in problem.message


def test_unknown_engine_in_voices_yaml_is_located_there(tmp_path):
    voices = "default: narrator\nvoices:\n  narrator:\n    fast:\n      engine: espeak\n      model: en\n"
    path = write_course(tmp_path, narration("    text: Hello.\n"), {"voices.yaml": voices})

    [problem] = problems_of(path)

    assert (problem.file, problem.line, problem.field) == (tmp_path / "voices.yaml", 5, "voices.narrator.fast.engine")
    assert problem.message.startswith("unknown engine 'espeak'; known: ") and "piper" in problem.message


def test_typo_inside_a_named_voice_suggests_the_field(tmp_path):
    voices = "voices:\n  narrator:\n    fast:\n      engine: piper\n      modle: joe-us-medium\n"
    path = write_course(tmp_path, narration("    text: Hello.\n"), {"voices.yaml": voices})

    messages = {(p.line, p.field): p.message for p in problems_of(path)}

    assert messages[(5, "voices.narrator.fast.modle")] == "unknown field 'modle'; did you mean 'model'?"
    assert messages[(3, "voices.narrator.fast.model")] == "required field is missing"


def test_every_problem_is_reported_in_file_order(tmp_path):
    body = (
        "course: demo\n"
        "narrations:\n"
        "  - id: intro\n"
        "    txt: Hello.\n"  # 4: schema problem
        "  - id: tools\n"
        "    text: Hello.\n"
        "    voice: morgan\n"  # 7: unknown voice
        "  - id: outro\n"  # 8: neither text nor script
        "  - id: extra\n"
        "    script: ../notes.md\n"  # 10: outside the folder
        "  - id: tools\n"  # 11: duplicate
        "    text: ''\n"  # 12: empty
    )
    path = write_course(tmp_path / "course", body)

    located = [(p.line, p.field) for p in problems_of(path)]

    assert located == [
        (4, "narrations[0].txt"),
        (7, "narrations[1].voice"),
        (8, "narrations[2]"),
        (10, "narrations[3].script"),
        (11, "narrations[4].id"),
        (12, "narrations[4].text"),
    ]
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == len(located) + 1
    assert result.stderr.splitlines()[-1] == f"{len(located)} problems found."


def test_a_bad_default_is_reported_once_not_once_per_narration(tmp_path):
    body = "course: demo\ndefaults: {tier: quality}\nnarrations:\n" + "".join(
        f"  - id: part-{n}\n    text: Part {n}.\n" for n in range(3)
    )

    problems = problems_of(write_course(tmp_path, body))

    assert [(p.line, p.field) for p in problems] == [(2, "defaults.tier")]


def test_validate_reports_every_file_and_exits_2_if_any_is_bad(tmp_path):
    good = write_course(tmp_path / "good", narration("    text: Hello.\n"))
    bad = write_course(tmp_path / "bad", narration("    txt: Hello.\n"))

    result = CliRunner().invoke(main, ["validate", str(good), str(bad)])

    assert result.exit_code == 2
    assert f"{good}: ok: course demo" in " ".join(result.stdout.split())  # rich wraps long lines
    assert result.stderr.startswith(f"{bad}:4: narrations[0].txt: unknown field 'txt'")


def test_validate_missing_file_exits_2_without_traceback(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])

    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"{tmp_path / 'nope.yaml'}: manifest: file not found"


VALID = """\
course: intro-speech
title: Speech synthesis
narrations:
  - id: welcome
    title: Welcome
    script: scripts/welcome.md
  - id: codecs
    text: "Codecs  compress\\n   audio."
  - id: close
    text: Thanks for listening.
    tier: fast
"""
WELCOME_MD = """\
# Welcome

This is **module 11**. See [the notes](https://example.org/notes).

![diagram](codec.png)

```python
print("not spoken")
```
<!-- reviewer: shorten this -->
"""


def test_valid_manifest_resolves_defaults_scripts_and_order(tmp_path):
    path = write_course(tmp_path, VALID, {"scripts/welcome.md": WELCOME_MD})

    course = load_course(path)

    assert (course.slug, course.title, course.manifest_path) == ("intro-speech", "Speech synthesis", path)
    assert [n.id for n in course.narrations] == ["welcome", "codecs", "close"]
    assert {(n.voice, n.tier) for n in course.narrations} == {("narrator", "fast")}
    assert [n.text for n in course.narrations] == [
        "Welcome. This is module 11. See the notes. diagram.",  # an image's alt text is spoken
        "Codecs compress audio.",
        "Thanks for listening.",
    ]
    assert [(n.line, n.source) for n in course.narrations] == [(4, "scripts/welcome.md"), (7, "inline"), (9, "inline")]
    assert course.narration("codecs").title == ""
    assert len(course.manifest_sha256) == 64


def test_defaults_and_overrides_come_from_voices_yaml(tmp_path):
    voices = (
        "default: warm\n"
        "voices:\n"
        "  warm: {fast: {engine: piper, model: joe-us-medium}}\n"
        "  slow: {fast: {engine: piper, model: joe-us-medium, length_scale: 1.3}}\n"
    )
    body = "course: demo\nnarrations:\n  - id: one\n    text: One.\n  - id: two\n    text: Two.\n    voice: slow\n"

    course = load_course(write_course(tmp_path, body, {"voices.yaml": voices}))

    assert [n.voice for n in course.narrations] == ["warm", "slow"]
    assert course.voices.resolve("slow", "fast").length_scale == 1.3


def test_validate_accepts_a_valid_manifest(tmp_path):
    path = write_course(tmp_path, VALID, {"scripts/welcome.md": WELCOME_MD})

    result = CliRunner().invoke(main, ["validate", str(path)])

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "ok: course intro-speech, 3 narrations" in " ".join(result.stdout.split())


def test_the_example_course_is_valid():
    example = Path(__file__).resolve().parent.parent / "manifests" / "example-course.yaml"

    course = load_course(example)

    assert len(course.narrations) == 11
    assert all(n.text and "#" not in n.text and "**" not in n.text for n in course.narrations)
