"""The `narro` command. Errors become messages and exit codes here and nowhere else.

Exit codes: 0 everything asked for is rendered (or valid); 1 some clips failed; 2 invalid
input (manifest, options, settings, store or catalogue location).

The settings (narro.settings) are built once, in `main`, from the environment and the project
file; a command's own flags (`--catalogue`, `--endpoint-url`) go on top, and the result is
passed down to the flow, the engines and the dashboard.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape

from narro.catalogue import FAILED, Catalogue
from narro.cli_cluster import cluster_group
from narro.cli_lexicon import lexicon_group
from narro.cli_submit import schedule_group, submit
from narro.cli_voices import audit, print_voice_clips, replacement, report_broken_engines, say_gate, voices_group
from narro.errors import ManifestError, NarroError, SettingsError, StoreError
from narro.prefect_api import prefect_api, quiet_prefect
from narro.progress import course_progress
from narro.runlog import check_folder, log_path, run_log
from narro.settings import Settings
from narro.store import open_store

if TYPE_CHECKING:
    from narro.batch import Batch, Summary  # imported when rendering: planning pulls in more than other commands need

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
DEFAULT_STORE = "narro-out"

# soft_wrap: lines are never broken mid-message (logs and pipes keep one line per result).
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def _fail_invalid(message: str) -> None:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
    help="SQLAlchemy URL of the catalogue (default: the catalogue.url setting, $NARRO_CATALOGUE, "
         "else a SQLite file in ~/.local/share/narro).",
)
# Flags that override a setting: option name -> (setting, flag as the user types it).
SETTING_FLAGS = {"catalogue_url": ("catalogue.url", "--catalogue"),
                 "endpoint_url": ("s3.endpoint_url", "--endpoint-url")}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="narro")
@click.option("--config", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="Settings file (default: $NARRO_CONFIG, else ./narro.toml, else [tool.narro] in ./pyproject.toml).")
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """narro renders course narration scripts to loudness-normalised speech, in batch."""
    try:
        ctx.obj = Settings.load(config)  # once, before any command runs: a bad value stops everything
    except SettingsError as error:
        _fail_invalid(str(error))


def _settings(**flags: object) -> Settings:
    """The settings `main` built, with this command's setting flags on top (exit 2 on a bad value)."""
    settings = click.get_current_context().find_root().obj
    assert isinstance(settings, Settings)
    try:
        for option, value in flags.items():
            name, flag = SETTING_FLAGS[option]
            settings = settings.with_flag(name, value, flag)
    except SettingsError as error:
        _fail_invalid(str(error))
    return settings


@main.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(manifests: tuple[Path, ...]) -> None:
    """Check MANIFESTS and print every problem as FILE:LINE: field: message (exit 2 if any)."""
    from narro.consent import course_problems
    from narro.manifest import load_course
    from narro.text import word_count

    problems = 0
    for path in manifests:
        try:
            course = load_course(path)
            refused = course_problems(course, _settings().consent.public_figures)  # cloned voices' consent
            if refused:
                raise ManifestError(refused)
        except ManifestError as error:
            for problem in error.problems:
                print(str(problem), file=sys.stderr)
            problems += len(error.problems)
            continue
        words = sum(word_count(n.text) for n in course.narrations)
        count = len(course.narrations)
        console.print(f"{path}: ok: course {course.slug}, {count} narration{'s' if count != 1 else ''}, "
                      f"{words:,} word{'s' if words != 1 else ''}", highlight=False)
    report_broken_engines()
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
@click.option("--only", multiple=True, metavar="ID",
              help="Render only these narration ids (repeatable); re-renders them even if unchanged.")
@click.option("--dry-run", is_flag=True,
              help="Say which clips would render and why, and exit; changes nothing (catalogue, store, logs).")
@click.option("--retry-fallbacks", is_flag=True,
              help="Re-render clips the fallback voice spoke even while their own voice does not answer.")
@click.option("--replace-voice", default=None, metavar="OLD=NEW",
              help="Re-render exactly the clips made with voice OLD (published, or OLD in the manifest) with NEW, "
                   "e.g. after OLD's consent is revoked.")
@click.option("--verbose", is_flag=True, help="Show Prefect's own logs here too (they always go to the run's log).")
def render(manifest: Path, store_url: str, endpoint_url: str | None, catalogue_url: str | None, concurrency: int,
           only: tuple[str, ...], dry_run: bool, retry_fallbacks: bool, replace_voice: str | None,
           verbose: bool) -> None:
    """Render MANIFEST's clips that are not already in the store.

    Clips the offline fallback voice spoke last time are rendered again once their own (online)
    voice answers a probe, or with --retry-fallbacks. Exit 0 when every clip is rendered, 1 when
    some failed (listed with their reasons), 2 when the manifest or an option is invalid.
    Everything logged while rendering goes to {log.dir}/{course}-{run_id}.log (the summary names it).
    """
    from narro.batch import conclude, new_run_id, plan_batch, prepare
    from narro.summary import print_qa, print_summary

    started = time.perf_counter()
    settings = _settings(catalogue_url=catalogue_url, endpoint_url=endpoint_url)
    asked = list(only) if only else None
    try:
        store = open_store(store_url, settings.s3.endpoint_url)
        store.check()  # wrong credentials or a missing bucket: stop before anything is written
        run_id = new_run_id()
        replaced = None
        if replace_voice:
            asked, replaced = replacement(manifest, store, replace_voice)
            if not asked:
                console.print(f"no clip of {manifest} is made with voice '{replace_voice.partition('=')[0]}': "
                              "nothing to replace", highlight=False)
                return
        if dry_run:
            planned = plan_batch(manifest, store, _existing_catalogue(settings.catalogue.url), run_id=run_id,
                                 only=asked, voice=replaced, force=bool(asked), retry_fallbacks=retry_fallbacks,
                                 settings=settings)
            _print_plan(planned)
            return
        check_folder(settings.log.dir)
        catalogue = Catalogue(settings.catalogue.url)
        batch = prepare(manifest, store, catalogue, run_id=run_id, only=asked, voice=replaced, force=bool(asked),
                        retry_fallbacks=retry_fallbacks, settings=settings)
    except ManifestError as error:
        _report_manifest_error(error)
        return
    except KeyError as error:
        _fail_invalid(f"--only: {error.args[0]}")
        return
    except NarroError as error:
        _fail_invalid(str(error))
        return

    log, summary = None, None
    if batch.to_render:
        console.print(_plan_line(batch), highlight=False)
        asked = [spec.narration_id for spec in batch.to_render] if asked else None
        log = log_path(settings.log.dir, batch.course.slug, run_id)
        # Before Prefect is first imported (by run_log), which reads them.
        quiet_prefect(verbose)
        try:
            with run_log(log, verbose=verbose):
                finished = _run_flow(manifest, store_url, catalogue, batch.course.slug, run_id, asked, concurrency,
                                     (len(batch.to_render), len(batch.cached)), settings, retry_fallbacks, replaced)
        except NarroError as error:
            _fail_invalid(str(error))
        if finished is None:
            errors.print(f"full log: {log}", markup=False, highlight=False)
            sys.exit(EXIT_FAILED)
        held = finished["held_elsewhere"]  # type: ignore[index]
        if held:
            console.print(f"{len(held)} clip(s) left to another run that is rendering them now", highlight=False)
        # The flow closed the run and wrote the index and report from one read; its account is printed as is.
        summary = _with_retagged(finished["summary"], batch)  # type: ignore[index]
    if summary is None:  # nothing to synthesise: no flow ran, so the run is closed here
        try:
            summary = conclude(batch, store, catalogue, settings.qa)
        except NarroError as error:  # e.g. the store went away after the last clip
            errors.print(f"[bold red]render failed:[/] {escape(str(error))}", highlight=False)
            sys.exit(EXIT_FAILED)
    print_summary(console, summary, time.perf_counter() - started)
    if summary.index_error:  # the store stopped answering: the clips above are accounted for, the index is not
        errors.print(f"course index not written: {summary.index_error}; the next run writes it", style="yellow",
                     markup=False, highlight=False)
    print_qa(console, summary)
    if log is not None:
        console.print(f"full log: {log}", markup=False, highlight=False)
    sys.exit(EXIT_OK if summary.ok else EXIT_FAILED)


def _with_retagged(summary: Summary, batch: Batch) -> Summary:
    """The flow's account, with the clips this process re-tagged before it (the flow found them unchanged)."""
    ids = {spec.narration_id for spec in batch.retagged}
    if not ids:
        return summary
    return dataclasses.replace(summary, cached=[s for s in summary.cached if s.narration_id not in ids],
                               retagged=[s for s in summary.cached if s.narration_id in ids])


def _existing_catalogue(url: str) -> Catalogue | None:
    """The catalogue at `url` for reading, or None where a SQLite file does not exist yet (it is not created)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).expanduser().is_file():
        return None
    return Catalogue(url)


def _print_plan(batch: Batch) -> None:
    """A dry run's answer: each clip that would render and why, each fallback clip kept and why."""
    for spec in batch.to_render:
        reasons = "; ".join(str(reason) for reason in batch.reasons.get(spec.narration_id, []))
        console.print(f"would render {spec.object_name}: {escape(reasons)}", highlight=False)
    for spec in batch.to_retag:
        reasons = "; ".join(str(reason) for reason in batch.reasons.get(spec.narration_id, []))
        console.print(f"would retag {spec.object_name}: {escape(reasons)} (no synthesis)", highlight=False)
    for spec in batch.kept_fallbacks:
        reasons = "; ".join(str(reason) for reason in batch.reasons.get(spec.narration_id, []))
        console.print(f"would keep {spec.object_name}: {escape(reasons)}", highlight=False)
    kept = f" ({len(batch.kept_fallbacks)} spoken by the fallback voice)" if batch.kept_fallbacks else ""
    retag = f"{len(batch.to_retag)} to retag, " if batch.to_retag else ""
    console.print(f"{len(batch.to_render)} to render, {retag}{len(batch.cached)} unchanged{kept}; "
                  "dry run: nothing was written", highlight=False)


def _plan_line(batch: Batch) -> str:
    """'3 to render (2 new, 1 text changed), 1 unchanged': each clip counted by its first reason."""
    kinds: dict[str, int] = {}
    for spec in batch.to_render:
        reasons = batch.reasons.get(spec.narration_id)
        kind = reasons[0].kind if reasons else "asked for"
        kinds[kind] = kinds.get(kind, 0) + 1
    why = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    kept = f", {len(batch.kept_fallbacks)} kept as the fallback voice spoke them" if batch.kept_fallbacks else ""
    retagged = f", {len(batch.retagged)} retagged (title changed)" if batch.retagged else ""
    return f"{len(batch.to_render)} to render ({why}){retagged}, {len(batch.cached)} unchanged{kept}"


def _run_flow(manifest: Path, store_url: str, catalogue: Catalogue, course: str, run_id: str,
              only: list[str] | None, concurrency: int, sizes: tuple[int, int], settings: Settings,
              retry_fallbacks: bool = False, voice: str | None = None) -> object:
    """Run the Prefect flow in this process with a live progress bar fed from the catalogue.

    The bar counts every clip of the course: the unchanged ones start it off as done.
    """
    from flows.render_course import render_course_with

    with course_progress(console, catalogue, course, run_id, sizes):
        try:
            with prefect_api(settings.log.dir):
                return render_course_with(concurrency, settings)(
                    manifest=str(manifest), store=store_url, catalogue=catalogue.url, run_id=run_id, only=only,
                    force=only is not None, settings=settings, retry_fallbacks=retry_fallbacks, voice=voice,
                )
        except Exception as error:  # the flow engine itself failed: say so, exit 1
            logging.getLogger(__name__).error("the flow engine failed", exc_info=error)  # to the log; a bug: terminal too
            errors.print(f"[bold red]render failed:[/] {type(error).__name__}: {error}", highlight=False)
            return None


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


@main.command()
@click.argument("course", required=False)
@catalogue_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the clips as JSON: every clip (with --failed, every failed one), or the page --limit "
                   "or --page asks for.")
@click.option("--wide", is_flag=True,
              help="Every column (tier, voice, duration, LUFS, dBTP, WER, wpm, tries, notes), folded to fit.")
@click.option("--failed", "failed_only", is_flag=True, help="Only the clips that failed.")
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help="Clips per page (default 50; 0: every clip).")
@click.option("--page", type=click.IntRange(min=1), default=None, metavar="N", help="Which page to show (default 1).")
@click.option("--clip", "clip_id", default=None, metavar="ID",
              help="One clip in full: every attempt, each check's value, threshold and verdict, and the script "
                   "beside what the recogniser heard.")
@click.option("--voice", default=None, metavar="NAME",
              help="Every published clip made with voice NAME (in COURSE, or in every course), read from the store.")
@click.option("--store", "store_url", default=None, metavar="DIR|s3://BUCKET/PREFIX",
              help="With --voice: the store to read (default: the store.url setting).")
def status(course: str | None, catalogue_url: str | None, as_json: bool, wide: bool, failed_only: bool,
           limit: int | None, page: int | None, clip_id: str | None, voice: str | None, store_url: str | None) -> None:
    """Show COURSE's clips (a course slug or its manifest) as the catalogue has them (exit 1 if any failed).

    A page at a time: each clip's id, state and a short verdict (its published take's WER, or why
    it failed), in 80 columns; --wide for every column. WER and wpm are the published take's; an
    attempt that failed after it is noted apart, and a clip the fallback voice spoke says so.
    """
    from narro import status as view

    url = _settings(catalogue_url=catalogue_url).catalogue.url
    if course is None and voice is None:
        _fail_invalid("give COURSE (a course slug or its manifest), or --voice NAME")
    slug = _course_slug(course) if course is not None else ""
    try:
        catalogue = _existing_catalogue(url)  # reading status never creates a catalogue
    except NarroError as error:
        _fail_invalid(str(error))
        return
    if catalogue is None:
        _fail_invalid(f"no catalogue at {url} yet: nothing has been rendered with it (render a manifest first)")
        return
    if voice is not None:
        print_voice_clips(voice, [slug] if slug else catalogue.courses(), store_url, None, as_json)
    if clip_id is not None:
        chosen = catalogue.clip(slug, clip_id)
        if chosen is None:
            _require_course(catalogue, slug)
            some, total = catalogue.clip_page(slug, limit=10)
            more = f" and {total - len(some)} more" if total > len(some) else ""
            _fail_invalid(f"--clip: no clip '{clip_id}' in course '{slug}' (clips: "
                          f"{', '.join(c.narration_id for c in some)}{more})")
            return
        view.print_clip(chosen, catalogue.attempts(slug, clip_id), as_json)
        sys.exit(EXIT_FAILED if chosen.status == FAILED else EXIT_OK)
    paged = not as_json or limit is not None or page is not None
    size = (view.PAGE_SIZE if limit is None else limit) if paged else 0
    shown = view.read_page(catalogue, slug, offset=((page or 1) - 1) * size, limit=size or None,
                           failed_only=failed_only)
    if not shown.counts:
        _require_course(catalogue, slug)
    if as_json:
        print(view.page_json(shown, complete=not paged))
    elif wide:
        view.print_wide(console, shown)
    else:
        view.print_compact(console, shown)
    sys.exit(EXIT_FAILED if shown.failed else EXIT_OK)


def _require_course(catalogue: Catalogue, slug: str) -> None:
    """Exit 2 unless the catalogue has clips of course `slug`, naming the courses it has."""
    if not catalogue.status_counts(slug):
        known = ", ".join(catalogue.courses()) or "none yet"
        _fail_invalid(f"no course '{slug}' in the catalogue {catalogue.safe_url} (courses: {known})")


def _course_slug(course: str) -> str:
    """COURSE as a slug: a manifest path (an existing file, or a name ending .yaml/.yml) gives its course's slug."""
    path = Path(course)
    if not (path.is_file() or path.suffix in (".yaml", ".yml")):
        return course
    from narro.manifest import load_course

    try:
        return load_course(path).slug
    except ManifestError as error:
        _report_manifest_error(error)
    except NarroError as error:
        _fail_invalid(str(error))
    return course


@main.command()
@click.argument("course")
@click.option("--format", "fmt", type=click.Choice(["m4b", "mp3", "zip"]), required=True,
              help="m4b (AAC audiobook) or mp3 with a chapter per narration, or a zip of the clips with a playlist.")
@click.option("--store", "store_url", default=DEFAULT_STORE, show_default=True, metavar="DIR|s3://BUCKET/PREFIX",
              help="Where the course's clips are published.")
@click.option("--endpoint-url", default=None, metavar="URL", help="S3 endpoint, as `narro render` takes it.")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="FILE",
              help="Write here (captions beside it as FILE.vtt) instead of {course}/{course}.FORMAT in the store.")
@click.option("--gap-s", default=1.0, show_default=True, type=click.FloatRange(0, 10), help="Silence between narrations.")
def export(course: str, fmt: str, store_url: str, endpoint_url: str | None, out_path: Path | None, gap_s: float) -> None:
    """Export COURSE (a slug or its manifest) as one file: chapters named by narration titles, in manifest order.

    m4b and mp3 join the published clips with GAP_S of silence (their loudness is kept, and the
    whole is checked against the target) and concatenate their captions into one .vtt. Exit 1 if
    the export fails, 2 if the course, a clip or an option is missing or invalid.
    """
    from narro.export import export_course

    settings = _settings(endpoint_url=endpoint_url)
    order, title, target = None, "", -16.0
    if Path(course).is_file() or Path(course).suffix in (".yaml", ".yml"):
        from narro.manifest import load_course
        from narro.plan import plan

        try:
            loaded = load_course(Path(course))
        except ManifestError as error:
            _report_manifest_error(error)
            return
        specs = plan(loaded)
        course, title, target = loaded.slug, loaded.title, specs[0].post.target_lufs
        order = [(spec.narration_id, spec.title) for spec in specs]
    try:
        store = open_store(store_url, settings.s3.endpoint_url)
        made = export_course(store, course, fmt, title=title, order=order, gap_s=gap_s, target_lufs=target)
    except StoreError as error:
        _fail_invalid(str(error))
        return
    except NarroError as error:
        errors.print(f"[bold red]export failed:[/] {escape(str(error))}", highlight=False)
        sys.exit(EXIT_FAILED)
    if out_path is None and any(chapter.id == course for chapter in made.chapters):
        _fail_invalid(f"a narration of {course} is named '{course}' too: its files would be overwritten; "
                      "give --out FILE")
    try:
        if out_path is not None:
            out_path.write_bytes(made.data)
            where = str(out_path)
            if made.captions is not None:
                out_path.with_suffix(".vtt").write_bytes(made.captions)
        else:
            types = {"m4b": "audio/mp4", "mp3": "audio/mpeg", "zip": "application/zip"}
            store.write_object(course, f"{course}.{fmt}", made.data, types[fmt])
            where = f"{course}/{course}.{fmt} in {store.url}"
            if made.captions is not None:
                store.write_object(course, f"{course}.vtt", made.captions, "text/vtt; charset=utf-8")
    except (OSError, NarroError) as error:
        _fail_invalid(f"cannot write the export: {error}")
        return
    loudness = f", {made.loudness_lufs:.1f} LUFS" if made.loudness_lufs is not None else ""
    console.print(f"exported {len(made.chapters)} narration{'s' if len(made.chapters) != 1 else ''} "
                  f"({_minutes(made.duration_s)}{loudness}) to {where}", highlight=False)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@catalogue_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
def verify(files: tuple[Path, ...], catalogue_url: str | None, as_json: bool) -> None:
    """Check FILES (MP3, WAV, anything ffmpeg reads) for narro's watermark and decode its payload.

    Finds it after speed, tempo and pitch changes too, and says which watermark version it found;
    a mark with another organisation id (settings: watermark.org_id) is "watermarked, not ours".
    Exit 0 when every file carries our mark, 1 when some do not, 2 when a file cannot be read.
    """
    from narro.verify import verify_file

    settings = _settings(catalogue_url=catalogue_url)
    try:
        catalogue: Catalogue | None = Catalogue(settings.catalogue.url)
    except NarroError:
        catalogue = None  # the mark still decodes; only its meaning is unknown
    unreadable = missing = 0
    for path in files:
        try:
            report = verify_file(path, catalogue, org=settings.watermark.org_id)
        except NarroError as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            unreadable += 1
            continue
        found = report.detection
        if as_json:
            print(json.dumps(report.as_dict()))
        elif found.payload is not None:
            rescaled = f", found at {1 / found.tempo:.2f}x speed, pitch x{found.pitch:.2f}" if found.version == 2 and (
                abs(found.tempo - 1) > 0.01 or abs(found.pitch - 1) > 0.01) else ""
            colour = "green" if report.ours else "yellow"
            console.print(f"{path}: [{colour}]{report.status}[/] (version {found.version}) payload {found.payload.hex()} "
                          f"— {report.meaning} (confidence {found.confidence:.1f}, bits {found.bit_agreement:.0%}"
                          f"{rescaled})", highlight=False)
        else:
            console.print(f"{path}: [red]no narro watermark[/] (confidence {found.confidence:.1f})", highlight=False)
        missing += not report.ours
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
    quiet_prefect()
    from flows.retry import launcher_for
    from narro.dashboard import serve, url_for
    from narro.dashboard.security import check_bind

    settings = _settings(catalogue_url=catalogue_url)
    try:
        check_bind(host, settings.dashboard.token.get_secret_value() if settings.dashboard.token else None)
        launcher, mode = launcher_for(settings)
        console.print(f"narro dashboard on {url_for(host, port)} ({mode}); Ctrl-C stops it", highlight=False)
        serve(settings, store_url, list(manifests), launcher, host=host, port=port, mode=mode)
    except NarroError as error:
        _fail_invalid(str(error))


@main.command(name="settings")
@catalogue_option
@click.option("--endpoint-url", default=None, metavar="URL", help="S3 endpoint, as `narro render` takes it.")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
def show_settings(catalogue_url: str | None, endpoint_url: str | None, as_json: bool) -> None:
    """Print every setting, its value and where it came from (default, file, environment or flag).

    Precedence, highest first: flags > environment > project file > default. Secrets are masked.
    The flags show what a command given them would use.
    """
    settings = _settings(catalogue_url=catalogue_url, endpoint_url=endpoint_url)
    rows = settings.rows()
    if as_json:
        print(json.dumps({"file": settings.file, "settings": rows}, indent=2))
        return
    # One plain line per setting, so it greps and pipes well.
    print(f"# project file: {settings.file or 'none'}; precedence: flags > environment > file > default")
    lines = [(str(row["name"]), "unset" if row["value"] is None else json.dumps(row["value"]), str(row["source"]),
              str(row["env"])) for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(3)]
    print(f"{'setting':<{widths[0]}}   {'value':<{widths[1]}}  {'source':<{widths[2]}}  environment variable")
    for name, value, source, env in lines:
        print(f"{name:<{widths[0]}} = {value:<{widths[1]}}  {source:<{widths[2]}}  {env}")


@main.command()
@click.argument("text")
@click.option("--voice", default=None, metavar="NAME", help="narro voice from the registry (default: its default voice).")
@click.option("--tier", type=click.Choice(["fast", "quality"]), default=None,
              help="Tier to speak with (default: the voice's fast tier, else its quality tier).")
@click.option("--voices", "voices_file", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="voices.yaml to take the voice from (default: the one beside --manifest, else the built-in registry).")
@click.option("--manifest", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="Use the voices.yaml beside this manifest.")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="FILE",
              help="WAV file to write as audio arrives (default: stdout, which must be a pipe).")
@click.option("--raw", is_flag=True, help="Write raw 16-bit little-endian mono PCM instead of WAV.")
@click.option("--store", "store_url", default=None, metavar="DIR|s3://BUCKET/PREFIX",
              help="For a cloned voice: the store whose {course}/audit/ records the line (default: store.url).")
def say(text: str, voice: str | None, tier: str | None, voices_file: Path | None, manifest: Path | None,
        out_path: Path | None, raw: bool, store_url: str | None) -> None:
    """Speak TEXT with any engine, writing audio as it arrives; print time to first audio and RTF to stderr.

    TEXT is normalised as narrations are, markup included ([pause 1s], [slow]…[/slow]). Engines
    that stream (the quality tier) write each chunk the moment it is decoded; others, and any line
    with markup, synthesise the line, then write it. Exit 1 if synthesis fails, 2 if the voice,
    tier, markup or an option is invalid.
    """
    from narro import markup
    from narro.say import say as speak
    from narro.text import normalise
    from narro.voices import BUILTIN_REGISTRY, VoiceRegistry, load_registry, registry_for

    settings = _settings()
    problems = markup.parse(text)[1]
    if problems:
        _fail_invalid("; ".join(f"TEXT, character {problem.offset + 1}: {problem.message}" for problem in problems))
    spoken = normalise(text)
    if not markup.unmarked(spoken).strip():
        _fail_invalid("TEXT has nothing to say")
    if out_path is None and sys.stdout.isatty():
        _fail_invalid("stdout is a terminal: give --out FILE, or pipe the audio to a player (narro say ... | aplay)")
    try:
        registry = (load_registry(voices_file) if voices_file else registry_for(manifest) if manifest
                    else VoiceRegistry(BUILTIN_REGISTRY, None))
    except ManifestError as error:
        _report_manifest_error(error)
        return
    name = voice or registry.default_voice
    entry = registry.get(name)
    if entry is None:
        _fail_invalid(f"--voice: no voice '{name}' in {registry.source or 'the built-in registry'}; "
                      f"voices: {', '.join(registry.names())}")
        return
    chosen = tier or ("fast" if entry.fast else "quality")
    engine_voice = entry.for_tier(chosen)  # type: ignore[arg-type]
    if engine_voice is None:
        _fail_invalid(f"--tier: voice '{name}' has no {chosen} tier")
        return
    try:  # a cloned voice speaks only for --manifest's course, within its consent, audited in the store
        gate = say_gate(name, chosen, engine_voice, registry, manifest, spoken, settings, store_url)
    except ManifestError as error:
        _report_manifest_error(error)
        return
    except NarroError as error:
        _fail_invalid(str(error))
        return
    out = out_path.open("wb") if out_path else sys.stdout.buffer
    try:
        report = speak(engine_voice, spoken, settings, out, wav=not raw, gate=gate)
    except NarroError as error:
        if out_path:
            out.close()
            out_path.unlink(missing_ok=True)  # no half-written preview
        errors.print(f"[bold red]failed:[/] {escape(str(error))}", highlight=False)
        sys.exit(EXIT_FAILED)
    finally:
        if out_path:
            out.close()
    print(report.line(), file=sys.stderr)


@main.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--config", "preset", type=click.Choice(["tiny", "base"]), default="tiny", show_default=True,
              help="Model size: tiny (tests, CPU) or base (VALL-E-X's size, GPU).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True, metavar="DIR",
              help="Output folder: checkpoints/, codes/ (cache), loss.jsonl and loss.svg.")
@click.option("--codec", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
              help="EnCodec folder (Hugging Face layout, e.g. a copy of facebook/encodec_24khz); "
                   "with --resume the checkpoint's.")
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(1), help="Train until this step.")
@click.option("--checkpoint-every", default=200, show_default=True, type=click.IntRange(1), metavar="N",
              help="Write a checkpoint every N steps (and at the end).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Utterances per step.")
@click.option("--learning-rate", default=5e-4, show_default=True, type=click.FloatRange(0, min_open=True),
              help="AdamW's peak learning rate (reached after a linear warm-up over a tenth of the steps).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --out.")
def train(dataset: Path, preset: str, out_dir: Path, codec: Path | None, steps: int, checkpoint_every: int,
          batch_size: int, learning_rate: float, resume: bool) -> None:
    """Train a codec LM on DATASET (an LJSpeech-style folder or a rendered course folder) as a Prefect flow.

    Runs on the GPU when torch sees one (setting codec_lm.device), else on the CPU. Exit 1 if
    training fails, 2 if the dataset or an option is invalid (every bad row as FILE:LINE).
    """
    from narro.errors import DatasetError

    settings = _settings()
    quiet_prefect()
    try:
        from flows.train_model import train_model
        from narro.engines.codec_lm.train import complete_checkpoints, load_dataset
    except ImportError as error:
        _fail_invalid(f"training needs the quality extra (pip install 'narro[quality]'): {error}")
        return
    if resume and not complete_checkpoints(out_dir):
        _fail_invalid(f"--resume: nothing to resume, no complete checkpoint in {out_dir / 'checkpoints'}; "
                      "run without --resume to start")
    if not resume and codec is None:
        _fail_invalid("--codec is needed to start training: the EnCodec folder (Hugging Face layout) to train on")
    try:
        load_dataset(dataset)  # every bad row now, before a flow starts
        result = train_model(dataset=str(dataset), out=str(out_dir), config=preset, codec=str(codec) if codec else None,
                             steps=steps, checkpoint_every=checkpoint_every, resume=resume, batch_size=batch_size,
                             learning_rate=learning_rate, settings=settings)
    except DatasetError as error:
        for problem in error.problems:
            print(str(problem), file=sys.stderr)
        print(f"{len(error.problems)} problem{'s' if len(error.problems) != 1 else ''} found; nothing was trained.",
              file=sys.stderr)
        sys.exit(EXIT_INVALID)
    except NarroError as error:
        errors.print(f"[bold red]training failed:[/] {escape(str(error))}", highlight=False)
        sys.exit(EXIT_FAILED)
    resumed = f", resumed from step {result['resumed_from']}" if result["resumed_from"] is not None else ""
    console.print(f"trained to step {result['step']}{resumed} on {result['utterances']} utterances "
                  f"({result['encoded']} encoded now, the rest from the codes cache; {result['device']} "
                  f"{result['precision']}, {result['seconds']:.0f} s): loss "
                  f"{result['first_loss']:.3f} -> {result['last_loss']:.3f}; checkpoint {result['checkpoint']}; "
                  f"loss plot {out_dir / 'loss.svg'}", highlight=False)


main.add_command(cluster_group)
main.add_command(submit)
main.add_command(schedule_group)
main.add_command(voices_group())  # `narro voices` lists; add-clone and revoke beneath it
main.add_command(audit)
main.add_command(lexicon_group)

if __name__ == "__main__":  # `python -m narro.cli`: how `narro cluster up --detach` re-runs itself
    main()
