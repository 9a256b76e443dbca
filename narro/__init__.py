"""narro: course manifests in, loudness-normalised, watermarked, quality-checked narration out.

The public surface is small; the rest of the package is internal. Names load on first use, so
`import narro` (and the light process guard, `python -m narro.procs`) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Settings": "narro.settings",
    "load_course": "narro.manifest",
    "plan": "narro.plan",
    "EngineKind": "narro.engines",
    "Synthesis": "narro.engines",
    "NarroError": "narro.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'narro' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
