"""WebVTT captions from word timings: pure text in, text out.

Cues follow the usual subtitle habits: at most two lines of about 42 characters, at most 7 s
on screen, a new cue at the end of each sentence. The words shown are the script's own (with
their punctuation), matched in order to the engine's word boundaries; where a boundary does
not match the script, its own text is shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from narro.engines import WordTiming

MAX_CUE_CHARS = 84
MAX_CUE_S = 7.0
SENTENCE_END = re.compile(r"[.!?…][\"')\]]*$")


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def _key(word: str) -> str:
    return re.sub(r"\W+", "", word).lower()


def display_words(words: Sequence[WordTiming], text: str) -> list[str]:
    """For each timed word, the script text it stands for (punctuation kept), in order."""
    tokens = text.split()
    shown: list[str] = []
    position = 0
    for word in words:
        target = _key(word.word)
        found = None
        for index in range(position, min(len(tokens), position + 6)):
            candidate = _key(tokens[index])
            if target and candidate and (candidate == target or candidate.startswith(target)):
                found = index
                break
        if found is None:
            shown.append(word.word)
        else:
            # Tokens the engine did not time ("&", "—") ride along with the next timed word.
            shown.append(" ".join(tokens[position:found + 1]))
            position = found + 1
    if shown and position < len(tokens) and position > 0:
        shown[-1] = " ".join([shown[-1], *tokens[position:]])
    return shown


def shift(words: Sequence[WordTiming], seconds: float) -> list[WordTiming]:
    """Word timings moved by `seconds` (negative: earlier), never before 0."""
    return [WordTiming(w.word, max(0.0, w.start_s + seconds), max(0.0, w.end_s + seconds)) for w in words]


def cues(words: Sequence[WordTiming], text: str, duration_s: float | None = None) -> list[Cue]:
    shown = display_words(words, text)
    result: list[Cue] = []
    current: list[tuple[WordTiming, str]] = []

    def flush() -> None:
        if current:
            result.append(Cue(current[0][0].start_s, current[-1][0].end_s, " ".join(s for _, s in current)))
            current.clear()

    for word, token in zip(words, shown, strict=True):
        if current:
            length = sum(len(s) + 1 for _, s in current) + len(token)
            if length > MAX_CUE_CHARS or word.end_s - current[0][0].start_s > MAX_CUE_S:
                flush()
        current.append((word, token))
        if SENTENCE_END.search(token):
            flush()
    flush()
    if duration_s is not None:
        result = [Cue(min(c.start_s, duration_s), min(c.end_s, duration_s), c.text) for c in result]
    return [c for c in result if c.end_s > c.start_s]


def _timestamp(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _escape(text: str) -> str:
    # In cue text `&` and `<` start entities and tags; `-->` would end a timing line.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _wrap(text: str, width: int = MAX_CUE_CHARS // 2) -> str:
    if len(text) <= width:
        return text
    words = text.split(" ")
    best, best_gap = 1, len(text)
    for cut in range(1, len(words)):
        gap = abs(len(" ".join(words[:cut])) - len(" ".join(words[cut:])))
        if gap < best_gap:
            best, best_gap = cut, gap
    return " ".join(words[:best]) + "\n" + " ".join(words[best:])


def webvtt(words: Sequence[WordTiming], text: str, duration_s: float | None = None) -> bytes:
    """A WebVTT document for the words; `duration_s` clamps cues to the audio's length."""
    lines = ["WEBVTT", ""]
    for number, cue in enumerate(cues(words, text, duration_s), start=1):
        lines += [str(number), f"{_timestamp(cue.start_s)} --> {_timestamp(cue.end_s)}", _escape(_wrap(cue.text)), ""]
    return "\n".join(lines).encode("utf-8")
