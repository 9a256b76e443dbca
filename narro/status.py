"""`narro status COURSE`: a course as the catalogue has it, one page at a time.

Whatever the course's size, a page costs the same few indexed queries (narro.catalogue:
`status_counts`, `clip_page`, `attempts_of`, `verdicts_of`) and reads no sidecar. The default
table fits an 80-column terminal (clip, state, a short verdict); `wide` shows every column;
`--json` prints every clip in full unless a page is asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from narro.catalogue import FAILED, RENDERED, AttemptState, Catalogue, ClipState
from narro.report import published_and_failed, published_figures
from narro.review import describe as describe_verdict

PAGE_SIZE = 50
"""Clips a table shows when no --limit is given."""
COLOURS = {RENDERED: "green", FAILED: "red"}


@dataclass(frozen=True)
class Page:
    """What one `narro status` answer shows: a page of clips and the course's counts."""

    course: str
    clips: list[ClipState]
    total: int
    """Clips matching the filter, on every page."""
    offset: int
    counts: dict[str, int]
    """Clips per status in the whole course, and `fallback` (Catalogue.status_counts)."""
    figures: dict[str, dict[str, Any]]
    """Per clip on the page: the published take's figures and an attempt failed after it (narro.report)."""
    reviews: dict[str, str]
    """Per clip on the page with a verdict: the verdict in words (narro.review)."""

    @property
    def failed(self) -> bool:
        return bool(self.counts.get(FAILED))


def read_page(catalogue: Catalogue, course: str, *, offset: int, limit: int | None, failed_only: bool) -> Page:
    """The page of `course` from `offset` (`limit` None: to the end): five queries whatever its size."""
    counts = catalogue.status_counts(course)
    clips, total = catalogue.clip_page(course, offset=offset, limit=limit, failed_only=failed_only)
    ids = [clip.narration_id for clip in clips]
    if limit is None:  # the rest of the course: read its histories whole rather than name every clip
        history, verdicts = catalogue.course_attempts(course), catalogue.verdicts(course)
    else:
        history, verdicts = catalogue.attempts_of(course, ids), catalogue.verdicts_of(course, ids)
    figures = published_figures(clips, history)
    reviews = {clip.narration_id: describe_verdict(verdicts.get(clip.narration_id), clip.published_key)
               for clip in clips}
    return Page(course, clips, total, offset, counts, figures, {k: v for k, v in reviews.items() if v})


def page_json(page: Page, *, complete: bool) -> str:
    """Every clip of the page with its published take's figures; `complete` False adds where the page sits."""
    clips = [{**clip.as_dict(), "qa": page.figures[clip.narration_id]["published"],
              "failed_after": page.figures[clip.narration_id]["failed_after"],
              "review": page.reviews.get(clip.narration_id)} for clip in page.clips]
    answer: dict[str, Any] = {"course": page.course, "clips": clips, "counts": page.counts}
    if not complete:
        answer.update(offset=page.offset, total=page.total)
    return json.dumps(answer, indent=2)


def print_compact(console: Console, page: Page) -> None:
    """One line per clip (clip, state, verdict) in the console's width (80 in a pipe): ids and states whole,
    since an id is what --clip takes, and the verdict cut with an ellipsis to what is left."""
    id_width = max([len(clip.narration_id) for clip in page.clips] + [4])
    state_width = max([len(clip.status) for clip in page.clips] + [5])
    room = max(12, console.width - id_width - state_width - 4)
    console.print(f"[bold]{escape(page.course)}[/]", highlight=False)
    console.print(f"[dim]{'clip':<{id_width}}  {'state':<{state_width}}  verdict[/]", highlight=False)
    for clip in page.clips:
        said = verdict(clip, page.figures.get(clip.narration_id, {}), page.reviews.get(clip.narration_id))
        said = said if len(said) <= room else said[:room - 1] + "…"
        colour = COLOURS.get(clip.status, "yellow")
        console.print(f"{escape(clip.narration_id):<{id_width}}  [{colour}]{clip.status:<{state_width}}[/]  "
                      f"{escape(said)}", highlight=False, soft_wrap=True)
    _print_footer(console, page)


def print_wide(console: Console, page: Page) -> None:
    """Every column: tier, voice, duration, loudness, peak, WER, wpm, tries and notes, folded to fit."""
    table = Table(title=page.course, title_justify="left")
    for column, justify in (("clip", "left"), ("status", "left"), ("tier", "left"), ("voice", "left"),
                            ("duration", "right"), ("LUFS", "right"), ("dBTP", "right"), ("WER", "right"),
                            ("wpm", "right"), ("tries", "right"), ("notes", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for clip in page.clips:
        colour = COLOURS.get(clip.status, "yellow")
        figures = page.figures.get(clip.narration_id, {})
        published = figures.get("published") or {}
        voice = escape(clip.voice)
        if clip.fallback:
            voice += f"\n[yellow]fallback: {escape(clip.fallback.partition(': ')[0])}[/]"
        table.add_row(
            clip.narration_id, f"[{colour}]{clip.status}[/]", clip.tier, voice,
            f"{clip.duration_s:.1f} s" if clip.duration_s else "", number(clip.loudness_lufs),
            number(clip.true_peak_dbtp), percent(published.get("wer")), whole(published.get("wpm")),
            str(clip.attempts), escape(notes(clip, figures.get("failed_after"), page.reviews.get(clip.narration_id))),
        )
    console.print(table)
    _print_footer(console, page)


def _print_footer(console: Console, page: Page) -> None:
    """The course's counts, then which clips the page leaves out and how to see them."""
    statuses = {status: n for status, n in sorted(page.counts.items()) if status != "fallback"}
    fallbacks = page.counts.get("fallback", 0)
    console.print(", ".join(f"{n} {status}" for status, n in statuses.items())
                  + (f"; {fallbacks} spoken by the fallback voice" if fallbacks else ""), highlight=False)
    hidden = page.total - len(page.clips)
    if hidden > 0:
        shown = f"this is {page.offset + 1}-{page.offset + len(page.clips)}" if page.clips else "past the end"
        console.print(f"{hidden} of {page.total} not shown ({shown}): --page N, or --limit 0 for all", highlight=False)


def verdict(clip: ClipState, figures: dict[str, Any], review: str | None = None) -> str:
    """A clip in a few words: why it failed, or its published take's WER and what else to know."""
    if clip.status == FAILED:
        said = clip.last_error or "failed"
    elif clip.status == RENDERED:
        published = figures.get("published") or {}
        said = f"WER {percent(published['wer'])}" if published.get("wer") is not None else "published"
        failed_after = figures.get("failed_after")
        if failed_after is not None:
            said += f"; attempt {failed_after['attempt']} failed after it"
    else:
        said = f"run {clip.run_id}" if clip.run_id else ""
    if clip.fallback:
        said += f"; fallback: {clip.fallback.partition(': ')[0]}"
    if review:
        said += f"; {review}"
    return said.removeprefix("; ")


def notes(clip: ClipState, failed_after: dict | None, review: str | None = None) -> str:
    """The wide table's notes: why it failed, who spoke it instead, an attempt that failed after the published take."""
    said = []
    if clip.status == FAILED:
        said.append(clip.last_error or "failed")
    elif failed_after is not None:
        wer = f" (WER {percent(failed_after['wer'])})" if failed_after.get("wer") is not None else ""
        said.append(f"attempt {failed_after['attempt']} failed after the published take{wer}: "
                    f"{failed_after.get('error') or 'failed'}; the published take stays")
    if clip.fallback:
        said.append(f"fallback: {fallback_words(clip.fallback)}")
    if review:
        said.append(f"review: {review}")
    return "; ".join(said)


def print_clip(clip: ClipState, attempts: list[AttemptState], as_json: bool) -> None:
    """`status --clip`: one clip, its attempts, each check in words, and the script against what was heard."""
    from narro.wer import marked

    figures = published_figures([clip], {clip.narration_id: attempts})[clip.narration_id]
    if as_json:
        print(json.dumps({**clip.as_dict(), "qa": figures["published"], "failed_after": figures["failed_after"],
                          "attempts": [{"number": a.number, "run_id": a.run_id, "status": a.status, "error": a.error,
                                        "engine": a.engine, "metrics": a.metrics} for a in attempts]}, indent=2))
        return
    print(f"{clip.course}/{clip.narration_id}: {clip.status}, voice {clip.voice} ({clip.tier}), "
          f"{clip.attempts} attempt{'s' if clip.attempts != 1 else ''}")
    if clip.fallback:
        print(f"fallback: {fallback_words(clip.fallback)}")
    if clip.last_error and clip.status == FAILED:
        print(f"last error: {clip.last_error}")
    published, _ = published_and_failed(attempts, clip)
    print(f"published take: attempt {published.number}" if published else "published take: none")
    for attempt in attempts:
        metrics = attempt.metrics or {}
        label = "published" if published and attempt.number == published.number else attempt.status
        print(f"\nattempt {attempt.number} ({label}, run {attempt.run_id}, take {metrics.get('take', '?')}: "
              f"{metrics.get('variant', '')}){': ' + attempt.error if attempt.error else ''}")
        checks = (metrics.get("qa") or {}).get("checks") or {}
        for name, check in checks.items():
            passed = "passed" if check.get("passed") else "FAILED"
            value = check.get("value")
            shown = f"{value:.3g}" if isinstance(value, (int, float)) else str(value)
            print(f"  {name}: {shown}, must be {check.get('threshold')}: {passed} ({check.get('reason', '')})")
        qa = metrics.get("qa") or {}
        if qa.get("transcript") is not None and qa.get("script"):
            print(f"  heard vs script ([-not heard-] {{+heard instead+}}): {marked(qa['script'], qa['transcript'])}")


def fallback_words(record: str | None) -> str:
    """'piper:joe-us-medium: edge-tts service unreachable: ...' as 'piper:joe-us-medium spoke it: why'."""
    voice, _, reason = (record or "").partition(": ")
    return f"{voice} spoke it: {reason}" if reason else voice


def percent(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else ""


def whole(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else ""


def number(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else ""
