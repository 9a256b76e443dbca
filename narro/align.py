"""Word timings for a script's written words, from timed words heard in its audio.

The timed words come from the engine (edge's word boundaries) or from the quality gate's
ASR pass (narro.asr with `words=True`). Both are mapped onto the script the same way: each
written word stands for some heard words (narro.text.Speech.words: "24 kHz" is heard as
"twenty four kilohertz", a lexicon term as its respelling), both sides are normalised as the
WER comparison does (narro.wer.normalise), and a sequence alignment pairs them. A written
word takes the times of its matched words; where the recogniser heard something else in
the same place (a substitution) the times of what it heard there are used; words with no
counterpart at all get times interpolated between their timed neighbours, in proportion to
their length. `coverage` is the share of the script's words matched exactly: how much of
the timing was measured rather than inferred.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from narro.engines.base import WordTiming
from narro.wer import normalise


@dataclass(frozen=True)
class Aligned:
    words: list[WordTiming]
    """One per written word, in order; `word` is the written word, punctuation included."""
    coverage: float
    """Share of the script's (normalised) words whose time was matched exactly, 0..1."""


def _heard_words(heard: Sequence[WordTiming]) -> tuple[list[str], list[tuple[float, float]]]:
    """Normalised heard words and their times; a word that normalises to several ('75') shares its time."""
    words, times = [], []
    for timing in heard:
        parts = normalise(timing.word)
        step = (timing.end_s - timing.start_s) / max(1, len(parts))
        for k, part in enumerate(parts):
            words.append(part)
            times.append((timing.start_s + k * step, timing.start_s + (k + 1) * step))
    return words, times


def align(script: Sequence[tuple[str, str]], heard: Sequence[WordTiming], span: tuple[float, float]) -> Aligned:
    """Times for each written word of `script` ((written, heard text) pairs, narro.text.Speech.words).

    `span` is where speech is in the audio (first and last sound): written words before the
    first timed one or after the last are placed inside it.
    """
    owners: list[int] = []
    reference: list[str] = []
    for index, (_, said) in enumerate(script):
        for word in normalise(said):
            reference.append(word)
            owners.append(index)
    hypothesis, times = _heard_words(heard)
    found: list[list[tuple[float, float]]] = [[] for _ in script]
    exact = 0
    matcher = SequenceMatcher(a=reference, b=hypothesis, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            exact += i2 - i1
            for offset in range(i2 - i1):
                found[owners[i1 + offset]].append(times[j1 + offset])
        elif tag == "replace":
            # Heard differently in this place: share what was heard there out in order.
            r, h = i2 - i1, j2 - j1
            for offset in range(r):
                first, last = j1 + offset * h // r, j1 + max(offset * h // r, (offset + 1) * h // r - 1)
                found[owners[i1 + offset]].append((times[first][0], times[last][1]))
    timed: list[tuple[float, float] | None] = [
        (min(t[0] for t in spans), max(t[1] for t in spans)) if spans else None for spans in found
    ]
    return Aligned(_fill(script, timed, span), exact / len(reference) if reference else 1.0)


def _fill(script: Sequence[tuple[str, str]], timed: list[tuple[float, float] | None],
          span: tuple[float, float]) -> list[WordTiming]:
    """Every written word timed, in order and not overlapping: the untimed interpolated by length."""
    times: list[tuple[float, float] | None] = list(timed)
    # Recogniser times can overlap or step back a little; keep them in order.
    floor = span[0]
    for index, value in enumerate(times):
        if value is not None:
            start = max(value[0], floor)
            floor = max(start, value[1])
            times[index] = (start, floor)
    index = 0
    while index < len(times):
        if times[index] is not None:
            index += 1
            continue
        gap_end = index
        while gap_end < len(times) and times[gap_end] is None:
            gap_end += 1
        previous = times[index - 1] if index > 0 else None
        before = previous[1] if previous is not None else span[0]
        following = times[gap_end] if gap_end < len(times) else None
        after = following[0] if following is not None else max(span[1], before)
        weights = [len(script[k][0]) + 1 for k in range(index, gap_end)]
        position, step = before, (after - before) / sum(weights)
        for k, weight in zip(range(index, gap_end), weights, strict=True):
            times[k] = (position, position + weight * step)
            position += weight * step
        index = gap_end
    return [WordTiming(written, round(value[0], 3), round(value[1], 3))
            for (written, _), value in zip(script, times, strict=True) if value is not None]
