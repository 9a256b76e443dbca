"""A clip's WebVTT captions read back for the clip page: cues with their times and lines of text."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

_TIMING = re.compile(r"^(\d+:)?(\d{1,2}):(\d{2})[.,](\d{3})\s+-->\s+(\d+:)?(\d{1,2}):(\d{2})[.,](\d{3})")


@dataclass(frozen=True)
class CaptionCue:
    start_s: float
    end_s: float
    lines: tuple[str, ...]


def _seconds(hours: str | None, minutes: str, seconds: str, millis: str) -> float:
    return int((hours or "0:")[:-1]) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def caption_cues(vtt: str) -> list[CaptionCue]:
    """The cues of a WebVTT file (narro.captions writes them), text unescaped; blocks without a timing are skipped."""
    cues = []
    for block in re.split(r"\n\s*\n", vtt.replace("\r\n", "\n").strip()):
        lines = block.split("\n")
        for index, line in enumerate(lines):
            timing = _TIMING.match(line.strip())
            if timing:
                parts = timing.groups()
                text = tuple(html.unescape(re.sub(r"<[^>]*>", "", t)) for t in lines[index + 1:] if t.strip())
                cues.append(CaptionCue(_seconds(*parts[:4]), _seconds(*parts[4:]), text))
                break
    return cues
