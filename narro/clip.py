"""One clip from spec to store: synthesise → post-process → watermark → QA → publish.

The first four make a take (`make_take`); the heal loop (narro.heal) makes takes until one
passes the quality gate. Every take is an attempt in the catalogue with its QA metrics: a take
that fails is finished as failed at once, the passing one once it is published. When no take
passes, the clip is marked failed with each take's failed checks and nothing is published (an
earlier published version stays).

Plain Python: the Prefect task in tasks/clip.py calls `render_clip` with a `publish` that
retries a store write that failed.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from narro import heal, render
from narro.audit import AuditTrail
from narro.catalogue import FAILED, RENDERED, Catalogue
from narro.consent import ConsentGate
from narro.errors import EngineUnavailable, NarroError, QualityError
from narro.plan import ClipSpec
from narro.qa import QaReport
from narro.render import FinishedClip, RunContext
from narro.settings import Settings
from narro.store import Store

Publish = Callable[[Store, ClipSpec, FinishedClip, RunContext], dict[str, Any]]
log = logging.getLogger(__name__)


def render_clip(spec: ClipSpec, context: RunContext, store: Store, catalogue: Catalogue, settings: Settings,
                publish: Publish = render.publish) -> dict[str, Any]:
    """Make takes until one passes the quality gate, publish it, and return its sidecar.

    Raises QualityError when no take passes, EngineUnavailable when no take could be made (the
    engine is unavailable and its fallback is missing or forbidden), and whatever publishing raised or a take raised
    beyond narro's own errors (a take's NarroError is its verdict); the catalogue records the
    failure first.
    """
    try:
        return _render_clip(spec, context, store, catalogue, settings, publish)
    finally:
        release_freed_memory()


def _render_clip(spec: ClipSpec, context: RunContext, store: Store, catalogue: Catalogue, settings: Settings,
                 publish: Publish) -> dict[str, Any]:
    passing: dict[int, int] = {}  # take number → its attempt, finished once the take is published
    gate = ConsentGate(settings, AuditTrail(store, context.run_id))  # cloned voices: checked, then audited

    def make(take_spec: ClipSpec, plan: heal.TakePlan, reason: str) -> heal.Take:
        attempt = catalogue.mark_running(spec.course, spec.narration_id, context.run_id)
        with _failing(catalogue, spec, context, attempt):
            take = heal.run_take(take_spec, plan, reason, functools.partial(make_take, settings=settings, gate=gate))
        log.info("%s: take %d (%s) %s", spec.object_name, plan.number, plan.variant,
                 "passed" if take.passed else f"failed: {take.reason()}")
        if take.passed:
            passing[plan.number] = attempt
        else:
            catalogue.finish_attempt(spec.course, spec.narration_id, attempt, status=FAILED, error=take.reason(),
                                     engine=take.result.engine if take.result else None, metrics=take.metrics)
        return take

    thresholds = spec.thresholds(settings.qa)  # the manifest's `qa` over the run's settings
    outcome = heal.heal(spec, thresholds.max_takes, make)
    chosen = outcome.chosen
    if chosen is None or chosen.result is None:  # a passing take always has its clip
        if outcome.unavailable:  # nothing was spoken, so nothing was judged: not a quality failure
            reason = f"engine unavailable: {outcome.takes[-1].reason()}"
            catalogue.mark_failed(spec.course, spec.narration_id, reason, context.run_id)
            raise EngineUnavailable(reason)
        reason = f"quality gate: no take passed: {outcome.failure()}"
        catalogue.mark_failed(spec.course, spec.narration_id, reason, context.run_id)
        raise QualityError(reason)
    qa = heal.sidecar_qa(outcome, chosen, thresholds)
    if spec.qa:
        qa["manifest"] = dict(spec.qa)  # which thresholds the manifest chose, beside all of them in `settings`
    clip = replace(chosen.result, qa=qa)
    attempt = passing[chosen.plan.number]
    with _failing(catalogue, spec, context, attempt, chosen.metrics):
        sidecar = publish(store, replace(spec, engine_voice=chosen.plan.voice), clip, context)
    log.info("%s: published take %d, content key %s", spec.object_name, chosen.plan.number, sidecar["content_key"])
    catalogue.finish_attempt(spec.course, spec.narration_id, attempt, status=RENDERED, engine=clip.engine,
                             metrics=chosen.metrics)
    catalogue.mark_rendered(
        spec.course, spec.narration_id, content_key=spec.content_key, engine=clip.engine,
        duration_s=clip.duration_s, loudness_lufs=clip.loudness_lufs, true_peak_dbtp=clip.true_peak_dbtp,
        run_id=context.run_id, published_key=sidecar["content_key"],
        fallback=f"{clip.fallback['to']}: {clip.fallback['reason']}" if clip.fallback else None,
    )
    return sidecar


def make_take(spec: ClipSpec, plan: heal.TakePlan, reason: str, settings: Settings,
              gate: ConsentGate | None = None) -> tuple[FinishedClip, QaReport]:
    """One take of `spec` and the quality gate's verdict on it; `reason` is why the last take failed.

    `gate` clears and audits a cloned voice's synthesis; without one a clone is refused (narro.consent).
    """
    synthesis, synthesis_s = heal.synthesize_take(spec, plan, reason, settings, gate)
    clip = render.marked_and_verified(spec, synthesis, synthesis_s, spec.post.watermark_org)
    report = heal.check_take(spec, synthesis, clip, settings)
    return render.with_captions(spec, synthesis, clip, report.words), report


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None


def release_freed_memory() -> None:
    """Give the memory a clip's takes freed back to the OS.

    glibc keeps freed blocks in its per-thread arenas, where the next clip's arrays of other
    sizes rarely fit, so a worker's RSS crept up clip after clip; trimming after each clip keeps
    it about 55 MB lower and flat (tests/test_memory.py, bench/memory.py). It takes milliseconds.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def describe(error: BaseException) -> str:
    """A one-line reason for the catalogue and the summary."""
    if isinstance(error, NarroError):
        return str(error)
    return f"{type(error).__name__}: {error}"


@contextmanager
def _failing(catalogue: Catalogue, spec: ClipSpec, context: RunContext, attempt: int,
             metrics: dict[str, object] | None = None) -> Iterator[None]:
    """Whatever escapes the block fails the attempt and the clip, with its reason, and goes on up."""
    try:
        yield
    except Exception as error:
        catalogue.finish_attempt(spec.course, spec.narration_id, attempt, status=FAILED, error=describe(error),
                                 metrics=metrics)
        catalogue.mark_failed(spec.course, spec.narration_id, describe(error), context.run_id)
        raise
