"""Script text to speakable text: concrete inputs, concrete outputs."""

from __future__ import annotations

import json
import os
import re
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


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("if a < b then", "if a is less than b then"),
        ("x<y and y>z", "x is less than y and y is greater than z"),
        ("a <= b, a>=b, a != b, a == b, a ≠ b, a ≤ b",
         "a is less than or equal to b, a is greater than or equal to b, a is not equal to b, a equals b, "
         "a is not equal to b, a is less than or equal to b"),
        ("<5 ms and > 90% of the time", "less than 5 milliseconds and more than 90 percent of the time"),
        ("x = 5 and y=3", "x equals 5 and y equals 3"),
        ("List<String> and Map<K, V>", "List of String and Map of K, V"),
        ("Type <name> here.", "Type name here."),
        ("3/4, 1/2 cup, 2/3, 7/16, 24/7", "3 quarters, 1 half cup, 2 thirds, 7 over 16, 24 7"),
        ("Edit /etc/hosts and ~/.config/narro/voices.yaml, then run ./run.sh.",
         "Edit slash etc slash hosts and home slash dot config slash narro slash voices dot yaml, "
         "then run dot slash run dot sh."),
        ("See scripts/l03.md first.", "See scripts slash l03 dot md first."),
        ("Mail jane.doe@example.com or @narro.", "Mail jane dot doe at example dot com or at narro."),
        ("C# and F#, #1 and #include", "C sharp and F sharp, number 1 and hash include"),
        ("20 °C, 68°F, 90° and 1°", "20 degrees Celsius, 68 degrees Fahrenheit, 90 degrees and 1 degree"),
        ("±0.5 dB or 5 ± 0.2", "plus or minus 0.5 decibels or 5 plus or minus 0.2"),
        ("6 ÷ 2 = 3, 2 + 2 = 4, 5 − 3, a * b", "6 divided by 2 equals 3, 2 plus 2 equals 4, 5 minus 3, a times b"),
        ("C++ is fast; 2^10 and x^2", "C plus plus is fast; 2 to the power of 10 and x squared"),
        ("2x faster, 10× slower, 3 × 4", "2 times faster, 10 times slower, 3 by 4"),
        ("a => b and x <- 5", "a implies b and x gets 5"),
        ("and/or", "and or"),
    ],
)
def test_operators_and_symbols_are_spoken_by_context(text, spoken):
    assert normalise(text) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("The <kbd>&lt;</kbd> key", "The &lt; key"),  # entities are the author's business, tags are not
        ("a <b and c> d", "a <b and c> d"),  # not a tag: kept for the symbol rules
    ],
)
def test_only_real_html_tags_are_markup(text, spoken):
    assert strip_markdown(text) == spoken + ("." if not spoken.endswith(".") else "")


def test_typography_is_kept_as_prosody():
    # Quotes stay quotes, a dash becomes a pause, an ellipsis a trailing pause.
    assert normalise("\u201cNo\u201d \u2014 she said\u2026 then left.") == '"No", she said... then left.'


def test_accented_words_are_kept_for_the_voice():
    assert normalise("A café, naïve façade.") == "A café, naïve façade."


@pytest.mark.parametrize("text", [
    "if a < b then x = 5; 20 °C ± 2, 3/4 of ~/.bashrc, C# & C++ via jane@example.com, 2^8 ≠ 255",
    "Visit https://example.org/docs. 1,250 frames, e.g. 24 kHz \u2014 fine\u2026",
])
def test_speech_keeps_the_written_text_beside_the_spoken_one(text):
    from narro.text import speech

    got = speech(text)

    assert got.spoken == normalise(text)
    assert got.written.split() == text.split()  # every written word, as written
    assert [written for written, _ in got.words()] == text.split()
    assert normalise(got.spoken) == got.spoken  # idempotent with the new rules too


CORPUS = Path(__file__).parent / "corpus" / "sentences.yaml"


def corpus() -> list[dict[str, str]]:
    import yaml

    return yaml.safe_load(CORPUS.read_text(encoding="utf-8"))


def test_the_corpus_is_real_text_with_its_sources():
    items = corpus()
    assert len(items) >= 60
    assert all(item["url"].startswith("https://") and item["source"] for item in items)
    assert len({item["text"] for item in items}) == len(items)


@pytest.mark.parametrize("item", corpus(), ids=lambda item: item["source"])
def test_real_sentences_leave_no_operator_unspoken(item):
    from narro.text import speech

    text = item["text"]
    got = speech(text)

    # No operator, comparison or stray symbol is left for the voice to skip.
    assert not re.search(r"[<>=≤≥≠±×÷°@#^&]|(?<=\d)/(?=\d)", got.spoken), got.spoken
    assert normalise(got.spoken) == got.spoken
    assert [written for written, _ in got.words()] == text.split()


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("500 g flour, 350 ml milk, 2 kg, 1 kg", "500 grams flour, 350 milliliters milk, 2 kilograms, 1 kilogram"),
        ("1.5 l or 1.5 L, 75 cl, 250mg", "1.5 liters or 1.5 liters, 75 centiliters, 250 milligrams"),
        ("3 tbsp sugar and 1 tsp salt", "3 tablespoons sugar and 1 teaspoon salt"),
        ("bake 10 min, rest 1 min, 2 h", "bake 10 minutes, rest 1 minute, 2 hours"),
        ("20 cm, 5 km, 3 mm, 2 m", "20 centimeters, 5 kilometers, 3 millimeters, 2 meters"),
        ("8 oz, 1 lb, 2 lbs", "8 ounces, 1 pound, 2 pounds"),
        ("350 °F, 180°C, 60 mph, 50 km/h", "350 degrees Fahrenheit, 180 degrees Celsius, 60 miles per hour, "
                                            "50 kilometers per hour"),
        ("1 s, 1 ms and 1 dB", "1 second, 1 millisecond and 1 decibel"),
        # Only after a number: letters and words stay as written.
        ("the min and max, a g string, e.g. this", "the min and max, a g string, for example, this"),
        ("5G phones, $5m raised, the 1990s", "5G phones, $5m raised, the 1990s"),
    ],
)
def test_everyday_units_after_numbers_are_spoken_in_words(text, spoken):
    assert normalise(text) == spoken
