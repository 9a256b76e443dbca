"""Script text to speakable text: concrete inputs, concrete outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from narro.text import control_characters, normalise, strip_markdown, word_count


def speak(markdown: str) -> str:
    """What load_course does to a script file."""
    return normalise(strip_markdown(markdown))


@pytest.mark.parametrize(
    ("markdown", "spoken"),
    [
        ("# Welcome\n\nToday we start.", "Welcome. Today we start."),
        ("## Part two ##\nMore text", "Part two. More text."),
        ("We begin here\n\n### Codecs\n\nText", "We begin here. Codecs. Text."),
        ("Setext title\n============\n\nBody", "Setext title. Body."),
        ("Read [the guide](https://example.org/guide) first.", "Read the guide first."),
        ("See [the spec][spec].\n\n[spec]: https://example.org/spec", "See the spec."),
        ("![Waveform of one word](figures/wave.png)\n\nThe wave rises.", "Waveform of one word. The wave rises."),
        ("Run this.\n\n```bash\nnarro render course.yaml\n```\n\nThen wait.", "Run this. Then wait."),
        ("Run this.\n~~~\nprint('hi')\n~~~\nThen wait.", "Run this. Then wait."),
        ("Keep this.<!-- TODO: cut -->\n\n<!--\nreviewer notes\n-->\nAnd this.", "Keep this. And this."),
        ("This is *very* **important**, ~~not~~ _quite_ __done__ ***yet***.",
         "This is very important, not quite done yet."),
        ("Call load_course_file and __init__ now.", "Call load_course_file and init now."),
        ("Run `narro validate` first.", "Run narro validate first."),
        ("You need\n\n- a manifest\n* a voice\n+ a store\n1. render\n2) listen",
         "You need. a manifest. a voice. a store. render. listen."),
        ("Steps\n- measure\n- apply gain", "Steps. measure. apply gain."),
        ("- Is it loud?\n- Yes!\n- Fine, then:", "Is it loud? Yes! Fine, then:"),
        ("> Speak clearly.\n> Slowly.", "Speak clearly. Slowly."),
        ("| Tier | Speed |\n|------|:-----:|\n| fast | quick |", "Tier Speed. fast quick."),
        ("Press <kbd>Enter</kbd> now<br/>", "Press Enter now."),
        ("A caption\n\nNext sentence.", "A caption. Next sentence."),
    ],
)
def test_markdown_is_reduced_to_spoken_sentences(markdown, spoken):
    assert speak(markdown) == spoken


def test_headings_and_list_items_are_paragraphs_of_their_own():
    assert strip_markdown("Intro\n# Title\n- one\n- two") == "Intro.\n\nTitle.\n\none.\n\ntwo."


def test_windows_line_endings_read_like_unix_ones():
    markdown = "Title\n=====\n\nIntro\n\n# Head\n\n- a\n- b\n> quote\n"

    assert strip_markdown(markdown.replace("\n", "\r\n")) == strip_markdown(markdown)


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("e.g. codecs", "for example, codecs"),
        ("E.g., codecs", "for example, codecs"),
        ("i.e. tokens", "that is, tokens"),
        ("codecs, tokens, etc. and more", "codecs, tokens, et cetera and more"),
        ("and so on, etc.", "and so on, et cetera."),
        ("speed vs. quality, speed vs quality", "speed versus quality, speed versus quality"),
        ("approx. 75 frames", "approximately 75 frames"),
        ("Dr. Smith and Prof. Jones", "Doctor Smith and Professor Jones"),
        ("ask the dr. later", "ask the dr. later"),
    ],
)
def test_abbreviations_are_spelled_out(text, spoken):
    assert normalise(text) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("24 kHz or 24kHz", "24 kilohertz or 24 kilohertz"),
        ("440 Hz", "440 hertz"),
        ("96 kbps, 10 Mbps", "96 kilobits per second, 10 megabits per second"),
        ("300 ms, 5 s, 5s", "300 milliseconds, 5 seconds, 5 seconds"),
        ("3 dB at -16 LUFS", "3 decibels at -16 LUFS"),
        ("2 GB, 1.5 MB, 8 KB", "2 gigabytes, 1.5 megabytes, 8 kilobytes"),
        ("50% and 3.5 %", "50 percent and 3.5 percent"),
        ("5 sheep, kHz, v2.0 kHz", "5 sheep, kHz, v2.0 kHz"),
    ],
)
def test_units_after_numbers_are_spelled_out(text, spoken):
    assert normalise(text) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("rock & roll", "rock and roll"),
        ("text -> speech, text → speech", "text to speech, text to speech"),
        ("~75 frames, ≈ 3 dB", "about 75 frames, about 3 decibels"),
        ("1920x1080 and 3 × 4", "1920 by 1080 and 3 by 4"),
        ("10-20 minutes, 10–20 minutes", "10 to 20 minutes, 10 to 20 minutes"),
        ("fast — and cheap, fast—cheap", "fast, and cheap, fast, cheap"),
        ("5 MB/s", "5 megabytes per second"),
        ("read/write", "read or write"),
        ("1,250 hours, 12,345,678 frames, 1,5 left", "1250 hours, 12345678 frames, 1,5 left"),
        ("Visit https://example.org/docs. Then go.", "Visit. Then go."),
    ],
)
def test_symbols_are_spoken(text, spoken):
    assert normalise(text) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("  Hello \n\n  world\t!  ", "Hello world!"),
        ("a , b ; c .", "a, b; c."),
        ("Wait,, what;; ok::", "Wait, what; ok:"),
        ("\u201cQuoted\u201d and \u2018single\u2019, it\u2019s\u2026", "\"Quoted\" and 'single', it's..."),
        ("no\u00a0break", "no break"),
    ],
)
def test_whitespace_and_quotes_settle(text, spoken):
    assert normalise(text) == spoken


def test_composed_and_decomposed_accents_give_the_same_text():
    assert normalise("cafe\u0301") == normalise("caf\u00e9") == "caf\u00e9"


SAMPLES = [
    "1,250 people and 12,345,678 more, 100,000,000 in all",
    "e.g. codecs, i.e. tokens, etc. and so on vs. the rest",
    "24 kHz at -16 LUFS, 3 dB, 50%, ~75 frames, 10-20 s, 1920x1080",
    "A & B -> C, fast — cheap, and/or 5 MB/s",
    "\u201cQuoted\u201d \u2018text\u2019\u2026 with  odd   spacing , here .",
    "Wait,, what;; ok:: etc. The end",
    "Visit https://example.org/docs. Then (https://example.org) go.",
    speak((Path(__file__).parents[1] / "manifests" / "scripts" / "l10-loudness.md").read_text(encoding="utf-8")),
]


@pytest.mark.parametrize("text", SAMPLES)
def test_normalise_is_idempotent(text):
    once = normalise(text)

    assert normalise(once) == once


@pytest.mark.parametrize("seed", ["1", "2"])
def test_normalise_gives_the_same_text_in_another_process(seed):
    code = "import json, sys; from narro.text import normalise as n; print(json.dumps([n(t) for t in json.load(sys.stdin)]))"
    env = {**os.environ, "PYTHONHASHSEED": seed}

    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(SAMPLES), capture_output=True, text=True,
                         env=env, check=True).stdout

    assert json.loads(out) == [normalise(t) for t in SAMPLES]


def test_control_characters_are_named_except_tab_and_newlines():
    assert control_characters("a\x07b\x00c\td\ne\rf\x1b\x7f\x07") == ["U+0000", "U+0007", "U+001B", "U+007F"]
    assert control_characters("Plain text,\tand a new line.\r\n") == []


def test_word_count_counts_contractions_as_one_word():
    assert word_count("It's a test, isn't it?") == 5
