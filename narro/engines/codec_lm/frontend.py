"""Text to phoneme ids for the codec LM: the espeak-ng that piper bundles, and a vocabulary.

API:

    vocab = Vocabulary.default()          # piper's IPA symbols plus <pad> <bos> <eos> <unk>
    vocab = Vocabulary.model_validate(d)  # from a checkpoint's config.json; vocab.model_dump() to store it
    len(vocab), vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id   # bos/eos/unk may be None
    frontend = Frontend(vocab)
    frontend.phonemes(text) -> list[str]  # espeak symbols (NFD codepoints), words split by " "
    frontend.encode(text) -> Encoded(ids: np.int64 [S], phonemes: int, unknown: int)
    join_text(vocab, reference_ids, text_ids) -> np.int64   # the prompted model's text

Text arrives normalised by narro.text (numbers and symbols spelled out), so espeak only turns
words into phonemes. The vocabulary is stored in every checkpoint, so a model is always fed the
symbols it was trained on; `aliases` map espeak symbols a vocabulary lacks onto ones it has (a
converted checkpoint was trained on another phonemiser's output), and `dark_l` marks a
word-final l as dark, as VALL-E-X's English front end does.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

TERMINATORS = ".!?,;:…"
_DARK_L_VOWELS = set("aeiouæɑɔəɛɪʊ")


class Vocabulary(BaseModel):
    """Phoneme symbols and their ids (the id of a symbol is its index in `symbols`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    symbols: list[str] = Field(min_length=1)
    """Every symbol the model knows, in id order; special tokens included."""
    pad: str
    """Symbol that pads a batch."""
    bos: str | None = None
    """Symbol put before every text, if any."""
    eos: str | None = None
    """Symbol put after every text, if any."""
    unk: str | None = None
    """Symbol for a phoneme the vocabulary lacks; None drops such phonemes."""
    space: str = " "
    """Symbol for a word break."""
    aliases: dict[str, str] = {}
    """espeak symbol (or sequence) -> replacement symbols, applied before lookup; '' drops it."""
    dark_l: bool = False
    """Write an l with no vowel after it in its word as ɫ."""
    espeak_voice: str = "en-us"
    """espeak-ng voice that phonemises the text."""
    language: str = "en"
    """Language code of the text, one of the model's `languages`."""

    _index: dict[str, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Vocabulary:
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols repeat")
        for field in ("pad", "bos", "eos", "unk", "space"):
            value = getattr(self, field)
            if value is not None and value not in self.symbols:
                raise ValueError(f"{field} symbol {value!r} is not among the symbols")
        self._index.update({symbol: index for index, symbol in enumerate(self.symbols)})
        return self

    @classmethod
    def default(cls, espeak_voice: str = "en-us", language: str = "en") -> Vocabulary:
        """piper's phoneme symbols (every single-codepoint one) after four special tokens."""
        from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

        specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
        # piper uses _ ^ $ as its own pad/bos/eos; here they are ordinary symbols that espeak never emits.
        phonemes = [s for s in DEFAULT_PHONEME_ID_MAP if len(s) == 1 and s not in "_^$"]
        return cls(symbols=specials + phonemes, pad="<pad>", bos="<bos>", eos="<eos>", unk="<unk>",
                   espeak_voice=espeak_voice, language=language)

    def __len__(self) -> int:
        return len(self.symbols)

    def id(self, symbol: str | None) -> int | None:
        return None if symbol is None else self._index[symbol]

    @property
    def pad_id(self) -> int:
        return self._index[self.pad]

    @property
    def bos_id(self) -> int | None:
        return self.id(self.bos)

    @property
    def eos_id(self) -> int | None:
        return self.id(self.eos)

    @property
    def unk_id(self) -> int | None:
        return self.id(self.unk)

    def encode_phonemes(self, phonemes: list[str]) -> Encoded:
        """Ids of espeak symbols: aliases, dark l, word breaks, unknowns, then bos/eos."""
        text = "".join(phonemes)
        for source in sorted(self.aliases, key=len, reverse=True):
            text = text.replace(source, self.aliases[source])
        if self.dark_l:
            text = _mark_dark_l(text)
        if text and text[-1] not in TERMINATORS:
            text += "."  # a text ending without punctuation is spoken as a statement
        ids: list[int] = []
        unknown = 0
        for symbol in text:
            symbol = self.space if symbol == " " else symbol
            index = self._index.get(symbol)
            if index is None:
                unknown += 1
                if self.unk is None:
                    continue
                index = self._index[self.unk]
            ids.append(index)
        count = len(ids)
        ids = ([self._index[self.bos]] if self.bos else []) + ids + ([self._index[self.eos]] if self.eos else [])
        return Encoded(np.asarray(ids, dtype=np.int64), count, unknown)


@dataclass(frozen=True)
class Encoded:
    ids: np.ndarray
    """int64 [S], bos/eos included."""
    phonemes: int
    """Symbols spoken (ids without bos/eos): what the frame cap is derived from."""
    unknown: int
    """espeak symbols the vocabulary lacked (mapped to unk or dropped)."""


def join_text(vocabulary: Vocabulary, reference: np.ndarray, text: np.ndarray) -> np.ndarray:
    """The model's text for a prompted utterance: [reference ; text] read as one utterance.

    With bos/eos (narro-trained models) the inner eos and bos go and a word break joins the
    two; without them (VALL-E-X) the two are simply concatenated, as that model was prompted.
    """
    if vocabulary.eos is not None and len(reference) and reference[-1] == vocabulary.eos_id:
        reference = reference[:-1]
    if vocabulary.bos is not None and len(text) and text[0] == vocabulary.bos_id:
        text = text[1:]
    joint = [vocabulary.id(vocabulary.space)] if vocabulary.bos is not None or vocabulary.eos is not None else []
    return np.concatenate([reference, np.asarray(joint, dtype=np.int64), text]).astype(np.int64)


def _mark_dark_l(text: str) -> str:
    words = text.split(" ")
    marked = []
    for word in words:
        chars = list(word)
        for index, char in enumerate(chars):
            if char == "l" and not any(c in _DARK_L_VOWELS for c in chars[index + 1:]):
                chars[index] = "ɫ"
        marked.append("".join(chars))
    return " ".join(marked)


def espeak_phonemes(text: str, voice: str) -> list[str]:
    """espeak-ng's IPA for `text` as single codepoints, sentences joined by a word break."""
    from piper import voice as piper_voice
    from piper.phonemize_espeak import EspeakPhonemizer

    # espeak-ng keeps one global state (the selected voice), shared with the piper engine in the
    # same process: calls go through piper's own lock and phonemiser.
    with piper_voice._ESPEAK_PHONEMIZER_LOCK:
        if piper_voice._ESPEAK_PHONEMIZER is None:
            piper_voice._ESPEAK_PHONEMIZER = EspeakPhonemizer()
        sentences = piper_voice._ESPEAK_PHONEMIZER.phonemize(voice, text)
    symbols: list[str] = []
    for sentence in sentences:
        if symbols and symbols[-1] != " ":
            symbols.append(" ")
        symbols.extend(unicodedata.normalize("NFD", s) for s in sentence)
    return [c for s in symbols for c in s]


class Frontend:
    """Normalised text to model input ids for one vocabulary."""

    def __init__(self, vocabulary: Vocabulary):
        self.vocabulary = vocabulary

    def phonemes(self, text: str) -> list[str]:
        return espeak_phonemes(text, self.vocabulary.espeak_voice)

    def encode(self, text: str) -> Encoded:
        return self.vocabulary.encode_phonemes(self.phonemes(text))
