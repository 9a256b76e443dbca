"""Speaking text that holds script markup (narro.markup): each part on its own, joined with the authored silences.

Text without tags goes to the engine as it is, so a script without markup sounds exactly as it
did before markup existed. A span's pace reaches engines with a pace control
(`EngineKind.pace_control`) as `synthesize(text, speed=...)`; other engines say it at their own pace.
"""

from __future__ import annotations

import re

import numpy as np

from narro import markup
from narro.engines.base import Engine, Synthesis, WordTiming
from narro.errors import SynthesisError

SENTENCE_GAP_S = 0.35
"""Silence between sentences cut apart at a tag: what piper and edge put between sentences anyway."""
WORD_GAP_S = 0.08
"""Silence where a tag cuts a sentence: a breath, not a pause."""
_SENTENCE_END = re.compile(r"[.!?…:;]['\"”’)]*$")


def speak_marked(engine: Engine, spoken: str, pace_control: bool) -> Synthesis:
    """The engine says `spoken`; tags in it become silences and paced parts (see the module doc)."""
    if not markup.marked(spoken):
        return engine.synthesize(spoken)
    parts = markup.parts(spoken)
    if not parts:
        raise SynthesisError("the text is all markup: there are no words to speak between the tags")
    chunks: list[np.ndarray] = []
    words: list[WordTiming] | None = []
    details: dict[str, object] = {}
    length, rate, engine_name, previous = 0, engine.sample_rate, "", ""
    for part in parts:
        if pace_control and part.speed != 1.0:
            synthesis = engine.synthesize(part.text, speed=part.speed)  # type: ignore[call-arg]
        else:
            synthesis = engine.synthesize(part.text)
        rate, engine_name = synthesis.sample_rate, synthesis.engine
        if previous:  # the join: the pause the text had there anyway, plus the authored one
            gap = (SENTENCE_GAP_S if _SENTENCE_END.search(previous) else WORD_GAP_S) + part.pause_before_s
            chunks.append(np.zeros(int(round(gap * rate)), dtype=np.float32))
            length += len(chunks[-1])
        if words is not None and synthesis.words is not None:
            offset = length / rate
            words += [WordTiming(w.word, w.start_s + offset, w.end_s + offset) for w in synthesis.words]
        else:
            words = None  # timings for some parts only would misplace the captions: none at all
        chunks.append(synthesis.samples.astype(np.float32, copy=False))
        length += len(chunks[-1])
        for key, value in synthesis.details.items():  # counts add up (sentences, parts, retries)
            earlier = details.get(key)
            summed = isinstance(value, int) and isinstance(earlier, int)
            details[key] = earlier + value if summed else details.get(key, value)  # type: ignore[operator]
        previous = part.text
    details["markup"] = {"parts": len(parts), "pauses_s": markup.authored_pauses(spoken)}
    return Synthesis(np.concatenate(chunks), rate, engine_name, words=words, details=details)
