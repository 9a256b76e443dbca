"""Text rewrites that remember what they replaced: a script as pieces, written and spoken.

narro.text normalises a script with a few dozen regular-expression rewrites. Run over plain
strings they would lose the author's text; run here, over `Piece`s, each rewrite keeps the
written characters it replaced beside what is to be said instead, so the written script, the
spoken text and the words each written word stands for (`Speech.words`, for captions) all
come from one pass. `rewrite(pieces, pattern, spoken)` gives exactly `pattern.sub(spoken, ...)`
on the spoken side, so the spoken text is the same string plain `re.sub` calls would make.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    """A stretch of the script: as written, and as the engine is to say it."""

    written: str
    spoken: str
    fixed: bool = False
    """From the lexicon: later rules leave its spoken form alone."""
    heard: str | None = None
    """What a listener should hear when `spoken` is not words (IPA phonemes; "" for a markup tag); None: `spoken`."""

    @property
    def plain(self) -> bool:
        """Unchanged so far: it can be cut anywhere."""
        return not self.fixed and self.written == self.spoken


@dataclass(frozen=True)
class Term:
    """A lexicon entry as normalisation applies it (narro.lexicon builds these)."""

    pattern: re.Pattern[str]
    spoken: str
    heard: str | None = None


@dataclass(frozen=True)
class Speech:
    """A script as pieces: its written, spoken and heard forms, and which written word says what."""

    pieces: tuple[Piece, ...]

    @property
    def written(self) -> str:
        return "".join(p.written for p in self.pieces)

    @property
    def spoken(self) -> str:
        """What the engine is given (and what the content key hashes)."""
        return "".join(p.spoken for p in self.pieces)

    @property
    def heard(self) -> str:
        """What the quality gate expects the recogniser to hear: `spoken`, with phonemes as words."""
        return "".join(p.spoken if p.heard is None else p.heard for p in self.pieces)

    def words(self) -> list[tuple[str, str]]:
        """Each written word (split at whitespace) with the heard text it stands for.

        A rewrite that spans several written words shares its words out in order ("24 kHz" ->
        "24" | "kilohertz"); words a rewrite adds without written text ("about") go with the
        written word they precede. A written word may stand for nothing (a URL not read out).
        """
        written = ""
        spans: list[tuple[int, int, Piece]] = []
        for piece in self.pieces:
            spans.append((len(written), len(written) + len(piece.written), piece))
            written += piece.written
        tokens = [(m.start(), m.end()) for m in re.finditer(r"\S+", written)]
        if not tokens:
            return []
        said: list[list[str]] = [[] for _ in tokens]
        starts, ends = [start for start, _ in tokens], [end for _, end in tokens]
        for start, end, piece in spans:
            covered = range(bisect.bisect_right(ends, start), bisect.bisect_left(starts, end))
            if piece.plain:
                for index in covered:
                    said[index].append(written[max(start, starts[index]):min(end, ends[index])])
                continue
            heard = piece.spoken if piece.heard is None else piece.heard
            if not covered:  # an insertion: it goes with the next written word (or the last)
                following = min(bisect.bisect_left(starts, start), len(tokens) - 1)
                covered = range(following, following + 1)
            if len(covered) == 1:
                said[covered[0]].append(heard)  # its own spaces say whether it joins its neighbours
                continue
            parts = heard.split()
            for n, index in enumerate(covered):
                share = parts[round(n * len(parts) / len(covered)):round((n + 1) * len(parts) / len(covered))]
                said[index].append(f" {' '.join(share)} ")
        return [(written[start:end], "".join(parts)) for (start, end), parts in zip(tokens, said, strict=True)]


def _cut(pieces: Sequence[Piece], offsets: Sequence[int], stops: Sequence[int], start: int, end: int,
         last: bool = False) -> list[Piece]:
    """The pieces covering spoken[start:end] (`offsets`, `stops`: where each one's spoken text lies);
    plain pieces at the edges are cut to fit.

    A piece with nothing spoken (a URL dropped) sits at a point: it goes with the span that
    starts there (or with the last span, when it ends the text).
    """
    out = []
    for index in range(bisect.bisect_left(stops, start), len(pieces)):
        piece, offset = pieces[index], offsets[index]
        if offset > end or (offset == end and (piece.spoken or not last)):
            break
        if piece.spoken and stops[index] <= start:
            continue
        if piece.plain:
            part = piece.spoken[max(0, start - offset):end - offset]
            out.append(Piece(part, part))
        else:
            out.append(piece)
    return out


def rewrite(pieces: list[Piece], pattern: re.Pattern[str], spoken: str | Callable[[re.Match[str]], str]) -> list[Piece]:
    """`pattern.sub(spoken, ...)` on the spoken text, keeping what each change replaced as written.

    Pieces the lexicon fixed are not rewritten, and a match never reaches across one.
    """
    out: list[Piece] = []
    run: list[Piece] = []
    for piece in [*pieces, None]:
        if piece is not None and not piece.fixed:
            run.append(piece)
            continue
        out += _rewrite_run(run, pattern, spoken)
        run = []
        if piece is not None:
            out.append(piece)
    return out


def _rewrite_run(run: list[Piece], pattern: re.Pattern[str],
                 spoken: str | Callable[[re.Match[str]], str]) -> list[Piece]:
    text = "".join(p.spoken for p in run)
    edits = []
    for match in pattern.finditer(text):
        new = match.expand(spoken) if isinstance(spoken, str) else spoken(match)
        if new != match.group(0):
            edits.append((match.start(), match.end(), new))
    if not edits:
        return run
    offsets, stops, lows, highs = [], [], [], []
    position = 0
    for piece in run:
        offsets.append(position)
        position += len(piece.spoken)
        stops.append(position)
        if not piece.plain:  # a rewritten piece is replaced whole or not at all
            lows.append(offsets[-1])
            highs.append(position)

    def widen(start: int, end: int) -> tuple[int, int]:
        low, high = start, end
        for index in range(bisect.bisect_right(highs, start), bisect.bisect_left(lows, max(end, start + 1))):
            if lows[index] < highs[index]:  # a piece with nothing spoken sits between, never inside
                low, high = min(low, lows[index]), max(high, highs[index])
        return low, high

    # Edits whose widened spans touch a shared piece become one piece.
    groups: list[list] = []
    for start, end, new in edits:
        low, high = widen(start, end)
        if groups and low < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], high)
            groups[-1][2].append((start, end, new))
        else:
            groups.append([low, high, [(start, end, new)]])
    out: list[Piece] = []
    position = 0
    for low, high, changes in groups:
        out += _cut(run, offsets, stops, position, low)
        written = "".join(p.written for p in _cut(run, offsets, stops, low, high))
        said, cursor = "", low
        for start, end, new in changes:
            said += text[cursor:start] + new
            cursor = end
        said += text[cursor:high]
        out.append(Piece(written, said))
        position = high
    out += _cut(run, offsets, stops, position, len(text), last=True)
    return _merge_plain(out)


def _merge_plain(pieces: list[Piece]) -> list[Piece]:
    out: list[Piece] = []
    for piece in pieces:
        if out and piece.plain and out[-1].plain:
            joined = out[-1].written + piece.written
            out[-1] = Piece(joined, joined)
        elif piece.written or piece.spoken:
            out.append(piece)
    return out


def apply_terms(text: str, terms: Sequence[Term]) -> list[Piece]:
    """The lexicon's terms as fixed pieces; the longest term wins where two start together."""
    if not terms:
        return [Piece(text, text)]
    pieces: list[Piece] = []
    position = 0
    found = sorted(((m.start(), -len(m.group(0)), m.end(), term) for term in terms for m in term.pattern.finditer(text)),
                   key=lambda hit: hit[:2])
    for start, _, end, term in found:
        if start < position:
            continue
        if start > position:
            pieces.append(Piece(text[position:start], text[position:start]))
        pieces.append(Piece(text[start:end], term.spoken, fixed=True, heard=term.heard))
        position = end
    if position < len(text):
        pieces.append(Piece(text[position:], text[position:]))
    return pieces


def strip_ends(pieces: list[Piece]) -> list[Piece]:
    """No space at either end of the spoken text (only plain or rewritten pieces carry spaces)."""
    for index in (0, -1):
        if pieces and not pieces[index].fixed:
            piece = pieces[index]
            spoken = piece.spoken.lstrip() if index == 0 else piece.spoken.rstrip()
            written = spoken if piece.plain else piece.written
            pieces[index] = Piece(written, spoken)
    return [p for p in pieces if p.written or p.spoken]
