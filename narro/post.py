"""How every clip is finished after synthesis: the settings alone, apart from the transforms.

Planning keys every clip by these settings, and must not load the signal processing in
narro.audio (scipy, pyloudnorm) to do it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from narro.settings import Settings


@dataclass(frozen=True)
class PostSettings:
    """How every clip is finished; all of it is part of the content key."""

    target_lufs: float = -16.0
    """Integrated loudness target (BS.1770), the podcast/e-learning norm."""
    true_peak_dbtp: float = -1.5
    """Ceiling for the true peak of the published MP3."""
    pad_s: float = 0.25
    """Silence kept before the first and after the last word."""
    silence_floor_db: float = 40.0
    """Frames this many dB below the loudest frame count as silence when trimming."""
    bitrate_kbps: int = 96
    """MP3 bitrate (mono)."""
    watermark_org: int = 0x6E
    """Organisation byte of the watermark payload (settings.watermark.org_id): another id is another mark,
    so it re-renders every clip, and a spec carries the id it was planned with to whichever worker renders it."""

    @classmethod
    def of(cls, settings: Settings) -> PostSettings:
        """The post-processing settings a run with `settings` keys and finishes its clips with."""
        return cls(watermark_org=settings.watermark.org_id)

    def as_dict(self) -> dict[str, object]:
        return dict(self._fields)  # a copy: the caller may change it

    @cached_property
    def _fields(self) -> dict[str, object]:
        """Worked out once per settings object: every clip's key and sidecar asks (10,000 times a plan)."""
        return asdict(self)
