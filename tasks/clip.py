"""The per-clip task the course flow fans out: its steps in order, its outcome in the catalogue."""

from __future__ import annotations

import functools

from prefect import task
from prefect.cache_policies import NO_CACHE

from narro.catalogue import FAILED, RENDERED, Catalogue
from narro.errors import NarroError
from narro.plan import ClipSpec
from narro.render import RunContext
from tasks import steps


@functools.cache
def catalogue_at(url: str) -> Catalogue:
    """One catalogue connection pool per worker process."""
    return Catalogue(url)


def describe(error: BaseException) -> str:
    """A one-line reason for the catalogue and the summary."""
    if isinstance(error, NarroError):
        return str(error)
    return f"{type(error).__name__}: {error}"


@task(name="render-clip", task_run_name="render-{spec.narration_id}", cache_policy=NO_CACHE, persist_result=False)
def render_clip(spec: ClipSpec, context: RunContext, store_url: str, catalogue_url: str) -> dict:
    catalogue = catalogue_at(catalogue_url)
    attempt = catalogue.mark_running(spec.course, spec.narration_id, context.run_id)
    try:
        synthesis, synthesis_s = steps.synthesize(spec)
        clip = steps.post_process(spec, synthesis, synthesis_s)
        record = steps.publish(store_url, spec, clip, context)
    except Exception as error:
        catalogue.finish_attempt(spec.course, spec.narration_id, attempt, status=FAILED, error=describe(error))
        catalogue.mark_failed(spec.course, spec.narration_id, describe(error), context.run_id)
        raise
    catalogue.finish_attempt(spec.course, spec.narration_id, attempt, status=RENDERED, engine=clip.engine,
                             metrics={"duration_s": clip.duration_s, "loudness_lufs": clip.loudness_lufs,
                                      "true_peak_dbtp": clip.true_peak_dbtp})
    catalogue.mark_rendered(
        spec.course, spec.narration_id, content_key=spec.content_key, engine=clip.engine,
        duration_s=clip.duration_s, loudness_lufs=clip.loudness_lufs, true_peak_dbtp=clip.true_peak_dbtp,
        run_id=context.run_id,
    )
    return record
