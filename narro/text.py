"""Script text to speakable text: markdown stripped, whitespace settled, symbols spelled out.

Everything here is deterministic: the normalised text is part of a clip's content key, so
the same script must always give the same string.
"""

from __future__ import annotations

import re
import unicodedata

_FENCED_CODE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
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

# Units after a number: "24 kHz" reads as "24 kilohertz". Longest first so "ms" beats "m".
_UNITS = {
    "kHz": "kilohertz",
    "Hz": "hertz",
    "kbps": "kilobits per second",
    "Mbps": "megabits per second",
    "ms": "milliseconds",
    "s": "seconds",
    "dB": "decibels",
    "LUFS": "LUFS",
    "GB": "gigabytes",
    "MB": "megabytes",
    "KB": "kilobytes",
    "%": "percent",
}
_UNIT_AFTER_NUMBER = re.compile(
    r"(?<![\w.])(\d+(?:[.,]\d+)?)\s?(" + "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True)) + r")(?![\w])"
)
_SYMBOLS = [
    (re.compile(r"\s*&\s*"), " and "),
    (re.compile(r"\s*(?:→|->|⟶)\s*"), " to "),
    (re.compile(r"~\s*(?=\d)"), "about "),
    (re.compile(r"≈\s*"), "about "),
    (re.compile(r"(\d)\s*[x×]\s*(?=\d)"), r"\1 by "),
    (re.compile(r"(\d)\s*[–-]\s*(?=\d)"), r"\1 to "),
    (re.compile(r"\s+[–—]\s+|—"), ", "),
    (re.compile(r"\s*/\s*(?:s|sec)\b"), " per second"),
    (re.compile(r"(?<=\w)/(?=[A-Za-z])"), " or "),
]
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...", "\u00a0": " "})


def _spell_unit(match: re.Match[str]) -> str:
    number, unit = match.group(1), match.group(2)
    glued = match.group(0) == number + unit
    # "the 1990s", "the 80s": a decade, not seconds.
    if unit == "s" and glued and (len(number) == 4 or match.string[: match.start()].endswith(("the ", "'"))):
        return match.group(0)
    return f"{number} {_UNITS[unit]}"


def strip_markdown(markdown: str) -> str:
    """Reduce a markdown script to the words a narrator would say."""
    text = markdown.replace("\r\n", "\n").replace("\r", "\n")  # scripts saved on Windows
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
    return "\n\n".join(_end_sentence(paragraph) for paragraph in paragraphs if paragraph.strip())


def _paragraph(text: str) -> str:
    """A sentence set apart, so that the line before it cannot run into it."""
    return f"\n\n{_end_sentence(text)}\n\n"


def _end_sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?:;," else text + "."


def normalise(text: str) -> str:
    """Speakable, canonical text: the string that is synthesised and hashed into the key."""
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    text = _URL.sub("", text)
    for pattern, spoken in _ABBREVIATIONS:
        text = pattern.sub(spoken, text)
    for pattern, spoken in _SYMBOLS:
        text = pattern.sub(spoken, text)
    text = _UNIT_AFTER_NUMBER.sub(_spell_unit, text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,250 → 1250: espeak reads digits groups apart
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])\1+", r"\1", text)
    return text


def control_characters(text: str) -> list[str]:
    """Names of control characters other than tab and newline, which no voice can say."""
    found = {ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r"}
    return sorted(f"U+{ord(ch):04X}" for ch in found)


def word_count(text: str) -> int:
    return len(re.findall(r"[\w']+", text))
