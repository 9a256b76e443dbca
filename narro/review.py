"""Review by ear: a reviewer's verdict on a clip, which holds for the audio it was given on.

A verdict (approved, or flagged with a note such as "says 'Volley' for VALL-E") is given on the
audio now published and holds only for that audio: the catalogue keeps the published key it was
given on, and once a render publishes other audio the clip needs review again (the earlier
verdict is kept, to say what was flagged). From a flag, the reviewer fixes the term in the
course's lexicon (narro.lexicon_edit) and re-renders the clips that contain it.
"""

from __future__ import annotations

from narro.catalogue import APPROVED, FLAGGED, VerdictState
from narro.errors import NarroError

UNREVIEWED = "unreviewed"
REVIEW_AGAIN = "review again"
"""A verdict was given on audio that has since been replaced."""
MAX_NOTE = 500


class ReviewError(NarroError):
    """A verdict cannot be recorded as asked (nothing published, audio changed, no note on a flag)."""


def standing(verdict: VerdictState | None, published_key: str | None) -> str:
    """approved, flagged, unreviewed, or review again (the verdict was on audio since replaced)."""
    if verdict is None or published_key is None:
        return UNREVIEWED
    return verdict.verdict if verdict.content_key == published_key else REVIEW_AGAIN


def describe(verdict: VerdictState | None, published_key: str | None) -> str:
    """The verdict in words for a table cell or a report: `flagged: says 'Volley' for VALL-E`."""
    state = standing(verdict, published_key)
    if state == UNREVIEWED or verdict is None:
        return ""
    said = f"{verdict.verdict}: {verdict.note}" if verdict.note else verdict.verdict
    return said if state != REVIEW_AGAIN else f"review again (audio changed; was {said})"


def check_verdict(verdict: str, note: str, shown_key: str | None, published_key: str | None) -> str:
    """The note to record, or ReviewError: a flag says what is wrong, and the verdict is on the audio now published.

    `shown_key`: the published key of the audio the reviewer listened to (the page's), so a verdict
    given on a page loaded before a re-render is refused instead of landing on the new audio.
    """
    if verdict not in (APPROVED, FLAGGED):
        raise ReviewError(f"unknown verdict '{verdict}': approve or flag the clip")
    if published_key is None:
        raise ReviewError("nothing is published for this clip yet: there is no audio to review")
    if shown_key != published_key:
        raise ReviewError("the clip's audio changed since this page was loaded: listen to it again, then review")
    note = " ".join(note.split())
    if verdict == FLAGGED and not note:
        raise ReviewError("say what is wrong in the note (e.g. \"says 'Volley' for VALL-E\")")
    if len(note) > MAX_NOTE:
        raise ReviewError(f"the note is {len(note)} characters long; keep it under {MAX_NOTE}")
    return note
