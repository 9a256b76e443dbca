"""How codec tokens are drawn, and the guards on a generation (no torch here: identities need it cheaply).

API: `Sampling(temperature, top_k, top_p, seed, ...)`, `.frame_cap(phonemes, frame_rate)`,
`.min_frames(phonemes, frame_rate)`, `.identity()`. narro.engines.codec_lm.generate applies it;
its docstring explains the repetition-aware sampling and the frame cap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Sampling:
    # Defaults follow CosyVoice 2's repetition-aware sampling (top_p 0.8, top_k 25, window 10, tau_r 0.1).
    temperature: float = 1.0
    top_k: int = 25
    """0: no top-k filtering."""
    top_p: float = 0.8
    """1: no nucleus filtering."""
    seed: int = 0
    ras_window: int = 10
    """Recent tokens checked by repetition-aware sampling (0 turns it off)."""
    ras_ratio: float = 0.1
    """Share of the window a token may fill before it is drawn again from the whole distribution."""
    max_s_per_phoneme: float = 0.25
    """Frame cap: about 3x slower than ordinary English speech (12 phonemes/s)."""
    cap_margin_s: float = 1.0
    min_s_per_phoneme: float = 0.02
    """End of speech is not allowed sooner (50 phonemes/s is faster than any speech)."""

    def frame_cap(self, phonemes: int, frame_rate: int) -> int:
        return math.ceil(frame_rate * (self.max_s_per_phoneme * phonemes + self.cap_margin_s))

    def min_frames(self, phonemes: int, frame_rate: int) -> int:
        return math.floor(frame_rate * self.min_s_per_phoneme * phonemes)

    def identity(self) -> dict[str, Any]:
        return asdict(self)
