"""Public figures: names a cloned voice's speaker may not have, whatever its consent record says.

The list ships with narro (narro/data/public_figures.txt) and an operator extends it with the
`consent.public_figures` setting (a file in the same format: one person a line, other names of
the same person joined by " | ", `#` comments). Nothing removes a shipped name.

Names are compared as sets of words, so order does not matter ("Obama, Barack"), after
folding case and accents (é → e, ø → o), dropping punctuation (apostrophes join: O'Brien →
obrien; other marks split: Ocasio-Cortez → ocasio cortez), courtesy titles (Dr, Sir, ...) and
generational suffixes (Jr, III, ...). A speaker's name matches a listed name when

- a one-word listed name (Adele) is the whole of it;
- otherwise each of its words stands for a different listed word, in full or as its initial
  (B. Obama), the listed first and last words are both stood for, and at least one of those
  two in full. Extra words of the speaker's (a middle name the list lacks) are allowed.

This is a floor, not a proof: a nickname, a misspelling, a homoglyph or a name the list lacks
all pass. It refuses some ordinary people too (a "B. Johnson" for Boris Johnson): they give
their full name.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from narro.errors import ConsentError

TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sir", "dame", "lord", "lady",
                    "president", "senator", "governor", "rev", "reverend", "hon"})
SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "v", "phd", "md", "esq", "obe", "mbe", "cbe", "kbe"})
# Letters NFKD does not decompose into a base letter and an accent.
FOLDED = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe", "ı": "i"})
APOSTROPHES = "'’ʼ`´"


@dataclass(frozen=True)
class Figure:
    name: str
    """The person's first listed name, as written."""
    aliases: tuple[tuple[str, ...], ...]
    """Every listed name of the person, as words."""
    source: str
    """The list file and line."""


def words(name: str) -> tuple[str, ...]:
    """A name as comparable words: case, accents, punctuation, titles and suffixes folded away."""
    text = unicodedata.normalize("NFKD", name.casefold().translate(FOLDED))
    text = "".join(c for c in text if not unicodedata.combining(c))
    for mark in APOSTROPHES:
        text = text.replace(mark, "")
    text = "".join(c if c.isalnum() else " " for c in text)
    found = tuple(word for word in text.split())
    kept = tuple(word for word in found if word not in TITLES and word not in SUFFIXES)
    return kept or found


def fits(spoken: tuple[str, ...], listed: tuple[str, ...]) -> bool:
    """Whether a speaker's name (as words) may be the listed name (as words); see the module docstring."""
    if not spoken or not listed:
        return False
    if len(listed) == 1:
        return spoken == listed
    first, last = 0, len(listed) - 1

    def assign(index: int, taken: dict[int, bool]) -> bool:
        if index == len(spoken):
            return first in taken and last in taken and (taken[first] or taken[last])
        word = spoken[index]
        for target, candidate in enumerate(listed):
            if target in taken:
                continue
            if word == candidate or (len(word) == 1 and candidate.startswith(word)):
                taken[target] = word == candidate
                if assign(index + 1, taken):
                    return True
                del taken[target]
        return assign(index + 1, taken)  # a word of the speaker's the list lacks

    return assign(0, {})


class PublicFigures:
    """The names no clone may be made of."""

    def __init__(self, figures: list[Figure]):
        self.figures = figures
        self._by_word: dict[str, list[Figure]] = {}
        for figure in figures:
            for alias in figure.aliases:
                for word in set(alias):
                    self._by_word.setdefault(word, []).append(figure)

    def __len__(self) -> int:
        return len(self.figures)

    def match(self, speaker: str) -> Figure | None:
        """The listed person `speaker` may name, or None."""
        spoken = words(speaker)
        # Only people sharing a full word with the speaker can match (initials alone never do).
        candidates = dict.fromkeys(f for word in spoken if len(word) > 1 for f in self._by_word.get(word, ()))
        for figure in candidates:
            if any(fits(spoken, alias) for alias in figure.aliases):
                return figure
        return None


def parse(text: str, source: str) -> list[Figure]:
    figures = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        names = [name.strip() for name in line.split("|") if name.strip()]
        aliases = tuple(dict.fromkeys(w for w in (words(name) for name in names) if w))
        if aliases:
            figures.append(Figure(names[0], aliases, f"{source}:{number}"))
    return figures


@functools.cache
def _shipped() -> tuple[Figure, ...]:
    data = Path(__file__).parent / "data" / "public_figures.txt"
    return tuple(parse(data.read_text(encoding="utf-8"), "narro/data/public_figures.txt"))


@functools.lru_cache(maxsize=8)
def _extra(path: Path, mtime_ns: int) -> tuple[Figure, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConsentError(f"{path}: cannot read the public figures list (consent.public_figures): {error}") from None
    return tuple(parse(text, str(path)))


def public_figures(extra: Path | None = None) -> PublicFigures:
    """The shipped list, plus the operator's file (`consent.public_figures`) when there is one.

    A named file that cannot be read is an error, never an empty list.
    """
    figures = list(_shipped())
    if extra is not None:
        try:
            mtime = extra.stat().st_mtime_ns
        except OSError as error:
            raise ConsentError(f"{extra}: cannot read the public figures list (consent.public_figures): "
                             f"{error.strerror or error}") from None
        figures += _extra(extra, mtime)
    return PublicFigures(figures)
