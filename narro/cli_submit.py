"""`narro submit` and `narro schedule add | list | remove`: courses rendered by a cluster's Prefect workers.

Both upload the course's source to the store first (narro.source), so a worker anywhere reads what
the author wrote, then hand it to the Prefect server named by PREFECT_API_URL (narro.submit).
Exit codes as for render: 0 done, 1 the run failed or some clips did, 2 invalid input or no
server, pool or worker to hand the course to.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from narro.catalogue import FAILED, RENDERED, Catalogue
from narro.errors import ManifestError, NarroError, SubmitError
from narro.prefect_api import quiet_prefect
from narro.progress import course_progress
from narro.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = EXIT_INVALID) -> None:
    errors.print(f"error: {message}", style="bold red", markup=False, highlight=False)
    sys.exit(code)


def _settings(catalogue_url: str | None, endpoint_url: str | None) -> Settings:
    settings = click.get_current_context().find_root().obj
    assert isinstance(settings, Settings)
    try:
        settings = settings.with_flag("catalogue.url", catalogue_url, "--catalogue")
        return settings.with_flag("s3.endpoint_url", endpoint_url, "--endpoint-url")
    except NarroError as error:
        _fail(str(error))
        raise


def _upload(manifest: Path, store_url: str | None, settings: Settings):  # noqa: ANN202 (narro.source.Uploaded)
    """Check the server and store, then upload the course's source; exits 2 on a problem."""
    from narro import source
    from narro.prefect_api import configured_api_url
    from narro.store import open_store

    quiet_prefect()
    if not configured_api_url():
        _fail('PREFECT_API_URL is not set: a submitted course needs a Prefect server and workers; run '
              '`eval "$(narro cluster env)"` (or render here with `narro render`)')
    url = store_url or settings.store.url
    if "://" not in url:
        url = str(Path(url).expanduser().resolve())  # workers run elsewhere: a relative folder would be theirs
    try:
        store = open_store(url, settings.s3.endpoint_url)
        store.check()
        return source.upload(manifest, store)
    except ManifestError as error:
        for problem in error.problems:
            print(str(problem), file=sys.stderr)
        _fail(f"{len(error.problems)} problem(s) in {manifest}; nothing was submitted")
    except NarroError as error:
        _fail(str(error))


store_option = click.option("--store", "store_url", default=None, metavar="DIR|s3://BUCKET/PREFIX",
                            help="Where clips are published (default: the store.url setting); workers must reach it.")
catalogue_option = click.option("--catalogue", "catalogue_url", default=None, metavar="URL",
                                help="SQLAlchemy URL of the catalogue workers record into (default: catalogue.url).")
endpoint_option = click.option("--endpoint-url", default=None, metavar="URL",
                               help="S3 endpoint for S3-compatible servers (default: the s3.endpoint_url setting).")


@click.command()
@click.argument("manifest", type=click.Path(path_type=Path))
@store_option
@catalogue_option
@endpoint_option
@click.option("--detach", is_flag=True, help="Return once the run is created instead of following it.")
@click.option("--deployment", default="render-course/render-course", show_default=True, metavar="FLOW/NAME",
              help="Deployment whose run renders the course; created from this project if the server lacks it.")
def submit(manifest: Path, store_url: str | None, catalogue_url: str | None, endpoint_url: str | None, detach: bool,
           deployment: str) -> None:
    """Render MANIFEST on the cluster: upload its source to the store, start a run of the course deployment.

    Prints the run's URL in the Prefect UI, then follows it with a progress bar (the catalogue's
    view of the run) until it ends, or returns at once with --detach. A run that no worker picks up
    within a minute is cancelled and reported. Exit 0 when every clip is rendered, 1 when the run
    or some clips failed, 2 when the manifest is invalid or there is no server or worker.
    """
    from narro import submit as submitting
    from narro.batch import new_run_id

    settings = _settings(catalogue_url, endpoint_url)
    uploaded = _upload(manifest, store_url, settings)
    run_id = new_run_id()
    parameters = {"manifest": uploaded.location, "store": uploaded.store,
                  "catalogue": settings.catalogue.url, "run_id": run_id}
    tags = ["narro", "submit", f"course:{uploaded.course}"]
    try:
        run = submitting.start_run(submitting.on_demand_deployment(deployment), parameters,
                                   name=f"{uploaded.course}-{run_id}", tags=tags)
    except NarroError as error:
        _fail(str(error))
        return
    sent = f"{uploaded.files} file(s) uploaded" if uploaded.written else "source unchanged since its last upload"
    console.print(f"submitted {uploaded.course} ({sent}) as flow run {run.name}: {run.url}", markup=False,
                  highlight=False)
    if detach:
        console.print(f"follow it with `narro status {uploaded.course}`", markup=False, highlight=False)
        return
    try:
        submitting.await_pickup(run)
    except SubmitError as error:
        _fail(str(error), EXIT_FAILED)
    catalogue = Catalogue(settings.catalogue.url)
    final, message = _follow(run, catalogue, uploaded.course, run_id)
    sys.exit(_summarise(catalogue, uploaded.course, run_id, final, message, run.url))


def _follow(run, catalogue: Catalogue, course: str, run_id: str) -> tuple[str, str]:  # noqa: ANN001
    """Wait for the run's end with the same progress bar as `narro render`, fed by the catalogue."""
    from narro import submit as submitting

    with course_progress(console, catalogue, course, run_id):
        return submitting.await_end(run)


def _summarise(catalogue: Catalogue, course: str, run_id: str, final: str, message: str, url: str) -> int:
    ours = [c for c in catalogue.clips(course) if c.run_id == run_id]
    rendered = [c for c in ours if c.status == RENDERED]
    failed = [c for c in ours if c.status == FAILED]
    console.print(f"{course}: run {run_id} {final.lower()}: {len(rendered)} rendered, {len(failed)} failed",
                  markup=False, highlight=False)
    for clip in failed:
        console.print(f"  {clip.narration_id}: {clip.last_error or 'unknown'}", markup=False, highlight=False)
    if final != "COMPLETED":
        errors.print(f"the run ended {final.lower()}: {message or 'no reason given'}; see {url}", markup=False,
                     highlight=False)
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


@click.group(name="schedule")
def schedule_group() -> None:
    """Re-render courses on a cron schedule, from their uploaded source (only what changed or went stale)."""


@schedule_group.command(name="add")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--cron", required=True, metavar="EXPR", help='When to run, e.g. "30 2 * * *" (02:30 daily).')
@click.option("--timezone", default="UTC", show_default=True, metavar="TZ", help="IANA time zone of --cron.")
@click.option("--name", default=None, metavar="NAME", help="The schedule's name (default: schedule-COURSE).")
@store_option
@catalogue_option
@endpoint_option
def schedule_add(manifest: Path, cron: str, timezone: str, name: str | None, store_url: str | None,
                 catalogue_url: str | None, endpoint_url: str | None) -> None:
    """Upload MANIFEST's source and render it on CRON; adding an existing NAME replaces it.

    Each run renders the course as last uploaded (by this command or `narro submit`): edit a
    narration, upload again, and the next run re-renders that clip alone.
    """
    from narro import submit as submitting

    settings = _settings(catalogue_url, endpoint_url)
    quiet_prefect()
    try:
        submitting.check_cron(cron, timezone)  # before anything is uploaded
    except NarroError as error:
        _fail(str(error))
    uploaded = _upload(manifest, store_url, settings)
    name = name or f"schedule-{uploaded.course}"
    parameters = {"manifest": uploaded.latest, "store": uploaded.store,
                  "catalogue": settings.catalogue.url}
    try:
        submitting.add_schedule(name, uploaded.course, cron, timezone, parameters)
        found = next(s for s in submitting.schedules() if s.name == name)
    except NarroError as error:
        _fail(str(error))
        return
    upcoming = ", ".join(moment.isoformat() for moment in found.next_runs)
    console.print(f"schedule {name}: renders {uploaded.course} from {uploaded.latest} on '{cron}' ({timezone}); "
                  f"next runs: {upcoming}", markup=False, highlight=False)


@schedule_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as JSON.")
def schedule_list(as_json: bool) -> None:
    """Every schedule of the course flow on the Prefect server, with its next run times."""
    from narro import submit as submitting

    quiet_prefect()
    try:
        found = submitting.schedules()
    except NarroError as error:
        _fail(str(error))
        return
    if as_json:
        print(json.dumps([{**s.__dict__, "next_runs": [m.isoformat() for m in s.next_runs]} for s in found], indent=2))
        return
    table = Table(title="schedules (render-course deployments)", title_justify="left")
    for column in ("name", "course", "cron", "time zone", "next runs"):
        table.add_column(column)
    for item in found:
        upcoming = ", ".join(m.strftime("%Y-%m-%d %H:%M") for m in item.next_runs) if item.active else "paused"
        table.add_row(item.name, item.course, item.cron, item.timezone, upcoming)
    console.print(table)


@schedule_group.command(name="remove")
@click.argument("name")
def schedule_remove(name: str) -> None:
    """Delete schedule NAME and the runs it has queued (the clips it rendered stay in the store)."""
    from narro import submit as submitting

    quiet_prefect()
    try:
        submitting.remove_schedule(name)
    except NarroError as error:
        _fail(str(error))
    console.print(f"schedule {name} removed", markup=False, highlight=False)
