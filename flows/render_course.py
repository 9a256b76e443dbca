"""Render a course: plan, skip what the store already holds, fan the rest out, account for every clip."""

from __future__ import annotations

from prefect import flow
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from narro.batch import conclude, prepare
from narro.store import open_store
from tasks import edge_limit
from tasks.clip import catalogue_at, render_clip

DEFAULT_CONCURRENCY = 2


@flow(name="render-course", task_runner=ThreadPoolTaskRunner(max_workers=DEFAULT_CONCURRENCY))
def render_course(
    manifest: str,
    store: str,
    catalogue: str,
    run_id: str | None = None,
    only: list[str] | None = None,
    voice: str | None = None,
    tier: str | None = None,
    force: bool = False,
) -> dict:
    """Render every clip of `manifest` whose content key is not yet in `store`.

    A clip that fails is recorded and the others go on; the returned summary says which.
    `voice`/`tier` override the manifest for the `only` clips (the dashboard's retry with another voice);
    `force` re-renders them even when unchanged.
    """
    target, records = open_store(store), catalogue_at(catalogue)
    batch = prepare(manifest, target, records, run_id=run_id, only=only, voice=voice, tier=tier, force=force)
    if edge_limit.uses_edge(batch.to_render):
        edge_limit.install()  # cap on requests to the edge-tts service, across all workers
    futures = [render_clip.submit(spec, batch.context, store, catalogue) for spec in batch.to_render]
    wait(futures)
    summary = conclude(batch, target, records)
    return {
        "run_id": summary.run_id,
        "course": summary.course,
        "rendered": [state.narration_id for state in summary.rendered],
        "cached": [state.narration_id for state in summary.cached],
        "failed": {state.narration_id: state.last_error for state in summary.failed},
    }


def render_course_with(concurrency: int):
    """The flow with its task runner capped at `concurrency` clips at a time."""
    return render_course.with_options(task_runner=ThreadPoolTaskRunner(max_workers=concurrency))
