"""The per-clip task the course flow fans out: its steps in order, its outcome in the catalogue."""

from __future__ import annotations

import functools
from dataclasses import replace

from prefect import task
from prefect.cache_policies import NO_CACHE

from narro import heal, render
from narro.catalogue import FAILED, RENDERED, Catalogue
from narro.errors import NarroError, QualityError
from narro.plan import ClipSpec
from narro.qa import QaReport, QaSettings
from narro.render import FinishedClip, RunContext
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
    """Make takes until one passes the quality gate (narro.heal), then publish it.

    Every take is an attempt in the catalogue with its QA metrics. When no take passes, the
    clip is marked failed with each take's failed checks and nothing is published (an earlier
    published version stays).
    """
    catalogue = catalogue_at(catalogue_url)
    settings = QaSettings.from_env()
    open_attempts: dict[int, int] = {}

    def take_steps(take_spec: ClipSpec, plan: heal.TakePlan, reason: str) -> tuple[FinishedClip, QaReport]:
        # Plain calls, not tasks: their results are audio (see tasks/steps.py).
        synthesis, synthesis_s = heal.synthesize_take(take_spec, plan, reason)
        clip = render.post_process(take_spec, synthesis, synthesis_s)
        return clip, steps.check(take_spec, synthesis, clip, settings)

    def make(take_spec: ClipSpec, plan: heal.TakePlan, reason: str) -> heal.Take:
        attempt = catalogue.mark_running(spec.course, spec.narration_id, context.run_id)
        try:
            take = heal.run_take(take_spec, plan, reason, take_steps)
        except Exception as error:
            _fail(catalogue, spec, context, attempt, describe(error), None)
            raise
        if take.passed:
            open_attempts[plan.number] = attempt  # finished after publishing
        else:
            catalogue.finish_attempt(spec.course, spec.narration_id, attempt, status=FAILED, error=take.reason(),
                                     engine=getattr(take.result, "engine", None), metrics=take.metrics)
        return take

    outcome = heal.heal(spec, settings.max_takes, make)
    chosen = outcome.chosen
    if chosen is None:
        reason = f"quality gate: no take passed: {outcome.failure()}"
        catalogue.mark_failed(spec.course, spec.narration_id, reason, context.run_id)
        raise QualityError(reason)
    clip = chosen.result
    assert isinstance(clip, FinishedClip)
    clip.qa = heal.sidecar_qa(outcome, chosen, settings)
    take_spec = replace(spec, engine_voice=chosen.plan.voice)
    attempt = open_attempts[chosen.plan.number]
    try:
        record = steps.publish(store_url, take_spec, clip, context)
    except Exception as error:
        _fail(catalogue, spec, context, attempt, describe(error), chosen.metrics)
        raise
    catalogue.finish_attempt(spec.course, spec.narration_id, attempt, status=RENDERED, engine=clip.engine,
                             metrics=chosen.metrics)
    catalogue.mark_rendered(
        spec.course, spec.narration_id, content_key=spec.content_key, engine=clip.engine,
        duration_s=clip.duration_s, loudness_lufs=clip.loudness_lufs, true_peak_dbtp=clip.true_peak_dbtp,
        run_id=context.run_id, published_key=record["content_key"],
        fallback=f"{clip.fallback['to']}: {clip.fallback['reason']}" if clip.fallback else None,
    )
    return record


def _fail(catalogue: Catalogue, spec: ClipSpec, context: RunContext, attempt: int, reason: str,
          metrics: dict | None) -> None:
    catalogue.finish_attempt(spec.course, spec.narration_id, attempt, status=FAILED, error=reason, metrics=metrics)
    catalogue.mark_failed(spec.course, spec.narration_id, reason, context.run_id)
