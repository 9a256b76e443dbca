"""The course report: one self-contained HTML file (inline SVG, no scripts, no CDN).

A table of clips with their QA figures and two small charts, loudness and WER per clip, with
the target band and threshold drawn, so a producer sees the outliers at a glance. Built from the
run's one read of the catalogue (narro.catalogue.CourseResults: each clip's state and the
figures of its published take); a sidecar is read only for a clip published before this
catalogue kept its takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from narro.catalogue import FAILED, RENDERED, AttemptState, ClipState, CourseResults
from narro.review import describe

if TYPE_CHECKING:  # `narro status` reads figures from here without planning's imports
    from narro.plan import ClipSpec
    from narro.settings import QaSettings
    from narro.store import Store

REPORT_NAME = "report.html"


@dataclass(frozen=True)
class ClipRow:
    id: str
    title: str
    status: str
    duration_s: float | None
    loudness_lufs: float | None
    true_peak_dbtp: float | None
    wer: float | None
    wpm: float | None
    takes: int | None
    note: str
    review: str = ""
    """The reviewer's verdict in words (narro.review.describe), empty when none was given."""


def _rows(specs: list[ClipSpec], results: CourseResults, store: Store) -> list[ClipRow]:
    rows = []
    for spec in specs:
        state = results.clips.get(spec.narration_id)
        history = results.history.get(spec.narration_id, [])
        published = published_and_failed(history, state)[0] if state else None
        if published is not None:
            metrics = published.metrics or {}
            wer, wpm, take = metrics.get("wer"), metrics.get("wpm"), metrics.get("take")
            earlier = [f"take {(a.metrics or {}).get('take', '?')}: {a.error}" for a in history
                       if a.run_id == published.run_id and a.number < published.number and a.status == FAILED]
        elif state is not None and state.published_key is not None:
            # Published before this catalogue kept its takes: the sidecar has the figures.
            qa = (store.read_sidecar(spec.course, spec.narration_id) or {}).get("qa") or {}
            wer, wpm, take = qa.get("wer"), qa.get("wpm"), qa.get("take")
            earlier = [f"take {t['take']}: {t['failed']}" for t in qa.get("takes", []) if not t.get("passed")]
        else:
            wer = wpm = take = None
            earlier = []
        status = state.status if state else "unknown"
        note = (state.last_error or "") if state and status == FAILED else "; ".join(earlier)
        rows.append(ClipRow(spec.narration_id, spec.title, status, state.duration_s if state else None,
                            state.loudness_lufs if state else None, state.true_peak_dbtp if state else None,
                            wer, wpm, take, note,
                            describe(results.verdicts.get(spec.narration_id), state.published_key if state else None)))
    return rows


def _chart(rows: list[ClipRow], values: list[float | None], title: str, unit: str, low: float, high: float,
           band: tuple[float, float], fmt: str) -> str:
    """A dot per clip on a value axis, the acceptable band shaded; points outside it in red."""
    width, height, left, top, bottom = 640, 150, 48, 22, 26
    inner_w, inner_h = width - left - 10, height - top - bottom
    step = inner_w / max(1, len(rows))

    def y(value: float) -> float:
        clamped = min(max(value, low), high)
        return top + inner_h * (1 - (clamped - low) / (high - low))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<text x="{left}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>',
             f'<rect x="{left}" y="{y(band[1]):.1f}" width="{inner_w}" height="{y(band[0]) - y(band[1]):.1f}" '
             'fill="#dff0d8"/>']
    for tick in (low, (low + high) / 2, high):
        parts.append(f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end">'
                     f'{format(tick, fmt)}{unit}</text>')
        parts.append(f'<line x1="{left}" x2="{left + inner_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>')
    for index, (row, value) in enumerate(zip(rows, values)):
        x = left + step * (index + 0.5)
        if value is None:
            parts.append(f'<text x="{x:.1f}" y="{top + inner_h / 2:.1f}" font-size="10" text-anchor="middle" '
                         f'fill="#999">–</text>')
            continue
        outside = not band[0] <= value <= band[1]
        colour = "#c0392b" if outside else "#2c7a2c"
        parts.append(f'<circle cx="{x:.1f}" cy="{y(value):.1f}" r="4" fill="{colour}">'
                     f'<title>{escape(row.id)}: {format(value, fmt)}{unit}</title></circle>')
        if len(rows) <= 40:
            parts.append(f'<text x="{x:.1f}" y="{height - 8}" font-size="9" text-anchor="middle">{index + 1}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cell(value: float | None, fmt: str, bad: bool = False) -> str:
    if value is None:
        return "<td></td>"
    style = ' class="bad"' if bad else ""
    return f"<td{style}>{format(value, fmt)}</td>"


def course_report(specs: list[ClipSpec], results: CourseResults, store: Store, settings: QaSettings) -> str:
    """The HTML report of a course's clips as the catalogue has them (`results`: one read of it)."""
    rows = _rows(specs, results, store)
    course = specs[0].course if specs else ""
    target = specs[0].post.target_lufs if specs else -16.0
    tolerance = settings.loudness_tolerance_lu
    loudness = _chart(rows, [r.loudness_lufs for r in rows], "Integrated loudness per clip", " LUFS",
                      target - 4, target + 4, (target - tolerance, target + tolerance), ".0f")
    wer = _chart(rows, [r.wer * 100 if r.wer is not None else None for r in rows], "Word error rate per clip (ASR)",
                 "%", 0, 50, (0, settings.max_wer * 100), ".0f")
    body = []
    for index, row in enumerate(rows, 1):
        loud_bad = row.loudness_lufs is not None and abs(row.loudness_lufs - target) > tolerance
        wer_bad = row.wer is not None and row.wer > settings.max_wer
        status = f'<td class="{"bad" if row.status == "failed" else ""}">{escape(row.status)}</td>'
        body.append(
            f"<tr><td>{index}</td><td>{escape(row.id)}</td><td>{escape(row.title)}</td>{status}"
            f"{_cell(row.duration_s, '.1f')}{_cell(row.loudness_lufs, '.1f', loud_bad)}"
            f"{_cell(row.true_peak_dbtp, '.1f')}{_cell(row.wer * 100 if row.wer is not None else None, '.1f', wer_bad)}"
            f"{_cell(row.wpm, '.0f')}<td>{row.takes or ''}</td><td class=\"note\">{escape(row.note)}</td>"
            f"<td class=\"note{' bad' if row.review.startswith('flagged') else ''}\">{escape(row.review)}</td></tr>"
        )
    failed = sum(r.status == "failed" for r in rows)
    flagged = sum(r.review.startswith("flagged") for r in rows)
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>narro QA report: {escape(course)}</title>
<style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin-top:16px}}
td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}}
td:nth-child(2),td:nth-child(3),td:nth-child(4),td.note,th{{text-align:left}} td.note{{max-width:420px;font-size:12px}}
.bad{{color:#c0392b;font-weight:bold}} svg{{display:block;margin:8px 0}}
</style></head><body>
<h1>QA report: {escape(course)}</h1>
<p>{len(rows)} clips, {failed} failed, {flagged} flagged by a reviewer. Loudness target {target:g} LUFS ± {tolerance:g} LU; WER at most
{settings.max_wer:.0%} (tiny.en round trip after normalisation). Generated {generated}.</p>
{loudness}
{wer}
<table><thead><tr><th>#</th><th>clip</th><th>title</th><th>status</th><th>duration s</th><th>LUFS</th>
<th>dBTP</th><th>WER %</th><th>wpm</th><th>take</th><th>notes (failed checks)</th><th>review</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""


def write_course_report(specs: list[ClipSpec], results: CourseResults, store: Store, settings: QaSettings) -> None:
    """Render the report and store it beside the course as `{course}/report.html`."""
    if specs:
        html = course_report(specs, results, store, settings)
        store.write_object(specs[0].course, REPORT_NAME, html.encode("utf-8"), "text/html; charset=utf-8")


def latest_qa(history: dict[str, list[AttemptState]], ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per clip of `ids`, the QA figures of its latest measured take: wer, wpm, loudness, take, takes in its run,
    passed, failed checks. `history`: the attempts of one read of the catalogue (CourseResults.history)."""
    figures: dict[str, dict[str, Any]] = {}
    for narration_id in ids:
        attempts = [a for a in history.get(narration_id, []) if a.metrics and "wer" in a.metrics]
        if not attempts:
            continue
        last = attempts[-1]
        metrics = last.metrics or {}
        figures[narration_id] = {
            "wer": metrics.get("wer"), "wpm": metrics.get("wpm"), "loudness_lufs": metrics.get("loudness_lufs"),
            "take": metrics.get("take"), "takes_in_run": sum(a.run_id == last.run_id for a in attempts),
            "passed": metrics.get("passed"), "failed": metrics.get("failed", []),
        }
    return figures


def _figures(attempt: AttemptState) -> dict[str, Any]:
    metrics = attempt.metrics or {}
    return {"attempt": attempt.number, "run_id": attempt.run_id, "wer": metrics.get("wer"), "wpm": metrics.get("wpm"),
            "loudness_lufs": metrics.get("loudness_lufs"), "take": metrics.get("take"),
            "passed": metrics.get("passed"), "failed": metrics.get("failed", []), "error": attempt.error}


def published_and_failed(attempts: list[AttemptState], state: ClipState) -> tuple[AttemptState | None,
                                                                                  AttemptState | None]:
    """The attempt whose take is published, and the attempt that failed after it (either None).

    The published take is the clip's last rendered attempt while the clip has audio in the store
    (a later failed take never replaces it); the failed one is the last attempt, when it failed
    after that (or when nothing was ever published).
    """
    rendered = [i for i, a in enumerate(attempts) if a.status == RENDERED]
    published = rendered[-1] if rendered and state.published_key is not None else None
    last = len(attempts) - 1
    failed = last >= 0 and attempts[last].status == FAILED and (published is None or last > published)
    return (attempts[published] if published is not None else None), (attempts[last] if failed else None)


def published_figures(clips: list[ClipState], history: dict[str, list[AttemptState]]) -> dict[str, dict[str, Any]]:
    """Per clip, the figures of the take now published, and of the attempt that failed after it.

    `{"published": ..., "failed_after": ...}`, either None (see `published_and_failed`). Figures:
    attempt, run_id, wer, wpm, loudness_lufs, take, passed, failed (check names), error.
    `history`: at least these clips' attempts (Catalogue.attempts_of for a page of them).
    """
    figures: dict[str, dict[str, Any]] = {}
    for state in clips:
        published, failed = published_and_failed(history.get(state.narration_id, []), state)
        figures[state.narration_id] = {"published": _figures(published) if published else None,
                                       "failed_after": _figures(failed) if failed else None}
    return figures
