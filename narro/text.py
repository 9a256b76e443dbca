"""Script text to speakable text: markdown stripped, whitespace settled, symbols spelled out.

Everything here is deterministic: the normalised text is part of a clip's content key, so
the same script must always give the same string.

`speech` keeps the script as written beside what is spoken, piece by piece (narro.pieces):
every rewrite records which written characters it replaced, so captions can show the author's
words ("a < b", "24 kHz", "VALL-E") while the engine says "a is less than b", "24 kilohertz"
and the lexicon's "valley". `normalise` is its spoken side. Script markup (narro.markup) comes
first: each tag becomes a piece with nothing written or heard, so no rule or lexicon term
touches it, and its canonical form is spoken (the engines cut their text at it).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Sequence

from narro import markup
from narro.pieces import Piece, Speech, Term, apply_terms, rewrite, strip_ends

__all__ = ["Piece", "Speech", "Term", "control_characters", "normalise", "speech", "strip_markdown", "without_code",
           "word_count"]

_FENCED_CODE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# Only real HTML elements are markup; "List<T>" and "a<b and c>d" are words to speak.
_HTML_TAG = re.compile(
    r"</?(?:a|abbr|b|bdi|bdo|big|blockquote|br|caption|center|cite|code|dd|del|details|dfn|div|dl|dt|em|figcaption|"
    r"figure|font|h[1-6]|hr|i|img|ins|kbd|li|mark|ol|p|pre|q|s|samp|section|small|span|strike|strong|sub|summary|"
    r"sup|table|tbody|td|tfoot|th|thead|tr|tt|u|ul|var|wbr)"
    r"""(?:\s+[\w:-]+\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))*\s*/?>""", re.IGNORECASE)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_REFERENCE_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_LINK_DEFINITION = re.compile(r"^[ \t]*\[[^\]]+\]:[ \t]*\S+.*$", re.MULTILINE)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]*(.*?)[ \t]*#*[ \t]*$", re.MULTILINE)
_SETEXT_UNDERLINE = re.compile(r"^[ \t]*(=+|-+)[ \t]*$", re.MULTILINE)
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+(.*)$", re.MULTILINE)
_BLOCKQUOTE = re.compile(r"^[ \t]*>[ \t]?", re.MULTILINE)
_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}.*$", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|\*|~~)(?=\S)(.+?)(?<=\S)\1")
# Underscores inside a word are not emphasis (CommonMark): load_course_file keeps them.
_UNDERSCORE_EMPHASIS = re.compile(r"(?<!\w)(__|_)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_INLINE_CODE = re.compile(r"`([^`]*)`")
_URL = re.compile(r"https?://[^\s<>]*[^\s<>.,;:!?)\]'\"]")  # sentence punctuation after it stays

# Abbreviations the voices read letter by letter or not at all.
_ABBREVIATIONS = [
    (re.compile(r"\be\.g\.,?", re.IGNORECASE), "for example,"),
    (re.compile(r"\bi\.e\.,?", re.IGNORECASE), "that is,"),
    (re.compile(r"\betc\.(?=\s+[a-z])"), "et cetera"),
    (re.compile(r"\betc\."), "et cetera."),
    (re.compile(r"\bvs\.?(?=\s)"), "versus"),
    (re.compile(r"\bapprox\.(?=\s)"), "approximately"),
    (re.compile(r"\bDr\.(?=\s+[A-Z])"), "Doctor"),
    (re.compile(r"\bProf\.(?=\s+[A-Z])"), "Professor"),
]

# Units after a number, singular and plural: "24 kHz" reads "24 kilohertz", "1 tsp" "1 teaspoon".
# Only after a number: "g", "min" and "l" alone are words (or letters) to say as written.
_UNITS = {
    "kHz": ("kilohertz", "kilohertz"),
    "Hz": ("hertz", "hertz"),
    "kbps": ("kilobit per second", "kilobits per second"),
    "Mbps": ("megabit per second", "megabits per second"),
    "ms": ("millisecond", "milliseconds"),
    "s": ("second", "seconds"),
    "min": ("minute", "minutes"),
    "h": ("hour", "hours"),
    "dB": ("decibel", "decibels"),
    "LUFS": ("LUFS", "LUFS"),
    "GB": ("gigabyte", "gigabytes"),
    "MB": ("megabyte", "megabytes"),
    "KB": ("kilobyte", "kilobytes"),
    "%": ("percent", "percent"),
    # Kitchen and everyday units.
    "mg": ("milligram", "milligrams"),
    "g": ("gram", "grams"),
    "kg": ("kilogram", "kilograms"),
    "ml": ("milliliter", "milliliters"),
    "mL": ("milliliter", "milliliters"),
    "cl": ("centiliter", "centiliters"),
    "l": ("liter", "liters"),
    "L": ("liter", "liters"),
    "tsp": ("teaspoon", "teaspoons"),
    "tbsp": ("tablespoon", "tablespoons"),
    "oz": ("ounce", "ounces"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "mm": ("millimeter", "millimeters"),
    "cm": ("centimeter", "centimeters"),
    "m": ("meter", "meters"),
    "km": ("kilometer", "kilometers"),
    "mph": ("mile per hour", "miles per hour"),
}
# Not after a currency sign: "$5m" is money.
_UNIT_AFTER_NUMBER = re.compile(
    r"(?<![\w.$£€])(\d+(?:[.,]\d+)?)\s?(" + "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
    + r")(?![\w/])"
)
_Rule = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]


def _rules(*pairs: tuple[str, str | Callable[[re.Match[str]], str]]) -> list[_Rule]:
    return [(re.compile(pattern), spoken) for pattern, spoken in pairs]


_DENOMINATORS = {2: ("half", "halves"), 3: ("third", "thirds"), 4: ("quarter", "quarters"), 5: ("fifth", "fifths"),
                 6: ("sixth", "sixths"), 8: ("eighth", "eighths"), 10: ("tenth", "tenths"),
                 100: ("hundredth", "hundredths")}
_PATH_PART = r"\.?[\w-]+(?:\.[\w-]+)*"


def _fraction(match: re.Match[str]) -> str:
    numerator, denominator = int(match.group(1)), int(match.group(2))
    if denominator in _DENOMINATORS:
        return f"{match.group(1)} {_DENOMINATORS[denominator][numerator != 1]}"
    return f"{match.group(1)} over {match.group(2)}"


def _path(match: re.Match[str]) -> str:
    """/usr/local/bin -> slash usr slash local slash bin; ~/.config -> home slash dot config."""
    path = match.group(0)
    head = {"~": "home ", ".": "dot ", "..": "dot dot "}.get(path[: path.index("/")], "") if "/" in path else ""
    parts = path[path.index("/"):] if head else path
    spoken = " slash ".join(part.replace(".", " dot ").strip() for part in parts.split("/"))
    return " " + (head + spoken).strip() + " "


def _email(match: re.Match[str]) -> str:
    return " " + " at ".join(part.replace(".", " dot ") for part in match.group(0).split("@")) + " "


_MONTHS = ("January February March April May June July August September October November December").split()


def _date(match: re.Match[str]) -> str:
    """06/22/2015 -> June 22, 2015 (month first, as the en-US voices read it)."""
    month, day = int(match.group(1)), int(match.group(2))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return match.group(0)
    return f"{_MONTHS[month - 1]} {day}, {match.group(3)}"


# An operator quoted on its own ("<", '=='): its name, not a comparison.
_OPERATOR_NAMES = {"<": "less than", ">": "greater than", "<=": "less than or equal", ">=": "greater than or equal",
                   "==": "double equals", "!=": "not equal", "=": "equals", "&": "ampersand", "@": "at", "^": "caret",
                   "/": "slash", "//": "double slash", "%": "percent", "*": "star", "**": "double star", "+": "plus",
                   "-": "minus", "~": "tilde", "|": "pipe", "->": "arrow", ">>": "double greater than",
                   "<<": "double less than", "#": "hash", ":=": "colon equals"}
_OPERATOR = "|".join(re.escape(op) for op in sorted(_OPERATOR_NAMES, key=len, reverse=True))
_QUOTED_OPERATOR = rf"""(?<=")({_OPERATOR})(?=")|(?<=')({_OPERATOR})(?=')"""


def _degrees(match: re.Match[str]) -> str:
    scale = {"C": " Celsius", "F": " Fahrenheit"}.get(match.group(2) or "", "")
    return f"{match.group(1)} degree{'' if match.group(1) == '1' else 's'}{scale}"


# Operands around an operator: a word, a number, a bracket, a quote.
_LEFT = r"(?<=[\w)\]'\"])"
# A small word before it ("and > 90%") is prose, not an operand.
_PROSE_BEFORE = re.compile(r"\b(?:an|the|and|or|of|is|are|was|were|be|to|at|in|on|by|for|with|from|than|about|"
                           r"under|over)$")


def _between_operands(spoken: str | Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
    """An operator rule that leaves the operator alone after a small word (checked here, not in the
    pattern: two dozen look-behinds at every position made normalising ten times slower)."""

    def rewrite(match: re.Match[str]) -> str:
        if _PROSE_BEFORE.search(match.string, max(0, match.start() - 6), match.start()):
            return match.group(0)
        return match.expand(spoken) if isinstance(spoken, str) else spoken(match)

    return rewrite


_RIGHT = r"(?=[-+−$(\[\w.'\"])"
_COMPARISONS = {"<=": "is less than or equal to", "≤": "is less than or equal to", "=<": "is less than or equal to",
                ">=": "is greater than or equal to", "≥": "is greater than or equal to",
                "!=": "is not equal to", "≠": "is not equal to", "=/=": "is not equal to", "==": "equals",
                "===": "equals", "≪": "is much less than", "≫": "is much greater than", "≈": "is approximately",
                "<": "is less than", ">": "is greater than"}
_BOUNDS = {"<": "less than", "≤": "at most", "<=": "at most", ">": "more than", "≥": "at least", ">=": "at least"}
_COMPARISON = "|".join(re.escape(op) for op in sorted(_COMPARISONS, key=len, reverse=True))

# Code and mathematics, read the way a teacher would say them. Each rule needs its context
# (operands on both sides, a number before a unit), so prose using the same characters
# otherwise ("<name>" placeholders, "C#", "#3") is read as prose.
_CODE_AND_MATH = _rules(
    (r"\s*(?:=>|⇒|⟹)\s*", " implies "),
    (r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", _email),
    (r"(?<![\w/.~])(?:~|\.{1,2})?/" + _PATH_PART + r"(?:/" + _PATH_PART + r")*/?", _path),
    (r"(?<![\w/.])" + _PATH_PART + r"(?:/" + _PATH_PART + r")+\.[A-Za-z]\w{0,5}\b(?!/)", _path),
    (r"\b24/7\b", "24 7"),
    (r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b", _date),
    (r"(?<![\w/.])(\d+)/(\d+)(?:st|nd|rd|th)?(?![\w/]|\.\d)", _fraction),
    (r"\band/or\b", "and or"),
    (r"(?<=\w)<\s*([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*)\s*>", r" of \1"),  # List<String>
    (r"<([A-Za-z_][\w-]*)>", r"\1"),  # a <placeholder>
    (r"<([A-Za-z_]\w*\s[^<>]*['\"][^<>]*)>", r"\1"),  # a repr: <module 'os' from '...'>
    (r"(?<=\w)\s+<-\s+", " gets "),
    (_LEFT + r"\s*(" + _COMPARISON + r")(?![-=<>])\s*" + _RIGHT,
     _between_operands(lambda m: f" {_COMPARISONS[m.group(1)]} ")),
    (r"(?<![\w)\]])(<=|>=|≤|≥|<|>)\s*(?=[-+−]?[$\d.])", lambda m: f"{_BOUNDS[m.group(1)]} "),
    (r"(?<=\s)(<=|>=|≤|≥|<|>)(?=\s)", lambda m: _BOUNDS[m.group(1)]),  # "is >= the number"
    (_LEFT + r"\s*=\s*" + _RIGHT, _between_operands(" equals ")),
    (r"\b([A-Za-z])\+\+", r"\1 plus plus"),
    (r"\b([A-FK])#(?!\w)", r"\1 sharp"),
    (r"(?<![\w&])#\s*(?=\d)", "number "),
    (r"(?<![\w&])#(?=[A-Za-z])", "hash "),
    (r"(?<![\w.])(\d+(?:\.\d+)?)\s*°(?:\s*([CF])(?![A-Za-z]))?", _degrees),
    (r"\s*±\s*", " plus or minus "),
    (r"\s*∓\s*", " minus or plus "),
    (_LEFT + r"\s*÷\s*" + _RIGHT, _between_operands(" divided by ")),
    (_LEFT + r"\s*\+\s*(?=[$(\[\w])", _between_operands(" plus ")),
    (_LEFT + r"\s+\*\s+(?=[$(\[\w])", _between_operands(" times ")),
    (r"(?<=\d)\*(?=\d)", " times "),
    (_LEFT + r"\s*−\s*" + _RIGHT, _between_operands(" minus ")),
    (r"(?<![\w)])−(?=\d)", "minus "),
    (r"(\w)\^2\b", r"\1 squared"),
    (r"(\w)\^3\b", r"\1 cubed"),
    (_LEFT + r"\s*\^\s*(?=[-\w(])", _between_operands(" to the power of ")),
    (r"(?<=\d)\s*[×x](?!\s*\d)(?=\s|[.,;:!?]|$)", " times"),
    (r"(?<=[A-Za-z)])\s*×\s*(?=[\w(])", " times "),
    (r"(?<=\w)\s+@\s+(?=\w)", " at "),
    (r"(?<=[A-Za-z])–(?=[A-Za-z])", "-"),  # an en dash joining words is a hyphen
    (r"(?<![\w@])@(?=\w)", "at "),
)
_SYMBOLS = _rules(
    (_QUOTED_OPERATOR, lambda m: _OPERATOR_NAMES[m.group(1) or m.group(2)]),
    (r"\s*&\s*", " and "),
    (r"\s*(?:→|->|⟶)\s*", " to "),
) + _CODE_AND_MATH + _rules(
    (r"~\s*(?=\d)", "about "),
    (r"≈\s*", "about "),
    (r"(\d)\s*[x×]\s*(?=\d)", r"\1 by "),
    (r"(\d)\s*[–-]\s*(?=\d)", r"\1 to "),
    (r"\s+[–—]\s+|—", ", "),
    (r"(?<![\w.])(\d+(?:\.\d+)?)\s?km/h\b", lambda m: f"{m.group(1)} kilometer{'' if m.group(1) == '1' else 's'} per hour"),
    (r"\s*/\s*(?:s|sec)\b", " per second"),
    (r"(?<=\w)/(?=[A-Za-z])", " or "),
)
# Typography kept as prosody: curly quotes read as quotes, an ellipsis as a trailing pause.
_QUOTES = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...", "\u00a0": " "}


def _spell_unit(match: re.Match[str]) -> str:
    number, unit = match.group(1), match.group(2)
    glued = match.group(0) == number + unit
    # "the 1990s", "the 80s": a decade, not seconds.
    if unit == "s" and glued and (len(number) == 4 or match.string[: match.start()].endswith(("the ", "'"))):
        return match.group(0)
    one, many = _UNITS[unit]
    return f"{number} {one if number == '1' else many}"


def strip_markdown(markdown: str) -> str:
    """Reduce a markdown script to the words a narrator would say."""
    text = markdown.replace("\r\n", "\n").replace("\r", "\n")  # scripts saved on Windows
    text, tags = markup.protect(text)  # "[/slow][pause 1s]" would read as a reference link
    text = _FENCED_CODE.sub("", text)
    text = _HTML_COMMENT.sub("", text)
    text = _LINK_DEFINITION.sub("", text)
    text = _IMAGE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _REFERENCE_LINK.sub(lambda m: m.group(1), text)
    text = _HTML_TAG.sub("", text)
    text = _TABLE_RULE.sub("", text)
    # A heading is spoken as a sentence of its own.
    text = _HEADING.sub(lambda m: _paragraph(m.group(1)), text)
    text = _SETEXT_UNDERLINE.sub("", text)
    text = _BLOCKQUOTE.sub("", text)
    # A list item is spoken as a sentence of its own.
    text = _LIST_ITEM.sub(lambda m: _paragraph(m.group(1)), text)
    text = _INLINE_CODE.sub(lambda m: m.group(1), text)
    for _ in range(2):  # nested emphasis such as ***bold italic***
        text = _EMPHASIS.sub(lambda m: m.group(2), text)
        text = _UNDERSCORE_EMPHASIS.sub(lambda m: m.group(2), text)
    text = text.replace("|", " ")
    # A paragraph that ends without punctuation (a caption, a label) still ends with a pause.
    paragraphs = re.split(r"\n\s*\n", text)
    return markup.restore("\n\n".join(_end_sentence(paragraph) for paragraph in paragraphs if paragraph.strip()),
                          tags)


def without_code(markdown: str) -> str:
    """A markdown script with its code blocks and comments blanked (their lines kept): the text markup may be in."""
    text = _FENCED_CODE.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)
    return _HTML_COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _paragraph(text: str) -> str:
    """A sentence set apart, so that the line before it cannot run into it."""
    return f"\n\n{_end_sentence(text)}\n\n"


def _end_sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?:;," else text + "."


_QUOTE = re.compile("[" + "".join(_QUOTES) + "]")
_SETTLE = _rules(
    (r"(?<=\d),(?=\d{3}\b)", ""),  # 1,250 -> 1250: espeak reads digit groups apart
    (r"\s+", " "),
    (r"\s+([,.;:!?])", r"\1"),
    (r"([,;:])\1+", r"\1"),
)


def speech(text: str, terms: Sequence[Term] = ()) -> Speech:
    """The script as pieces, lexicon `terms` applied first (they are what the author wrote)."""
    return _speech(text, tuple(terms))


@functools.lru_cache(maxsize=1024)
def _speech(text: str, terms: tuple[Term, ...]) -> Speech:
    # Cached: a course's scripts are read when it loads and again when its clips are planned.
    # Markup tags first: they are never words, so neither the lexicon nor a rule may touch them.
    pieces = [piece for part in markup.pieces(unicodedata.normalize("NFC", text))
              for piece in ([part] if part.fixed else apply_terms(part.written, terms))]
    pieces = rewrite(pieces, _QUOTE, lambda m: _QUOTES[m.group(0)])
    pieces = rewrite(pieces, _URL, "")
    for pattern, spoken in [*_ABBREVIATIONS, *_SYMBOLS, (_UNIT_AFTER_NUMBER, _spell_unit), *_SETTLE]:
        pieces = rewrite(pieces, pattern, spoken)
    return Speech(tuple(strip_ends(pieces)))


def normalise(text: str) -> str:
    """Speakable, canonical text: the string that is synthesised and hashed into the key."""
    return speech(text).spoken


# Unicode's control characters (category Cc: C0, DEL and C1) but tab and newlines; a regex
# scans a 10,000-narration course in milliseconds, where asking unicodedata per character took seconds.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def control_characters(text: str) -> list[str]:
    """Names of control characters other than tab and newline, which no voice can say."""
    return sorted(f"U+{ord(ch):04X}" for ch in set(_CONTROL.findall(text)))


def word_count(text: str) -> int:
    """Words of a normalised text, its markup tags not counted."""
    return len(re.findall(r"[\w']+", markup.unmarked(text)))
