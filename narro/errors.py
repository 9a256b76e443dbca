"""Every error narro raises on purpose derives from NarroError.

The CLI turns these into messages and exit codes; nothing below the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class NarroError(Exception):
    """Base of every deliberate narro error."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located for the user."""

    file: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        return f"{where}: {self.field}: {self.message}"


class SettingsError(NarroError):
    """A setting (environment variable, project file key or flag) has a value narro cannot use; one line."""


class ManifestError(NarroError):
    """A manifest or voice registry is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class EngineUnavailable(NarroError):
    """An engine cannot be used here (missing package, model file, or service)."""


class SynthesisError(NarroError):
    """An engine was available but failed to produce usable audio for a clip."""


class AudioError(NarroError):
    """Post-processing or encoding failed, or its output broke a post-condition."""


class StoreError(NarroError):
    """The target store cannot be read or written."""


class CatalogueError(NarroError):
    """The catalogue database cannot be opened or is from an incompatible schema."""


class DashboardError(NarroError):
    """The dashboard cannot start as asked (unsafe bind, bad option), or a retry request is invalid."""


class WatermarkError(NarroError):
    """A clip's watermark could not be verified on its encoded file: the clip must not be published."""


class QualityError(NarroError):
    """No take of a clip passed the quality gate (narro.qa); the message lists each take's failed checks."""


class ReferenceAudioError(NarroError):
    """A voice's reference recording cannot prompt the quality tier (too short, silent, clipped,
    mostly non-speech, or its transcript cannot be matched to it); the message says which and why."""


class ClusterError(NarroError):
    """A cluster service could not be started, reached or stopped."""


class DatasetError(NarroError):
    """A training dataset is invalid; carries every bad row found (FILE:LINE: field: message), not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class CheckpointError(EngineUnavailable):
    """A codec-LM checkpoint folder is missing, partial, malformed, or does not match its codec or
    vocabulary; the one-line message names the file and the tensor or field at fault."""


class ConsentError(NarroError):
    """A cloned voice may not speak here: its consent record is missing, out of scope, expired or revoked, its
    reference is not the recording consented to, or its speaker is a public figure. One line naming the rule."""


class SubmitError(NarroError):
    """A course could not be handed to the Prefect server (no API, no deployment, no worker on its pool),
    or a schedule could not be made, found or removed."""
