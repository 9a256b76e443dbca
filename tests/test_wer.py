"""Text normalisation and alignment for the ASR round trip; chunking and plausibility of the recogniser."""

from __future__ import annotations

import numpy as np
import pytest

from narro.asr import ends_in_repeat, plausible, speech_chunks
from narro.wer import align, normalise, spell_number


@pytest.mark.parametrize("number, words", [
    (0, "zero"), (13, "thirteen"), (75, "seventy five"), (100, "one hundred"),
    (1250, "one thousand two hundred fifty"), (2_000_000, "two million"),
])
def test_spell_number(number: int, words: str):
    assert spell_number(number) == words


def test_normalise_case_punctuation_numbers_and_spelling():
    assert normalise("About 75 of them, every second!") == "about seventy five of them every second".split()
    assert normalise("seventy-five") == normalise("75")
    assert normalise("The grey colour") == normalise("the gray color")
    assert normalise("normalise it; normalisation") == normalise("normalize it normalization")
    assert normalise("Meta's 1st model in 2024, 3.5 times") == \
        "metas first model in twenty twenty four three point five times".split()
    assert normalise("50%") == normalise("fifty per cent") == normalise("50 percent")


def test_alignment_counts_errors_and_runs():
    reference = "one two three four five six seven eight nine ten"
    assert align(reference, reference).wer == 0
    missing = align(reference, "one two three eight nine ten")
    assert (missing.deletions, missing.longest_missing, missing.missing_at) == (4, 4, "four five six seven")
    repeated = align("we model it the way we model text", "we model it the way we model text the way we model text")
    assert repeated.longest_inserted == 5 and repeated.tail_matched == 5
    cut = align(reference, "one two three four five")
    assert cut.tail_matched == 0
    assert align("learned codebooks", "learned code books").wer == 0  # split compounds are joined


def test_speech_chunks_cut_in_pauses_and_stay_short():
    rate = 16000
    tone = (0.3 * np.sin(np.arange(rate * 5) * 0.2)).astype(np.float32)  # 5 s of "speech"
    pause = np.zeros(rate // 2, dtype=np.float32)
    audio = np.concatenate([tone, pause, tone, pause, tone, pause, tone])  # 21.5 s
    chunks = speech_chunks(audio, rate)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(audio)
    assert all(b - a <= 14 * rate for a, b in chunks)
    for _, end in chunks[:-1]:  # every cut lies in a pause
        assert np.all(audio[end - 10: end + 10] == 0)


def test_implausible_decodings_are_recognised():
    assert ends_in_repeat("Did our system make this? Did our system make this?")
    assert not ends_in_repeat("It only ever sees tokens. That is why.")
    # An echo of the last sentence, cut short (seen on the bench course: b092).
    assert ends_in_repeat("Dropout helps. Text overlap between training and test data is easy to miss when "
                          "sentences come from popular books. Text overlap between training and test data is")
    assert not ends_in_repeat("the cat sat on the mat and then the dog sat on the mat")
    assert not plausible("the total", 13.9)  # a chunk dropped
    assert not plausible("word " * 80, 10.0)  # a loop
    assert plausible("So how do we get speech tokens from text? A transformer does the predicting.", 4.5)


def test_diacritics_are_folded_so_a_plain_spelling_is_no_error():
    assert normalise("Café naïve façade, São Paulo, Straße") == "cafe naive facade sao paulo strasse".split()
    assert align("The déjà vu of a naïve café.", "the deja vu of a naive cafe").wer == 0.0
