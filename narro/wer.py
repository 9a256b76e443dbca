"""Word error rate between a script and what a recogniser heard, after both are normalised.

Both texts go through the same normalisation (case, diacritics, punctuation, hyphens, numbers
spelled as words, British spellings as American ones), so "75" and "seventy-five", or "grey" and "gray",
are the same word. Compounds the recogniser splits ("code books" for "codebooks") are joined
when the joined form is a word of the other text. The alignment also reports the longest run
of missing or inserted words, which catches a skipped sentence or a repeated phrase even when
the overall rate is low.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
             "nine": "ninth", "twelve": "twelfth"}

# British spellings a recogniser trained on American text writes differently (both sides map).
_SPELLINGS = {
    "grey": "gray", "colour": "color", "colours": "colors", "behaviour": "behavior", "favour": "favor",
    "favourite": "favorite", "honour": "honor", "labour": "labor", "neighbour": "neighbor", "flavour": "flavor",
    "centre": "center", "centres": "centers", "metre": "meter", "metres": "meters", "litre": "liter",
    "theatre": "theater", "fibre": "fiber", "programme": "program", "programmes": "programs",
    "catalogue": "catalog", "catalogues": "catalogs", "dialogue": "dialog", "analogue": "analog",
    "licence": "license", "defence": "defense", "offence": "offense", "travelled": "traveled",
    "travelling": "traveling", "modelling": "modeling", "modelled": "modeled", "labelled": "labeled",
    "labelling": "labeling", "cancelled": "canceled", "signalling": "signaling", "towards": "toward",
    "okay": "ok", "alright": "all right", "percent": "per cent",
}
# -ise/-isation and -yse endings: normalise/normalize, analyse/analyze (applied to both sides).
_ISE = re.compile(r"(?<=\w{3})(is|ys)(e|ed|es|ing|ation|ations|er|ers)$")
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th|s)?(?!\w)")
_SYMBOLS = {"%": " percent ", "&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "$": " dollars "}


def spell_number(n: int) -> str:
    """An integer in words, American style without 'and': 1250 -> 'one thousand two hundred fifty'."""
    if n < 0:
        return "minus " + spell_number(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (" " + _ONES[ones] if ones else "")
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return f"{spell_number(high)} {name}" + (" " + spell_number(rest) if rest else "")
    raise AssertionError("unreachable")


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINALS:
        last = _ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _number_words(match: re.Match[str]) -> str:
    whole, fraction, suffix = match.group(1).replace(",", ""), match.group(2), match.group(3)
    value = int(whole)
    # Years are read in pairs: 1990 -> nineteen ninety, 1900 -> nineteen hundred, 2024 -> twenty twenty four.
    if 1100 <= value <= 2099 and value % 1000 >= 10 and "," not in match.group(1) and not fraction:
        words = f"{spell_number(value // 100)} " + (spell_number(value % 100) if value % 100 else "hundred")
    else:
        words = spell_number(value)
    if fraction:
        words += " point " + " ".join(_ONES[int(digit)] for digit in fraction)
    if suffix in ("st", "nd", "rd", "th"):
        words = _ordinal(words)
    elif suffix == "s":
        words = words[:-1] + "ies" if words.endswith("y") else words + "s"
    return f" {words} "


_LIGATURES = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"})


def fold(text: str) -> str:
    """Lower case without diacritics: 'Café naïve' -> 'cafe naive' (a recogniser writes either)."""
    decomposed = unicodedata.normalize("NFKD", text.lower().translate(_LIGATURES))
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def normalise(text: str) -> list[str]:
    """The words of a text as compared for WER: lower case, no diacritics or punctuation, numbers in words."""
    text = fold(unicodedata.normalize("NFKC", text)).replace("’", "'")
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = _NUMBER.sub(_number_words, text)
    text = re.sub(r"(\w)'(s|t|re|ve|ll|d|m)\b", r"\1\2", text)  # meta's -> metas, don't -> dont
    text = re.sub(r"[^\w\s]|_", " ", text)  # hyphens and punctuation separate words
    words = []
    for word in text.split():
        word = _SPELLINGS.get(word, word)
        words.extend(_ISE.sub(lambda m: ("iz" if m.group(1) == "is" else "yz") + m.group(2), word).split())
    return words


def _join_compounds(words: list[str], vocabulary: set[str]) -> list[str]:
    """Join neighbours whose concatenation is a word of the other text ('code books' -> 'codebooks')."""
    out: list[str] = []
    i = 0
    while i < len(words):
        if i + 1 < len(words) and words[i] + words[i + 1] in vocabulary:
            out.append(words[i] + words[i + 1])
            i += 2
        else:
            out.append(words[i])
            i += 1
    return out


@dataclass(frozen=True)
class Alignment:
    """The comparison of a reference (the script) with a hypothesis (the transcript)."""

    reference_words: int
    substitutions: int
    deletions: int
    insertions: int
    longest_missing: int
    """Most reference words in one place with no counterpart in the transcript."""
    longest_inserted: int
    """Most transcript words in one place with no counterpart in the script."""
    tail_matched: int
    """How many of the script's last `TAIL_WORDS` words the transcript has, in place."""
    missing_at: str = ""
    """The first words of the longest missing run, for the reason line."""
    inserted_at: str = ""

    @property
    def wer(self) -> float:
        errors = self.substitutions + self.deletions + self.insertions
        return errors / max(1, self.reference_words)


TAIL_WORDS = 5


def align(reference: str, hypothesis: str) -> Alignment:
    """Align two texts word by word after normalisation."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    hyp = _join_compounds(hyp, set(ref))
    ref = _join_compounds(ref, set(hyp))
    matcher = SequenceMatcher(a=ref, b=hyp, autojunk=False)
    subs = dels = ins = 0
    longest_missing = longest_inserted = 0
    missing_at = inserted_at = ""
    matched = [False] * len(ref)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for i in range(i1, i2):
                matched[i] = True
            continue
        r, h = i2 - i1, j2 - j1
        subs += min(r, h)
        dels += max(0, r - h)
        ins += max(0, h - r)
        if r - h > longest_missing:
            longest_missing, missing_at = r - h, " ".join(ref[i1:i2][:8])
        if h - r > longest_inserted:
            longest_inserted, inserted_at = h - r, " ".join(hyp[j1:j2][:8])
    return Alignment(
        reference_words=len(ref), substitutions=subs, deletions=dels, insertions=ins,
        longest_missing=longest_missing, longest_inserted=longest_inserted,
        tail_matched=sum(matched[-TAIL_WORDS:]), missing_at=missing_at, inserted_at=inserted_at,
    )


def differences(reference: str, hypothesis: str) -> list[tuple[str, str, str]]:
    """The two texts side by side after normalisation, as aligned for WER: (tag, script words, heard words).

    `tag` is SequenceMatcher's: 'equal', 'replace' (heard other words), 'delete' (not heard),
    'insert' (heard, not in the script).
    """
    ref, hyp = normalise(reference), normalise(hypothesis)
    hyp = _join_compounds(hyp, set(ref))
    ref = _join_compounds(ref, set(hyp))
    matcher = SequenceMatcher(a=ref, b=hyp, autojunk=False)
    return [(tag, " ".join(ref[i1:i2]), " ".join(hyp[j1:j2])) for tag, i1, i2, j1, j2 in matcher.get_opcodes()]


def marked(reference: str, hypothesis: str) -> str:
    """One line, wdiff style: script words not heard as `[-...-]`, words heard instead as `{+...+}`."""
    parts = []
    for tag, script, heard in differences(reference, hypothesis):
        if tag == "equal":
            parts.append(script)
            continue
        if script:
            parts.append(f"[-{script}-]")
        if heard:
            parts.append(f"{{+{heard}+}}")
    return " ".join(parts)

