"""Captions: cue rules, the script's own words, alignment of heard words onto written ones."""

from __future__ import annotations

import random

import numpy as np
import pytest

from narro import captions
from narro.align import align
from narro.captions import MAX_CUE_S, MAX_LINE_CHARS, MIN_CUE_S, Captions, Cue, build, cues
from narro.engines.base import WordTiming
from narro.text import Term, speech
from narro.wer import align as wer_align

VOCABULARY = ("the a codec tokens model speech waveform frames of into short list numbers learns compress sound "
              "decoder transformer predicts reference recording extraordinarily-long-compound-word 75 24 kHz "
              "Meta's EnCodec SoundStream VALL-E").split()


def timed(words: list[str], rng: random.Random, start: float = 0.3) -> list[WordTiming]:
    """Plausible engine timings: a word every ~0.3 s, longer pauses after punctuation."""
    out, t = [], start
    for word in words:
        length = 0.12 + 0.05 * len(word.strip(".,;:!?")) * rng.uniform(0.7, 1.3)
        out.append(WordTiming(word, round(t, 3), round(t + length, 3)))
        t += length + (0.45 if word[-1] in ".!?" else 0.2 if word[-1] in ",;:" else 0.04)
    return out


def random_script(rng: random.Random, words: int) -> str:
    out = []
    for index in range(words):
        word = rng.choice(VOCABULARY)
        if index == 0 or out[-1][-1] in ".!?":
            word = word[0].upper() + word[1:]
        roll = rng.random()
        out.append(word + ("." if roll < 0.08 else "," if roll < 0.16 else "?" if roll < 0.18 else ""))
    return " ".join(out) + "."


def check_rules(result: list[Cue], written: list[str], duration_s: float) -> None:
    """Every written word once, in order; lines, lengths and order as the cue rules say."""
    assert " ".join(c.text.replace("\n", " ") for c in result).split() == written
    for index, cue in enumerate(result):
        lines = cue.text.split("\n")
        assert 1 <= len(lines) <= 2
        assert all(len(line) <= MAX_LINE_CHARS or " " not in line for line in lines), lines
        assert 0 <= cue.start_s < cue.end_s <= duration_s + 1e-9
        assert cue.end_s - cue.start_s <= MAX_CUE_S + 1e-9
        previous_end = result[index - 1].end_s if index else 0.0
        following = result[index + 1].start_s if index + 1 < len(result) else duration_s
        assert cue.start_s >= previous_end - 1e-9  # never overlapping, always in order
        # At least 1 s, unless the neighbours (or the audio's ends) leave no room for it.
        assert cue.end_s - cue.start_s >= MIN_CUE_S - 1e-9 or (
            cue.start_s <= previous_end + 1e-9 and cue.end_s >= following - 1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_cues_hold_every_written_word_and_keep_the_rules(seed):
    rng = random.Random(seed)
    text = random_script(rng, rng.randint(1, 160))
    words = timed(text.split(), rng)
    duration = words[-1].end_s + rng.uniform(0.0, 0.4)

    result = cues(words, duration)

    check_rules(result, text.split(), duration)


def test_a_cue_ends_at_a_sentence_then_at_a_clause_never_on_a_leaning_word():
    text = ("Welcome to module 11. A neural audio codec, such as Meta's EnCodec or Google's SoundStream, "
            "learns to compress sound into a short list of numbers.")
    words = timed(text.split(), random.Random(1))

    result = [c.text.replace("\n", " ") for c in cues(words, words[-1].end_s)]

    assert result[0] == "Welcome to module 11."
    assert result[1].endswith(",") and result[1].startswith("A neural audio codec,")
    assert all(c.split()[-1].lower() not in ("the", "a", "of", "to", "into") for c in result)


def test_lines_balance_and_prefer_punctuation():
    assert captions.lines("short line".split()) == ["short line"]
    laid = captions.lines("It cuts the waveform into frames, about 75 of them every second.".split())
    assert laid == ["It cuts the waveform into frames,", "about 75 of them every second."]
    assert captions.lines(("word " * 30).split()) is None  # 149 characters cannot fit two lines


def test_a_short_last_cue_is_shown_earlier_to_last_a_second_inside_the_audio():
    words = [WordTiming("Tom", 0.3, 0.5), WordTiming("said", 0.6, 0.9), WordTiming("hi.", 1.0, 1.5),
             WordTiming("Then", 2.0, 2.2), WordTiming("left!", 2.3, 2.6)]

    result = cues(words, duration_s=2.5)

    assert [(c.start_s, c.end_s, c.text) for c in result] == [(0.3, 1.5, "Tom said hi."), (1.5, 2.5, "Then left!")]


def test_vtt_and_srt_formats():
    made = Captions((Cue(0.3, 1.5, "Tom & <Jerry>\nsaid hi."), Cue(61.25, 3723.5, "Bye.")), "engine", 1.0)

    assert made.vtt().decode() == ("WEBVTT\n\n1\n00:00:00.300 --> 00:00:01.500\nTom &amp; &lt;Jerry&gt;\nsaid hi.\n\n"
                                   "2\n00:01:01.250 --> 01:02:03.500\nBye.\n")
    assert made.srt().decode() == ("1\n00:00:00,300 --> 00:00:01,500\nTom & <Jerry>\nsaid hi.\n\n"
                                   "2\n00:01:01,250 --> 01:02:03,500\nBye.\n")
    assert made.record("l01") == {"vtt": "l01.vtt", "srt": "l01.srt", "timing": "engine", "coverage": 1.0, "cues": 2}


def test_captions_show_the_script_as_written_not_as_spoken_or_respelled():
    script = speech("If a < b, VALL-E needs 24 kHz & 75% more.",
                    [Term(__import__("re").compile(r"(?<!\w)VALL-E(?!\w)"), "valley")])
    assert script.spoken == "If a is less than b, valley needs 24 kilohertz and 75 percent more."
    spoken = script.spoken.replace(",", "").replace(".", "").split()
    heard = [WordTiming(w, 0.2 + 0.3 * i, 0.45 + 0.3 * i) for i, w in enumerate(spoken)]

    made = build(script.words(), heard, duration_s=5.0, timing="engine")

    assert [c.text for c in made.cues] == ["If a < b, VALL-E needs 24 kHz & 75% more."]
    assert "If a &lt; b, VALL-E needs 24 kHz &amp; 75% more." in made.vtt().decode()
    assert made.coverage == 1.0


def test_alignment_times_matched_words_and_interpolates_the_missed_ones():
    script = speech("About 75 of them arrive, every single second.").words()
    # The recogniser missed "every single" and wrote the number as digits.
    heard = [WordTiming("About", 1.0, 1.3), WordTiming("75", 1.3, 2.0), WordTiming("of", 2.0, 2.1),
             WordTiming("them", 2.1, 2.4), WordTiming("arrive", 2.4, 2.9), WordTiming("second", 4.0, 4.5)]

    aligned = align(script, heard, (0.5, 5.0))

    times = {w.word: (w.start_s, w.end_s) for w in aligned.words}
    assert [w.word for w in aligned.words] == "About 75 of them arrive, every single second.".split()
    assert times["75"] == (1.3, 2.0)
    assert 2.9 <= times["every"][0] < times["every"][1] <= times["single"][0] < times["single"][1] <= 4.0
    assert times["every"][1] - times["every"][0] < times["single"][1] - times["single"][0]  # by length
    assert times["second."] == (4.0, 4.5)
    assert aligned.coverage == pytest.approx(7 / 9)  # 9 words heard as words, "every single" inferred


def test_alignment_takes_the_time_of_what_was_heard_in_place_of_a_word():
    script = speech("The VALL-E model speaks.").words()
    heard = [WordTiming("The", 0.3, 0.5), WordTiming("Volley", 0.5, 1.0), WordTiming("model", 1.0, 1.4),
             WordTiming("speaks", 1.4, 2.0)]

    aligned = align(script, heard, (0.3, 2.0))

    assert [(w.word, w.start_s, w.end_s) for w in aligned.words][1] == ("VALL-E", 0.5, 1.0)
    assert aligned.coverage == pytest.approx(3 / 5)  # "vall" and "e" were heard as something else


def test_alignment_with_nothing_heard_spreads_the_words_over_the_speech():
    script = speech("Nothing was heard at all.").words()

    aligned = align(script, [], (1.0, 3.0))

    assert aligned.coverage == 0.0
    assert aligned.words[0].start_s == 1.0 and aligned.words[-1].end_s == 3.0
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(aligned.words, aligned.words[1:]))


def test_alignment_keeps_times_in_order_when_heard_times_overlap():
    script = speech("one two three").words()
    heard = [WordTiming("one", 1.0, 1.6), WordTiming("two", 1.4, 1.8), WordTiming("three", 1.7, 1.9)]

    words = align(script, heard, (0.0, 2.0)).words

    assert all(a.end_s <= b.start_s for a, b in zip(words, words[1:]))
    assert all(w.start_s <= w.end_s for w in words)


def test_written_words_of_a_rewrite_share_its_spoken_words():
    words = speech("It takes 24 kHz, then ~20 ms.").words()
    assert [(written, " ".join(said.split())) for written, said in words] == [
        ("It", "It"), ("takes", "takes"), ("24", "24"), ("kHz,", "kilohertz ,"), ("then", "then"),
        ("~20", "about 20"), ("ms.", "milliseconds ."),
    ]
    # A URL is written but not read out: it stands for nothing.
    assert speech("See https://example.org now.").words()[1][1].strip() == ""


@pytest.fixture(scope="module")
def spoken_paragraph():
    """A real take: piper speaks a paragraph; the recogniser times the words it hears."""
    from narro.asr import transcriber_for
    from narro.engines import engine_for
    from narro.settings import Settings
    from narro.voices import EngineVoice

    # Words tiny.en hears well: its own mishearings are not what is tested here.
    text = ("Every clip is watermarked before it is published, and its loudness is brought to the same level. "
            "The course team writes one manifest per course, with about 75 narrations in it. A failed clip is "
            "retried without rendering the others, so a long course finishes sooner. Short lines are hard for "
            "codec language models.")
    script = speech(text)
    settings = Settings()
    synthesis = engine_for(EngineVoice(engine="piper", model="joe-us-medium"), settings).synthesize(script.spoken)
    transcriber = transcriber_for(settings.asr)
    heard = transcriber.transcribe(synthesis.samples, synthesis.sample_rate, words=True)
    return script, synthesis, heard, transcriber


def test_aligned_captions_of_real_speech_say_what_the_audio_says(spoken_paragraph):
    script, synthesis, heard, transcriber = spoken_paragraph
    duration = synthesis.duration_s

    made = build(script.words(), heard.words, duration, "aligned")

    check_rules(list(made.cues), script.written.split(), duration)
    assert made.coverage >= 0.8
    # Each cue's stretch of audio, heard again on its own, says the cue's words: at most 20% word
    # errors over all cues, and no cue worse than 50% (a cue a sentence off would be near 100%).
    errors = words = 0
    for cue in made.cues:
        piece = synthesis.samples[int(cue.start_s * synthesis.sample_rate):int(cue.end_s * synthesis.sample_rate)]
        again = transcriber.transcribe(np.concatenate([piece, np.zeros(synthesis.sample_rate // 4, np.float32)]),
                                       synthesis.sample_rate)
        compared = wer_align(speech(cue.text.replace("\n", " ")).spoken, again.text)
        assert compared.wer <= 0.5, (cue, again.text)
        errors += compared.substitutions + compared.deletions + compared.insertions
        words += compared.reference_words
    assert errors / words <= 0.2


def test_word_timings_cost_little_on_top_of_recognition(spoken_paragraph):
    _, synthesis, heard, transcriber = spoken_paragraph

    assert len(heard.words) >= 30 and heard.words == tuple(sorted(heard.words, key=lambda w: w.start_s))
    assert all(0 <= w.start_s <= w.end_s <= synthesis.duration_s + 0.5 for w in heard.words)
    assert heard.align_s < 0.5 * heard.seconds
    assert transcriber.transcribe(synthesis.samples, synthesis.sample_rate).words == ()


def parse_vtt(text: str) -> list[Cue]:
    """Cues of a WebVTT file as narro writes it (numbered blocks), entities decoded."""
    blocks = text.rstrip("\n").split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues_ = []
    for block in blocks[1:]:
        if not block.strip():
            continue
        number, timing, *lines = block.split("\n")
        start, end = (_seconds(t) for t in timing.split(" --> "))
        body = "\n".join(lines).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        cues_.append(Cue(start, end, body))
        assert int(number) == len(cues_)
    return cues_


def parse_srt(text: str) -> list[Cue]:
    """Cues of a SubRip file: as WebVTT, with a comma before the milliseconds and no entities."""
    lines = [line.replace(",", ".") if " --> " in line else captions._escape(line) for line in text.split("\n")]
    return parse_vtt("WEBVTT\n\n" + "\n".join(lines))


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@pytest.mark.usefixtures("prefect_harness")
def test_every_example_clip_gets_captions_of_its_script(tmp_path):
    import json

    from click.testing import CliRunner

    from narro.cli import main
    from narro.manifest import load_course
    from tests.conftest import EXAMPLE_MANIFEST

    store = tmp_path / "store"
    result = CliRunner().invoke(main, ["render", str(EXAMPLE_MANIFEST), "--store", str(store)])
    assert result.exit_code == 0, result.output
    course = load_course(EXAMPLE_MANIFEST)
    folder = store / course.slug
    for narration in course.narrations:
        sidecar = json.loads((folder / f"{narration.id}.json").read_text())
        assert sidecar["captions"]["timing"] == "aligned" and sidecar["captions"]["coverage"] >= 0.7, sidecar["captions"]
        vtt = parse_vtt((folder / f"{narration.id}.vtt").read_text(encoding="utf-8"))
        srt = parse_srt((folder / f"{narration.id}.srt").read_text(encoding="utf-8"))
        assert vtt == srt
        check_rules(vtt, narration.written.split(), sidecar["duration_s"])
