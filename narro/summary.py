"""What `narro render` prints when a run ends: the counts, the fallbacks, the failures and the QA table.

Everything comes from the run's summary (narro.batch.conclude), which read the catalogue once
for the clips and their attempts; nothing here queries the catalogue again.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from narro.batch import Summary
from narro.report import latest_qa
from narro.status import fallback_words, number, percent, whole


def print_summary(console: Console, summary: Summary, elapsed_s: float) -> None:
    audio_s = sum(c.duration_s or 0 for c in summary.rendered + summary.cached)
    table = Table(title=f"{summary.course}: run {summary.run_id}", title_justify="left")
    for column in ("rendered", "unchanged", "failed", "by fallback voice", "audio", "wall time"):
        table.add_column(column, justify="right")
    fallbacks = summary.fallbacks
    table.add_row(str(len(summary.rendered)), str(len(summary.cached)),
                  f"[red]{len(summary.failed)}[/]" if summary.failed else "0",
                  f"[yellow]{len(fallbacks)}[/]" if fallbacks else "0", _minutes(audio_s), f"{elapsed_s:.1f} s")
    console.print(table)
    if summary.retagged:  # title-only changes: counted as unchanged above, their audio is
        console.print(f"retagged {len(summary.retagged)} (title changed; new ID3 title, same audio): "
                      f"{', '.join(c.narration_id for c in summary.retagged)}", highlight=False)
    if fallbacks:
        console.print("[yellow]spoken by the fallback voice, not the voice the manifest asks for:[/]")
        for clip in fallbacks:
            console.print(f"  [yellow]{clip.narration_id}[/] ({clip.voice}): {escape(fallback_words(clip.fallback))}",
                          highlight=False)
        console.print(f"{len(fallbacks)} clip(s) are rendered again once their own voice answers (each render asks "
                      "it first), or now with --retry-fallbacks.", highlight=False)
    if summary.rendered:
        loudness = [c.loudness_lufs for c in summary.rendered if c.loudness_lufs is not None]
        peaks = [c.true_peak_dbtp for c in summary.rendered if c.true_peak_dbtp is not None]
        if loudness:
            console.print(f"loudness {min(loudness):.1f} to {max(loudness):.1f} LUFS, true peak at most "
                          f"{max(peaks):.1f} dBTP", highlight=False)
    if summary.failed:
        console.print("failed clips:")
        for clip in summary.failed:  # one line each, never folded: it greps, and the log file has the rest
            tries = f"{clip.attempts} attempt{'s' if clip.attempts != 1 else ''}"
            console.print(f"  [red]{clip.narration_id}[/] ({tries}): {escape(clip.last_error or 'unknown')}",
                          highlight=False)
        console.print(f"{len(summary.failed)} clip(s) failed; fix the cause and run the same command again: "
                      "only the failed and changed clips are rendered.", highlight=False)


def print_qa(console: Console, summary: Summary) -> None:
    """The quality gate's figures for the clips this run rendered or failed (narro.qa)."""
    ids = [c.narration_id for c in summary.rendered + summary.failed]
    figures = latest_qa(summary.history, ids)
    if not figures:
        return
    table = Table(title="quality gate", title_justify="left")
    for column in ("clip", "WER", "wpm", "LUFS", "takes", "verdict"):
        table.add_column(column, justify="left" if column in ("clip", "verdict") else "right", overflow="fold")
    for narration_id in ids:
        if narration_id not in figures:
            continue
        qa = figures[narration_id]
        verdict = "[green]passed[/]" if qa["passed"] else f"[red]failed: {', '.join(qa['failed'])}[/]"
        table.add_row(narration_id, percent(qa["wer"]), whole(qa["wpm"]), number(qa["loudness_lufs"]),
                      str(qa["takes_in_run"]), verdict)
    console.print(table)
    wers = sorted(q["wer"] for q in figures.values() if q["wer"] is not None)
    if wers:
        console.print(f"WER median {percent(wers[len(wers) // 2])}, worst {percent(wers[-1])}; "
                      f"{sum(q['takes_in_run'] > 1 for q in figures.values())} clip(s) needed more than one take; "
                      f"report: {summary.course}/report.html in the store", highlight=False)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
