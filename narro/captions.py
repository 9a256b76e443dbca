"""Captions from timed words: cues laid out by the usual subtitle rules, written as WebVTT and SRT.

The words shown are always the script as written (numbers, names and punctuation as the
author wrote them), never what the recogniser heard or the lexicon's respelling: the times
come from narro.align, the text from narro.text.Speech.

Cue rules (the common broadcast and WCAG practice): one or two lines of at most
`MAX_LINE_CHARS`; on screen `MIN_CUE_S` to `MAX_CUE_S`; cues never overlap. A cue ends at a
sentence end where it can, else at a clause (comma, semicolon, colon, dash), and only as a
last resort inside a clause; among the layouts that keep the rules the one with the fewest
and best-placed breaks is chosen (a shortest path over the words).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from narro.align import align
from narro.engines.base import WordTiming

MAX_LINE_CHARS = 42
MAX_LINES = 2
MIN_CUE_S = 1.0
MAX_CUE_S = 7.0
SENTENCE_END = re.compile(r"[.!?…][\"'’”)\]]*$")
CLAUSE_END = re.compile(r"([,;:–—]|\.\.\.)[\"'’”)\]]*$|^[–—]$")
# Words a cue (or a line) should not end on: they lean on what follows.
_LEANING = frozenset("a an the and or but of to in on at by for with from that as is are was were".split())

# Costs of a layout: a cue, and where it ends.
_CUE = 10.0
_BREAK_CLAUSE = 12.0
_BREAK_INSIDE = 40.0
_LEANING_END = 15.0
_SENTENCE_INSIDE = 30.0
_TOO_SHORT = 60.0
_FRAGMENT_CHARS = 24
"""A cue holding part of a sentence costs this much per character it is shorter than this."""


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str
    """The written words, lines separated by a newline."""


@dataclass(frozen=True)
class Captions:
    cues: tuple[Cue, ...]
    timing: str
    """'engine' (the engine's own word timings) or 'aligned' (the gate's ASR pass, aligned to the script)."""
    coverage: float
    """Share of the script's words whose time was matched, not interpolated (narro.align)."""

    def vtt(self) -> bytes:
        lines = ["WEBVTT", ""]
        for number, cue in enumerate(self.cues, start=1):
            lines += [str(number), f"{_timestamp(cue.start_s)} --> {_timestamp(cue.end_s)}", _escape(cue.text), ""]
        return "\n".join(lines).encode("utf-8")

    def srt(self) -> bytes:
        lines = []
        for number, cue in enumerate(self.cues, start=1):
            lines += [str(number), f"{_timestamp(cue.start_s, ',')} --> {_timestamp(cue.end_s, ',')}", cue.text, ""]
        return "\n".join(lines).encode("utf-8")

    def record(self, narration_id: str) -> dict[str, object]:
        """The sidecar's `captions`."""
        return {"vtt": f"{narration_id}.vtt", "srt": f"{narration_id}.srt", "timing": self.timing,
                "coverage": round(self.coverage, 3), "cues": len(self.cues)}


def build(script: Sequence[tuple[str, str]], heard: Sequence[WordTiming], duration_s: float, timing: str,
          span: tuple[float, float] | None = None) -> Captions:
    """Captions for a script ((written, heard) pairs, narro.text.Speech.words) from timed heard words.

    `heard` must be on the audio's own timeline (see `shift`); `span` is where the speech is
    in it (default: the whole audio).
    """
    aligned = align(script, heard, span or (0.0, duration_s))
    return Captions(tuple(cues(aligned.words, duration_s)), timing, aligned.coverage)


def shift(words: Sequence[WordTiming], seconds: float) -> list[WordTiming]:
    """Word timings moved by `seconds` (negative: earlier), never before 0."""
    return [WordTiming(w.word, max(0.0, w.start_s + seconds), max(0.0, w.end_s + seconds)) for w in words]


def lines(words: Sequence[str]) -> list[str] | None:
    """The words in at most two lines of MAX_LINE_CHARS, or None when they do not fit.

    Of the cuts that fit, the one after punctuation and closest to even wins; a single word
    longer than a line stands alone (it cannot be cut).
    """
    text = " ".join(words)
    if len(text) <= MAX_LINE_CHARS or len(words) == 1:
        return [text]
    best: tuple[float, int] | None = None
    for cut in range(1, len(words)):
        top, bottom = " ".join(words[:cut]), " ".join(words[cut:])
        if len(top) > MAX_LINE_CHARS or len(bottom) > MAX_LINE_CHARS:
            continue
        score = abs(len(top) - len(bottom)) - (8 if CLAUSE_END.search(words[cut - 1]) else 0) + (
            8 if _leaning(words[cut - 1]) else 0)
        if best is None or score < best[0]:
            best = (score, cut)
    if best is None:
        return None
    return [" ".join(words[: best[1]]), " ".join(words[best[1]:])]


def _leaning(word: str) -> bool:
    return word.lower().strip("\"'’”“(") in _LEANING


def _break_cost(word: str, last: bool) -> float:
    if last or SENTENCE_END.search(word):
        return 0.0
    cost = _BREAK_CLAUSE if CLAUSE_END.search(word) else _BREAK_INSIDE
    return cost + (_LEANING_END if _leaning(word) else 0.0)


def cues(words: Sequence[WordTiming], duration_s: float) -> list[Cue]:
    """Cues over timed written words (every word in exactly one cue, in order)."""
    n = len(words)
    if n == 0:
        return []
    best: list[float] = [0.0] + [float("inf")] * n
    choice = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end - 1, -1, -1):
            chunk = [w.word for w in words[start:end]]
            if len(" ".join(chunk)) > MAX_LINE_CHARS * MAX_LINES and end - start > 1:
                break
            length = words[end - 1].end_s - words[start].start_s
            if length > MAX_CUE_S and end - start > 1:
                break
            laid = lines(chunk)
            if laid is None or best[start] == float("inf"):
                continue
            inside = sum(1 for w in chunk[:-1] if SENTENCE_END.search(w))
            # A short cue can stay up longer in the silence around it (see _timed).
            room = (words[end].start_s if end < n else duration_s) - (words[start - 1].end_s if start else 0.0)
            whole = (start == 0 or SENTENCE_END.search(words[start - 1].word)) and (
                end == n or SENTENCE_END.search(chunk[-1]))
            cost = (best[start] + _CUE + _break_cost(chunk[-1], end == n) + _SENTENCE_INSIDE * inside
                    + (_TOO_SHORT * (MIN_CUE_S - room) if room < MIN_CUE_S else 0.0)
                    + (0.0 if whole else max(0, _FRAGMENT_CHARS - len(" ".join(chunk)))))
            if cost < best[end]:
                best[end], choice[end] = cost, start
    spans = []
    end = n
    while end > 0:
        spans.append((choice[end], end))
        end = choice[end]
    spans.reverse()
    return _timed(words, spans, duration_s)


def _timed(words: Sequence[WordTiming], spans: list[tuple[int, int]], duration_s: float) -> list[Cue]:
    """Cue times from their words: inside the audio, in order, at least MIN_CUE_S where the gaps allow."""
    times = [[min(words[a].start_s, duration_s), min(words[b - 1].end_s, duration_s)] for a, b in spans]
    for index, (start, end) in enumerate(times):
        previous_end = times[index - 1][1] if index else 0.0
        following = times[index + 1][0] if index + 1 < len(times) else duration_s
        start = max(start, previous_end)
        end = min(max(end, start), following)
        if end - start < MIN_CUE_S:  # stay longer, then come earlier, never over a neighbour
            end = min(start + MIN_CUE_S, following, duration_s)
            start = max(previous_end, min(start, end - MIN_CUE_S))
        end = min(end, start + MAX_CUE_S)
        times[index] = [start, end]
    return [Cue(round(start, 3), round(end, 3), "\n".join(lines([w.word for w in words[a:b]]) or []))
            for (a, b), (start, end) in zip(spans, times, strict=True)]


def _timestamp(seconds: float, decimal: str = ".") -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _escape(text: str) -> str:
    # In WebVTT cue text `&` and `<` start entities and tags; `-->` would end a timing line.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
