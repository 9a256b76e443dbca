"""Pronunciation lexicon: how to say a term, without misspelling it in the script.

A course's `lexicon:` in its manifest, and a `lexicon.yaml` beside it (shared by every course
in the folder, like voices.yaml), map a term to a respelling or to IPA phonemes:

    VALL-E: valley                                 # a respelling: what the engine is given
    Tacotron: {say: tack oh tron}                  # the same, written out
    SoundStream: {ipa: "sˈaʊndstɹiːm", say: sound stream}   # phonemes, for engines that take them
    gif: {say: jif, ignore_case: true}

Matching is whole-word and case-aware (`ignore_case: true` relaxes the case); the longest
term wins where two start at the same place. A course's entry replaces a shared one with the
same term. Entries change only what is spoken (narro.text.Term pieces): captions show the
term as written, and the quality gate expects to hear the respelling (for IPA: `say`, else
the term). An engine that takes phonemes (`EngineKind.phonemes`, piper: espeak-ng's `[[ ]]`
input) gets the IPA when every engine that may speak the clip (its fallback too) takes it;
otherwise the `say` respelling; an entry with IPA only is then an error for that clip.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from narro.errors import ManifestError, Problem
from narro.text import Term
from narro.yamlfile import FieldPath, LocatedYaml, load_located, validation_problems

LEXICON_FILENAME = "lexicon.yaml"
# IPA as espeak-ng's phoneme input takes it: IPA letters, length and stress marks, combining
# diacritics, tie bars, syllable dots and spaces between words.
_IPA = re.compile(r"^[a-zA-Z\u00e6\u00e7\u00f0\u00f8\u0127\u014b\u0153\u0180-\u02ff\u0300-\u036f\u03b2\u03b8\u03c7"
                  r"\u1d00-\u1dbf\u2016\u203f\u2191\u2193\u2197\u2198 .'|-]+$")


class Entry(BaseModel):
    """How one term is said."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    say: str | None = Field(default=None, min_length=1, max_length=200)
    """A respelling the engine reads as text (`valley` for VALL-E)."""
    ipa: str | None = Field(default=None, min_length=1, max_length=200)
    """IPA phonemes, for engines that take phonemes (piper); `say` is used by the others."""
    ignore_case: bool = False
    """Match the term in any case (`GIF`, `gif`, `Gif`)."""

    @field_validator("say")
    @classmethod
    def _speakable(cls, value: str | None) -> str | None:
        if value is not None and (not any(ch.isalpha() for ch in value) or "[[" in value or "]]" in value):
            raise ValueError(f"'{value}' must be words to read (letters), not markup")
        return value.strip() if value is not None else None

    @field_validator("ipa")
    @classmethod
    def _phonemes(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = unicodedata.normalize("NFC", value.strip().strip("/[]").strip())
        if not value or not _IPA.match(value):
            bad = sorted({ch for ch in value if not _IPA.match(ch)})
            raise ValueError(f"'{value}' is not IPA phonemes (unexpected {', '.join(map(repr, bad)) or 'nothing'}); "
                             "write phonemes such as 'vˈæli'")
        return value


def _entry(value: Any) -> Any:
    return {"say": value} if isinstance(value, str) else value


@dataclass(frozen=True)
class LexiconEntry:
    term: str
    say: str | None
    ipa: str | None
    ignore_case: bool
    where: Problem
    """Where the entry is written (file, line, field), for errors about it."""

    def pattern(self) -> re.Pattern[str]:
        # Whole words: no letter or digit right before or after ("VALL-E's" matches, "VALL-Ex" does not).
        flags = re.IGNORECASE if self.ignore_case else 0
        return re.compile(r"(?<!\w)" + re.escape(self.term) + r"(?!\w)", flags)

    def term_for(self, phonemes: bool) -> Term | None:
        """As narro.text applies it for an engine that does (not) take phonemes; None: it cannot be said."""
        if phonemes and self.ipa:
            return Term(self.pattern(), f"[[ {self.ipa} ]]", heard=self.say or self.term)
        if self.say:
            return Term(self.pattern(), self.say)
        return None


@dataclass(frozen=True)
class Lexicon:
    entries: tuple[LexiconEntry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def found_in(self, text: str) -> list[LexiconEntry]:
        """The entries whose term occurs in a script."""
        return [entry for entry in self.entries if entry.pattern().search(text)]

    def terms(self, text: str, phonemes: bool, who: str) -> list[Term]:
        """The terms to apply to a script spoken by engines that do (not) all take phonemes.

        Raises ManifestError (at the entry's line) for an IPA-only entry that `who` (the voice
        and engine, for the message) cannot say.
        """
        terms, problems = [], []
        for entry in self.found_in(text):
            term = entry.term_for(phonemes)
            if term is None:
                problems.append(Problem(entry.where.file, entry.where.line, entry.where.field,
                                        f"{who} cannot take IPA phonemes; add `say:` with a respelling"))
            else:
                terms.append(term)
        if problems:
            raise ManifestError(problems)
        return terms


def takes_phonemes(voice: Any) -> bool:
    """Whether every engine that may speak for an engine voice (it, then its fallback) takes IPA phonemes."""
    from narro.engines import engine_kind

    speakers = [voice] + ([voice.fallback] if voice.fallback is not None else [])
    return all(engine_kind(speaker.engine).phonemes for speaker in speakers)


def lexicon_terms(lexicon: Lexicon, written: str, voice_name: str, voice: Any) -> list[Term]:
    """The lexicon's terms for a script spoken by a narro voice's engine voice (narro.voices.EngineVoice)."""
    if not lexicon:
        return []
    return lexicon.terms(written, takes_phonemes(voice), f"voice '{voice_name}' (engine {voice.engine})")


def parse(data: Any, located: LocatedYaml, base: FieldPath) -> tuple[list[LexiconEntry], list[Problem]]:
    """The entries of a `term: entry` mapping at `base` in a located YAML file, and its problems."""
    if data is None:
        return [], []
    if not isinstance(data, Mapping):
        return [], [located.problem(base, "expected a mapping of term: respelling (or term: {say: ..., ipa: ...})")]
    entries, problems = [], []
    for raw_term, value in data.items():
        where = base + (str(raw_term),)
        term = str(raw_term).strip()
        if not term or not any(ch.isalnum() for ch in term):
            problems.append(located.problem(where, f"term '{raw_term}' has no letters or digits to match"))
            continue
        try:
            entry = Entry.model_validate(_entry(value))
        except ValidationError as exc:
            problems.extend(validation_problems(located, exc, where, Entry))
            continue
        if entry.say is None and entry.ipa is None:
            problems.append(located.problem(where, "give `say:` (a respelling), `ipa:` (phonemes) or both"))
            continue
        entries.append(LexiconEntry(unicodedata.normalize("NFC", term), entry.say, entry.ipa, entry.ignore_case,
                                    located.problem(where, "")))
    return entries, problems


def load_shared(folder: Path) -> tuple[list[LexiconEntry], list[Problem]]:
    """The entries of `lexicon.yaml` in a folder (none when there is no such file)."""
    path = folder / LEXICON_FILENAME
    if not path.is_file():
        return [], []
    try:
        located = load_located(path, "lexicon")
    except ManifestError as exc:
        return [], list(exc.problems)
    return parse(located.data, located, ())


def merged(shared: Iterable[LexiconEntry], course: Iterable[LexiconEntry]) -> Lexicon:
    """The course's entries over the shared ones (same term, same case rule: the course's wins)."""
    by_term = {(entry.term if not entry.ignore_case else entry.term.lower()): entry for entry in shared}
    by_term.update({(entry.term if not entry.ignore_case else entry.term.lower()): entry for entry in course})
    return Lexicon(tuple(sorted(by_term.values(), key=lambda entry: entry.term)))


# --------------------------------------------------------------------------- lexicon check

# Words no lexicon entry is for: a recogniser that drops or swaps one of these is noise, not a term.
_FUNCTION_WORDS = frozenset("a an the of to in on at by for and or but is are was were be been it its this that these "
                            "those with as from so if than then".split())


@dataclass
class Misheard:
    """A written term the recogniser did not hear as spoken, over the takes checked."""

    term: str
    spoken: int = 0
    """How many times the takes said it."""
    misheard: int = 0
    heard_instead: dict[str, int] = field(default_factory=dict)
    """What the recogniser wrote in its place (empty: nothing), and how often."""
    clips: list[str] = field(default_factory=list)
    in_lexicon: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"term": self.term, "misheard": self.misheard, "spoken": self.spoken,
                "heard_instead": self.heard_instead, "clips": self.clips, "in_lexicon": self.in_lexicon}


def _term(word: str) -> str:
    """A written word as a lexicon term: without the punctuation around it or a possessive."""
    return re.sub(r"['’]s$", "", re.sub(r"^\W+|\W+$", "", word))


def misheard_terms(hearings: Iterable[tuple[str, Sequence[tuple[str, str]], str]], lexicon: Lexicon) -> list[Misheard]:
    """Terms the recogniser misheard, most often misheard first.

    `hearings`: per take, the clip id, the script as (written word, what it should be heard as)
    pairs (narro.text.Speech.words) and the transcript. Both sides are compared as the quality
    gate compares them (narro.wer.normalise), so numbers and spellings are no error; a compound
    the recogniser only split or joined differently is none either.
    """
    from narro.wer import normalise as words_of

    found: dict[str, Misheard] = {}
    for clip_id, script, transcript in hearings:
        tokens: list[str] = []
        owners: list[int] = []
        for index, (_, heard) in enumerate(script):
            for token in words_of(heard):
                tokens.append(token)
                owners.append(index)
        terms = [_term(written) for written, _ in script]
        for term in terms:
            if term and any(ch.isalpha() for ch in term):
                found.setdefault(term.casefold(), Misheard(term)).spoken += 1
        hypothesis = words_of(transcript)
        for tag, i1, i2, j1, j2 in SequenceMatcher(a=tokens, b=hypothesis, autojunk=False).get_opcodes():
            if tag == "equal" or "".join(tokens[i1:i2]) == "".join(hypothesis[j1:j2]):
                continue
            for index in dict.fromkeys(owners[i1:i2]):
                if set(words_of(script[index][1])) <= _FUNCTION_WORDS or terms[index].casefold() not in found:
                    continue
                entry = found[terms[index].casefold()]
                entry.misheard += 1
                instead = " ".join(hypothesis[j1:j2])
                entry.heard_instead[instead] = entry.heard_instead.get(instead, 0) + 1
                if clip_id not in entry.clips:
                    entry.clips.append(clip_id)
    out = [entry for entry in found.values() if entry.misheard]
    for entry in out:
        entry.in_lexicon = bool(lexicon.found_in(entry.term))
    return sorted(out, key=lambda entry: (-entry.misheard, -entry.misheard / entry.spoken, entry.term.casefold()))
