"""Script markup: authored pauses and the pace of a span, in text and markdown scripts.

    Take a breath. [pause 1.5s] Now, [slow]the one rule to remember[/slow], and [fast]the rest[/fast].

- `[pause 1.5s]` (or `500ms`) inserts that much silence, on top of the pause already there.
- `[slow]…[/slow]` and `[fast]…[/fast]` speak a span at `SPEEDS` times the narration's speed,
  where the engine has a pace control (`EngineKind.pace_control`: piper's length scale, edge's
  rate); other engines speak the span at their own pace. Spans do not nest.

A tag is a bracketed word (any case) with at most one argument. A bracketed word that is not a
tag but looks like a mistyped one (`[pasue 2s]`, `[/slwo]`) is an error; one that does not
(`[sic]`) is text. Markup never reaches the captions or the text
the quality gate compares: narro.text makes each tag a piece with nothing written and nothing
heard, whose spoken side is the tag in canonical form (`[pause 0.5s]`), so the engine's text,
and with it the content key, changes exactly when the markup does. narro.engines.marked
speaks such text: it cuts it at the tags (`parts`) and joins the audio.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from narro.pieces import Piece

SPEEDS = {"slow": 0.8, "fast": 1.3}
"""Speed of a span over the narration's, as the engine is asked (piper measured: [slow] ~16% longer, [fast] ~13% shorter)."""
MIN_PAUSE_S, MAX_PAUSE_S = 0.05, 10.0

_TAG = re.compile(r"\[(/?)([A-Za-z]+)(?:[ \t]+([^\]\[\n]*?))?[ \t]*\]")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|sec|secs|seconds?)$")
_CANONICAL = re.compile(r"\[pause (\d+(?:\.\d+)?)s\]|\[(slow|fast)\]|\[/(slow|fast)\]")
_NAMES = ("pause", *SPEEDS)
_HOW = "tags are [pause 1.5s], [slow]…[/slow] and [fast]…[/fast]"


@dataclass(frozen=True)
class Tag:
    """One markup tag as written: where it is and what it says."""

    start: int
    end: int
    name: str
    closing: bool = False
    seconds: float = 0.0

    @property
    def canonical(self) -> str:
        if self.name == "pause":
            return f"[pause {self.seconds:g}s]"
        return f"[{'/' if self.closing else ''}{self.name}]"


@dataclass(frozen=True)
class MarkupProblem:
    offset: int
    """Where in the text (a character index): the caller turns it into a line."""
    message: str


def _seconds(argument: str) -> float | None:
    match = _DURATION.match(argument.strip().lower())
    if match is None:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def _candidates(text: str) -> list[tuple[re.Match[str], str | None]]:
    """Every bracketed word that is a tag, or looks like a mistyped one (with why it is not a tag)."""
    found: list[tuple[re.Match[str], str | None]] = []
    for match in _TAG.finditer(text):
        closing, name, argument = match.group(1), match.group(2).lower(), match.group(3)
        if name in _NAMES:
            found.append((match, None))
            continue
        close = difflib.get_close_matches(name, _NAMES, n=1, cutoff=0.6)
        if close or closing or (argument is not None and _seconds(argument) is not None):
            hint = f"; did you mean [{closing}{close[0]}]?" if close else ""
            found.append((match, f"unknown markup tag '{match.group(0)}'{hint} ({_HOW})"))
    return found


def parse(text: str) -> tuple[list[Tag], list[MarkupProblem]]:
    """The tags of a script, and every problem with them (unknown tag, bad duration, unclosed or nested span)."""
    tags: list[Tag] = []
    problems: list[MarkupProblem] = []
    opened: Tag | None = None
    nested: list[str] = []  # spans opened inside another (reported): their closing tags are not reported again
    for match, unknown in _candidates(text):
        at = match.start()
        if unknown is not None:
            problems.append(MarkupProblem(at, unknown))
            continue
        closing, name, argument = bool(match.group(1)), match.group(2).lower(), match.group(3)
        if name == "pause":
            seconds = _seconds(argument or "")
            if closing or seconds is None:
                problems.append(MarkupProblem(at, f"'{match.group(0)}': give the pause a duration, such as "
                                                  "[pause 1.5s] or [pause 500ms]"))
            elif not MIN_PAUSE_S <= seconds <= MAX_PAUSE_S:
                problems.append(MarkupProblem(at, f"'{match.group(0)}': a pause lasts {MIN_PAUSE_S:g} to "
                                                  f"{MAX_PAUSE_S:g} seconds; split a longer silence into narrations"))
            elif not any(ch.isalnum() for ch in _without_tags(text[:at])) or \
                    not any(ch.isalnum() for ch in _without_tags(text[match.end():])):
                problems.append(MarkupProblem(at, f"'{match.group(0)}': a pause before the first or after the last "
                                                  "word does nothing (clips are trimmed to their speech); remove it"))
            else:
                tags.append(Tag(at, match.end(), "pause", seconds=seconds))
            continue
        if argument:
            problems.append(MarkupProblem(at, f"'{match.group(0)}' takes no argument; write [{name}]…[/{name}]"))
        if closing:
            if name in nested:
                nested.remove(name)
                continue
            if opened is None or opened.name != name:
                inside = f" inside [{opened.name}]" if opened is not None else ""
                problems.append(MarkupProblem(at, f"'{match.group(0)}' closes a span that is not open{inside}"))
                continue
            if not any(ch.isalnum() for ch in _without_tags(text[opened.end:at])):
                problems.append(MarkupProblem(opened.start, f"[{name}]…[/{name}] has nothing to say inside"))
            tags.append(Tag(at, match.end(), name, closing=True))
            opened = None
        elif opened is not None:
            problems.append(MarkupProblem(at, f"'[{name}]' inside [{opened.name}]: spans do not nest; close "
                                              f"[/{opened.name}] first"))
            nested.append(name)
        else:
            opened = Tag(at, match.end(), name)
            tags.append(opened)
    if opened is not None:
        problems.append(MarkupProblem(opened.start, f"[{opened.name}] is never closed; end the span with "
                                                    f"[/{opened.name}]"))
        tags.remove(opened)
    return tags, problems


def _without_tags(text: str) -> str:
    return _TAG.sub(" ", text)


def line_of(text: str, offset: int) -> int:
    """1-based line of a character offset."""
    return text.count("\n", 0, offset) + 1


def pieces(text: str) -> list[Piece]:
    """The text as plain pieces and tag pieces (nothing written or heard; the canonical tag spoken).

    Only well-formed tags become pieces: a problem `parse` reports stays text here (the manifest
    refuses such a script before anything is spoken).
    """
    tags, _ = parse(text)
    out: list[Piece] = []
    position = 0
    for tag in tags:
        if tag.start > position:
            out.append(Piece(text[position:tag.start], text[position:tag.start]))
        out.append(Piece("", tag.canonical, fixed=True, heard=""))
        position = tag.end
    if position < len(text) or not out:
        out.append(Piece(text[position:], text[position:]))
    return out


def protect(text: str) -> tuple[str, list[str]]:
    """Tags swapped for placeholders markdown stripping leaves alone (`[a][b]` is a link to it); see `restore`."""
    kept: list[str] = []

    def hold(match: re.Match[str]) -> str:
        if match.group(2).lower() not in _NAMES:
            return match.group(0)
        kept.append(match.group(0))
        return f"\ue000{len(kept) - 1}\ue001"

    return _TAG.sub(hold, text), kept


def restore(text: str, kept: list[str]) -> str:
    return re.sub("\ue000(\\d+)\ue001", lambda m: kept[int(m.group(1))], text)


# --------------------------------------------------------------------------- speaking marked text


@dataclass(frozen=True)
class Part:
    """A stretch of an engine's text between tags: what to say, at what speed, after how much authored silence."""

    text: str
    speed: float = 1.0
    pause_before_s: float = 0.0


def parts(spoken: str) -> list[Part]:
    """The engine's text (canonical tags) cut at its tags."""
    out: list[Part] = []
    speed, pause, position = 1.0, 0.0, 0

    def flush(end: int) -> None:
        nonlocal pause
        chunk = spoken[position:end].strip()
        ending = re.match(r"[.,;:!?…]+", chunk)
        if ending and out:  # "[/slow]." ends the span's sentence: its full stop goes with it
            out[-1] = Part(out[-1].text + ending.group(0), out[-1].speed, out[-1].pause_before_s)
            chunk = chunk[ending.end():].strip()
        if chunk:
            out.append(Part(chunk, speed, pause))
            pause = 0.0

    for match in _CANONICAL.finditer(spoken):
        flush(match.start())
        position = match.end()
        if match.group(1) is not None:
            pause += float(match.group(1))
        else:
            speed = SPEEDS[match.group(2)] if match.group(2) else 1.0
    flush(len(spoken))
    return out


def authored_pauses(spoken: str) -> list[float]:
    """The authored pauses of an engine's text, in seconds (the quality gate allows for them)."""
    return [float(match.group(1)) for match in _CANONICAL.finditer(spoken) if match.group(1) is not None]


def unmarked(spoken: str) -> str:
    """An engine's text without its tags."""
    return _CANONICAL.sub(" ", spoken)


def marked(spoken: str) -> bool:
    """Whether an engine's text holds any tag."""
    return _CANONICAL.search(spoken) is not None
