"""Render a course: plan, skip what the store already holds, fan the rest out, account for every clip.

Where clips run follows the `cluster` settings: on this process's threads (embedded, the
default), or on the Dask workers of `cluster.scheduler` (cluster mode), where a clip whose engine
declares `resources` (the quality tier: {"GPU": 1}) runs only on a worker that offers them.
The CLI and dashboard pick the task runner with `render_course_with`; a deployment's run, which
starts from this module, follows the settings of the process that runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

from prefect import flow
from prefect.futures import wait
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from narro.batch import conclude, prepare
from narro.catalogue import Catalogue
from narro.engines import engine_kind
from narro.errors import SettingsError
from narro.settings import Settings
from narro.source import materialise, parse_location, pinned
from narro.store import open_store
from tasks import artifacts, edge_limit
from tasks.clip import catalogue_at, render_clip

DEFAULT_CONCURRENCY = 2


def task_runner_for(settings: Settings, concurrency: int = DEFAULT_CONCURRENCY) -> TaskRunner[Any]:
    if settings.cluster.mode == "cluster":
        if not settings.cluster.scheduler:
            raise SettingsError("cluster.mode is 'cluster' but cluster.scheduler (NARRO_CLUSTER_SCHEDULER) is not set; "
                                'run `eval "$(narro cluster env)"`')
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=settings.cluster.scheduler)
    return ThreadPoolTaskRunner(max_workers=concurrency)


def _settings_of_this_process() -> Settings:
    """For the task runner a deployment's run starts with; a bad setting fails the run in the flow body."""
    try:
        return Settings.load()
    except SettingsError:
        return Settings()


@contextlib.contextmanager
def _leases_kept(catalogue: Catalogue, run_id: str, ttl_s: float) -> Iterator[None]:
    """Renew this run's clip leases while it runs, so a run that dies frees its clips within `ttl_s`."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            catalogue.renew_leases(run_id, ttl_s)

    keeper = threading.Thread(target=renew, name="narro-lease-keeper", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        catalogue.release_leases(run_id)


def _local_manifest(manifest: str, settings: Settings) -> tuple[str, str | None]:
    """A manifest given as an uploaded source (narro.source), fetched to this machine, and its pinned location."""
    location = parse_location(manifest)
    if location is None:
        return manifest, None
    location = pinned(location, settings.s3.endpoint_url)  # `latest`: the upload it names now, for the whole run
    return str(materialise(location, settings.s3.endpoint_url)), str(location)


def _placed(resources: dict[str, float], cluster: bool) -> contextlib.AbstractContextManager[object]:
    """Dask annotations that keep a clip on a worker offering `resources` (none on threads)."""
    if not (cluster and resources):
        return contextlib.nullcontext()
    import dask

    return dask.annotate(resources=resources)


@flow(name="render-course", task_runner=task_runner_for(_settings_of_this_process()))
def render_course(
    manifest: str,
    store: str,
    catalogue: str,
    run_id: str | None = None,
    only: list[str] | None = None,
    voice: str | None = None,
    tier: str | None = None,
    force: bool = False,
    settings: Settings | None = None,
    retry_fallbacks: bool = False,
) -> dict:
    """Render every clip of `manifest` whose content key is not yet in `store`.

    A clip that fails is recorded and the others go on; the returned summary says which.
    `manifest`: a path, or a course source in the store (`STORE/{course}/_source/{digest}/{file}` or
    `STORE/{course}/_source/latest`, narro.source), which is fetched and rendered from here.
    `voice`/`tier` override the manifest for the `only` clips (the dashboard's retry with another voice);
    `force` re-renders them even when unchanged; `retry_fallbacks` re-renders clips the fallback voice
    spoke even while their own voice does not answer (narro.batch). `settings`: the CLI's or dashboard's; a deployment's
    run, which has none, reads them where it runs (environment and project file).
    """
    settings = settings or Settings.load()
    target, records = open_store(store, settings.s3.endpoint_url), catalogue_at(catalogue)
    manifest, source = _local_manifest(manifest, settings)
    batch = prepare(manifest, target, records, run_id=run_id, only=only, voice=voice, tier=tier, force=force,
                    retry_fallbacks=retry_fallbacks, settings=settings)
    if source is not None:  # sidecars name the upload, not this machine's copy of it
        batch.context = dataclasses.replace(batch.context, manifest_path=source)
    # Each clip is rendered by one run at a time: clips a live run already holds are left to it.
    held = set(records.acquire_leases(batch.course.slug, [spec.narration_id for spec in batch.to_render],
                                      batch.context.run_id, settings.cluster.lease_ttl_s))
    batch.held_elsewhere = [spec for spec in batch.to_render if spec.narration_id not in held]
    batch.to_render = [spec for spec in batch.to_render if spec.narration_id in held]
    limits = edge_limit.rate_limits(batch.to_render)
    if limits:
        edge_limit.install(limits, settings.edge.concurrency)  # cap on requests to online engines, across all workers
    cluster = settings.cluster.mode == "cluster"
    with _leases_kept(records, batch.context.run_id, settings.cluster.lease_ttl_s):
        futures = []
        for spec in batch.to_render:
            with _placed(dict(engine_kind(spec.engine_voice.engine).resources), cluster):
                futures.append(render_clip.submit(spec, batch.context, store, catalogue, settings))
        wait(futures)
    summary = conclude(batch, target, records, settings.qa)
    artifacts.publish(batch, summary, target)  # what the run did, in the Prefect UI
    return {
        "run_id": summary.run_id,
        "course": summary.course,
        "rendered": [state.narration_id for state in summary.rendered],
        "cached": [state.narration_id for state in summary.cached],
        "failed": {state.narration_id: state.last_error for state in summary.failed},
        "held_elsewhere": [spec.narration_id for spec in batch.held_elsewhere],
        "index_error": summary.index_error,
        "summary": summary,  # the run's account from its one catalogue read: `narro render` prints it as is
    }


def render_course_with(concurrency: int, settings: Settings):
    """The flow on the task runner the settings ask for (threads: `concurrency` clips at a time)."""
    return render_course.with_options(task_runner=task_runner_for(settings, concurrency))
