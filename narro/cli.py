"""The `narro` command. Errors become messages and exit codes here and nowhere else.

Exit codes: 0 everything asked for is rendered (or valid); 1 some clips failed; 2 invalid
input (manifest, options, store or catalogue location).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from narro.catalogue import FAILED, RENDERED, Catalogue, ClipState, default_catalogue_url
from narro.errors import ManifestError, NarroError
from narro.store import open_store

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
DEFAULT_STORE = "narro-out"

# soft_wrap: lines are never broken mid-message (logs and pipes keep one line per result).
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def _fail_invalid(message: str) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(EXIT_INVALID)


def _report_manifest_error(error: ManifestError) -> None:
    for problem in error.problems:
        # Plain print: rich markup must not eat brackets in field names like narrations[3].
        print(str(problem), file=sys.stderr)
    noun = "problem" if len(error.problems) == 1 else "problems"
    print(f"{len(error.problems)} {noun} found; nothing was rendered.", file=sys.stderr)
    sys.exit(EXIT_INVALID)


catalogue_option = click.option(
    "--catalogue", "catalogue_url", default=None, metavar="URL",
    help="SQLAlchemy URL of the catalogue (default: $NARRO_CATALOGUE, else a SQLite file in ~/.local/share/narro).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="narro")
def main() -> None:
    """narro renders course narration scripts to loudness-normalised speech, in batch."""


@main.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(manifests: tuple[Path, ...]) -> None:
    """Check MANIFESTS and print every problem as FILE:LINE: field: message (exit 2 if any)."""
    from narro.manifest import load_course
    from narro.text import word_count

    problems = 0
    for path in manifests:
        try:
            course = load_course(path)
        except ManifestError as error:
            for problem in error.problems:
                print(str(problem), file=sys.stderr)
            problems += len(error.problems)
            continue
        words = sum(word_count(n.text) for n in course.narrations)
        console.print(f"{path}: ok: course {course.slug}, {len(course.narrations)} narrations, {words:,} words",
                      highlight=False)
    if problems:
        print(f"{problems} problem{'s' if problems != 1 else ''} found.", file=sys.stderr)
        sys.exit(EXIT_INVALID)


@main.command()
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--store", "store_url", default=DEFAULT_STORE, show_default=True, metavar="DIR|s3://BUCKET/PREFIX",
              help="Where clips are published: a directory, or an S3 bucket and prefix.")
@click.option("--endpoint-url", default=None, metavar="URL",
              help="S3 endpoint for S3-compatible servers (default: $NARRO_S3_ENDPOINT_URL, else $AWS_ENDPOINT_URL, else AWS).")
@catalogue_option
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Clips rendered at the same time in this process.")
@click.option("--only", multiple=True, metavar="ID", help="Render only these narration ids (repeatable); re-renders them even if unchanged.")
@click.option("--dry-run", is_flag=True, help="Show what would be rendered and exit.")
@click.option("--verbose", is_flag=True, help="Show Prefect's own logs.")
def render(manifest: Path, store_url: str, endpoint_url: str | None, catalogue_url: str | None, concurrency: int,
           only: tuple[str, ...], dry_run: bool, verbose: bool) -> None:
    """Render MANIFEST's clips that are not already in the store.

    Exit 0 when every clip is rendered, 1 when some failed (listed with their reasons),
    2 when the manifest or an option is invalid.
    """
    from narro.batch import conclude, new_run_id, prepare

    started = time.perf_counter()
    catalogue_url = catalogue_url or default_catalogue_url()
    try:
        if endpoint_url:
            os.environ["NARRO_S3_ENDPOINT_URL"] = endpoint_url  # the publish tasks open the store again
        store = open_store(store_url)
        check = getattr(store, "check", None)
        if check is not None:
            check()  # wrong credentials or a missing bucket: stop before anything is written
        catalogue = Catalogue(catalogue_url)
        run_id = new_run_id()
        batch = prepare(manifest, store, catalogue, run_id=run_id, only=list(only) if only else None, force=bool(only))
    except ManifestError as error:
        _report_manifest_error(error)
        return
    except KeyError as error:
        _fail_invalid(f"--only: {error.args[0]}")
        return
    except NarroError as error:
        _fail_invalid(str(error))
        return

    if dry_run:
        for spec in batch.to_render:
            console.print(f"would render {spec.object_name}", highlight=False)
        console.print(f"{len(batch.to_render)} to render, {len(batch.cached)} unchanged", highlight=False)
        return
    if batch.to_render:
        asked = [spec.narration_id for spec in batch.to_render] if only else None
        if _run_flow(manifest, store_url, catalogue, batch.course.slug, run_id, asked, concurrency,
                     (len(batch.to_render), len(batch.cached)), verbose) is None:
            sys.exit(EXIT_FAILED)
    summary = conclude(batch, store, catalogue)
    _print_summary(summary, time.perf_counter() - started)
    _print_qa(catalogue, summary.course, [c.narration_id for c in summary.rendered + summary.failed])
    sys.exit(EXIT_OK if summary.ok else EXIT_FAILED)


def _run_flow(manifest: Path, store_url: str, catalogue: Catalogue, course: str, run_id: str,
              only: list[str] | None, concurrency: int, sizes: tuple[int, int], verbose: bool) -> object:
    """Run the Prefect flow in this process with a live progress bar fed from the catalogue."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.render_course import render_course_with

    stop = threading.Event()
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("[green]{task.fields[done]} done[/] [red]{task.fields[failed]} failed[/] {task.fields[cached]} cached"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )
    total, cached = sizes

    def watch(task_id: int) -> None:
        while not stop.wait(0.5):
            progress.update(task_id, **_counts(catalogue, course, run_id))
        progress.update(task_id, **_counts(catalogue, course, run_id))

    with progress:
        task_id = progress.add_task("rendering", total=total, done=0, failed=0, cached=cached)
        watcher = threading.Thread(target=watch, args=(task_id,), daemon=True)
        watcher.start()
        try:
            return render_course_with(concurrency)(
                manifest=str(manifest), store=store_url, catalogue=catalogue.url, run_id=run_id, only=only,
                force=only is not None,
            )
        except Exception as error:  # the flow engine itself failed: say so, exit 1
            errors.print(f"[bold red]render failed:[/] {type(error).__name__}: {error}", highlight=False)
            return None
        finally:
            stop.set()
            watcher.join()


def _counts(catalogue: Catalogue, course: str, run_id: str) -> dict[str, int]:
    clips = [c for c in catalogue.clips(course) if c.run_id == run_id]
    done = sum(c.status == RENDERED for c in clips)
    failed = sum(c.status == FAILED for c in clips)
    return {"completed": done + failed, "done": done, "failed": failed}


def _print_summary(summary: object, elapsed_s: float) -> None:
    from narro.batch import Summary

    assert isinstance(summary, Summary)
    audio_s = sum(c.duration_s or 0 for c in summary.rendered + summary.cached)
    table = Table(title=f"{summary.course}: run {summary.run_id}", title_justify="left")
    for column in ("rendered", "unchanged", "failed", "audio", "wall time"):
        table.add_column(column, justify="right")
    table.add_row(str(len(summary.rendered)), str(len(summary.cached)),
                  f"[red]{len(summary.failed)}[/]" if summary.failed else "0",
                  _minutes(audio_s), f"{elapsed_s:.1f} s")
    console.print(table)
    if summary.rendered:
        loudness = [c.loudness_lufs for c in summary.rendered if c.loudness_lufs is not None]
        peaks = [c.true_peak_dbtp for c in summary.rendered if c.true_peak_dbtp is not None]
        if loudness:
            console.print(f"loudness {min(loudness):.1f} to {max(loudness):.1f} LUFS, true peak at most "
                          f"{max(peaks):.1f} dBTP", highlight=False)
    if summary.failed:
        failures = Table(title="failed clips", title_justify="left", show_lines=False)
        failures.add_column("clip")
        failures.add_column("attempts", justify="right")
        failures.add_column("reason", overflow="fold")
        for clip in summary.failed:
            failures.add_row(clip.narration_id, str(clip.attempts), clip.last_error or "unknown")
        console.print(failures)
        console.print(f"{len(summary.failed)} clip(s) failed; fix the cause and run the same command again: "
                      "only the failed and changed clips are rendered.", highlight=False)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


@main.command()
def voices() -> None:
    """List each engine's voices: the offline ones always, online ones when their service answers."""
    from narro.engines import ENGINES

    table = Table(title="engine voices (use as `model:` in voices.yaml)", title_justify="left")
    for column in ("engine", "voice", "locale", "gender"):
        table.add_column(column)
    notes = []
    for name, kind in sorted(ENGINES.items()):
        lister = getattr(kind, "voices", None)
        if lister is None:
            continue
        try:
            found = lister()
        except NarroError as error:
            notes.append(f"{name}: {error}")
            continue
        for voice in found:
            table.add_row(name, voice["name"], voice.get("locale", ""), voice.get("gender", ""))
    console.print(table)
    for note in notes:
        console.print(f"[yellow]{note}[/]", highlight=False, soft_wrap=True)


@main.command()
@click.argument("course")
@catalogue_option
@click.option("--json", "as_json", is_flag=True, help="Print the clips as JSON.")
def status(course: str, catalogue_url: str | None, as_json: bool) -> None:
    """Show every clip of COURSE as the catalogue has it (exit 1 if any failed)."""
    from narro.report import latest_qa

    try:
        catalogue = Catalogue(catalogue_url)
    except NarroError as error:
        _fail_invalid(str(error))
        return
    clips = catalogue.clips(course)
    if not clips:
        known = ", ".join(catalogue.courses()) or "none yet"
        _fail_invalid(f"no course '{course}' in the catalogue {catalogue.safe_url} (courses: {known})")
    if as_json:
        qa = latest_qa(catalogue, course)
        print(json.dumps({"course": course, "clips": [{**c.as_dict(), "qa": qa.get(c.narration_id)} for c in clips]},
                         indent=2))
    else:
        _print_status(course, clips, latest_qa(catalogue, course))
    sys.exit(EXIT_FAILED if any(c.status == FAILED for c in clips) else EXIT_OK)


def _print_status(course: str, clips: list[ClipState], qa: dict[str, dict] | None = None) -> None:
    qa = qa or {}
    table = Table(title=course, title_justify="left")
    for column, justify in (("clip", "left"), ("status", "left"), ("tier", "left"), ("voice", "left"),
                            ("duration", "right"), ("LUFS", "right"), ("dBTP", "right"), ("WER", "right"),
                            ("wpm", "right"), ("tries", "right"), ("last error", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    colours = {RENDERED: "green", FAILED: "red"}
    for clip in clips:
        colour = colours.get(clip.status, "yellow")
        table.add_row(
            clip.narration_id, f"[{colour}]{clip.status}[/]", clip.tier, clip.voice,
            f"{clip.duration_s:.1f} s" if clip.duration_s else "", _number(clip.loudness_lufs),
            _number(clip.true_peak_dbtp), _percent(qa.get(clip.narration_id, {}).get("wer")),
            _whole(qa.get(clip.narration_id, {}).get("wpm")), str(clip.attempts), clip.last_error or "",
        )
    console.print(table)
    counts = {s: sum(c.status == s for c in clips) for s in sorted({c.status for c in clips})}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)


def _print_qa(catalogue: Catalogue, course: str, ids: list[str]) -> None:
    """The quality gate's figures for the clips this run rendered or failed (narro.qa)."""
    from narro.report import latest_qa

    figures = latest_qa(catalogue, course, ids)
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
        table.add_row(narration_id, _percent(qa["wer"]), _whole(qa["wpm"]), _number(qa["loudness_lufs"]),
                      str(qa["takes_in_run"]), verdict)
    console.print(table)
    wers = sorted(q["wer"] for q in figures.values() if q["wer"] is not None)
    if wers:
        console.print(f"WER median {_percent(wers[len(wers) // 2])}, worst {_percent(wers[-1])}; "
                      f"{sum(q['takes_in_run'] > 1 for q in figures.values())} clip(s) needed more than one take; "
                      f"report: {course}/report.html in the store", highlight=False)


def _percent(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else ""


def _whole(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else ""


def _number(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else ""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@catalogue_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
def verify(files: tuple[Path, ...], catalogue_url: str | None, as_json: bool) -> None:
    """Check FILES (MP3, WAV, anything ffmpeg reads) for narro's watermark and decode its payload.

    Exit 0 when every file carries it, 1 when some do not, 2 when a file cannot be read.
    """
    from narro.verify import verify_file

    try:
        catalogue: Catalogue | None = Catalogue(catalogue_url)
    except NarroError:
        catalogue = None  # the mark still decodes; only its meaning is unknown
    unreadable = missing = 0
    for path in files:
        try:
            report = verify_file(path, catalogue)
        except NarroError as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            unreadable += 1
            continue
        found = report.detection
        if as_json:
            print(json.dumps(report.as_dict()))
        elif found.present and found.payload is not None:
            console.print(f"{path}: [green]watermarked[/] payload {found.payload.hex()} — {report.meaning} "
                          f"(confidence {found.confidence:.1f}, bits {found.bit_agreement:.0%})", highlight=False)
        else:
            console.print(f"{path}: [red]no narro watermark[/] (confidence {found.confidence:.1f})", highlight=False)
        missing += not found.present
    sys.exit(EXIT_INVALID if unreadable else EXIT_FAILED if missing else EXIT_OK)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs NARRO_DASHBOARD_TOKEN set.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--store", "store_url", default=DEFAULT_STORE, show_default=True, metavar="DIR",
              help="Where clips are published (the same as for render).")
@catalogue_option
@click.option("--manifest", "manifests", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Manifest (or folder of manifests) to compare with for staleness and to retry from (repeatable).")
def dashboard(host: str, port: int, store_url: str, catalogue_url: str | None, manifests: tuple[Path, ...]) -> None:
    """Serve the web dashboard: every clip of every course, audio, errors, and retries."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.retry import launcher_from_env
    from narro.dashboard import serve, url_for
    from narro.dashboard.security import check_bind, token_from_env

    try:
        check_bind(host, token_from_env())
        launcher, mode = launcher_from_env()
        console.print(f"narro dashboard on {url_for(host, port)} ({mode}); Ctrl-C stops it", highlight=False)
        serve(catalogue_url, store_url, list(manifests), launcher, host=host, port=port, mode=mode)
    except NarroError as error:
        _fail_invalid(str(error))
