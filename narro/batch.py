"""A course render as a batch: what to do before the fan-out, and the account after it.

Kept apart from Prefect so the CLI can find out that nothing changed (and finish in a
second) without starting the flow engine at all.

`plan_batch` only reads (the store, the catalogue, and one probe of an online voice): a dry
run uses it and changes nothing anywhere. `prepare` plans the same way, then records the run
and its clips in the catalogue.

Each clip to render carries its reasons (`Batch.reasons`): new, text changed, voice or engine
changed, last attempt failed, spoken by the fallback, and so on. A clip the fallback voice
spoke last time is re-rendered only when its own voice answers again (`EngineKind.probe`, once
per engine per run) or when asked (`retry_fallbacks`); until then it counts as unchanged, so an
offline render of an unchanged course renders nothing.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from narro import consent
from narro.catalogue import FAILED, RENDERED, Catalogue, ClipState
from narro.engines import engine_kind
from narro.errors import EngineUnavailable, ManifestError, Problem, StoreError
from narro.manifest import Course, load_course
from narro.plan import ClipSpec, clip_spec, effective_spec, plan, text_sha256
from narro.render import RunContext, course_index, manifest_label
from narro.report import write_course_report
from narro.settings import QaSettings, Settings
from narro.store import Store
from narro.voices import TIERS


@dataclass(frozen=True)
class Reason:
    """Why a clip renders (or, for a kept fallback clip, why it does not)."""

    kind: str
    """Short and countable: 'new', 'text changed', 'voice changed', 'last attempt failed', ..."""
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


@dataclass
class Batch:
    course: Course
    context: RunContext
    specs: list[ClipSpec]
    """Every clip of the course, in course order."""
    to_render: list[ClipSpec]
    """Clips whose content key is not in the store (or that were asked for by id)."""
    cached: list[ClipSpec] = field(default_factory=list)
    """Clips left as the store has them: current, or kept fallback clips (`kept_fallbacks`)."""
    held_elsewhere: list[ClipSpec] = field(default_factory=list)
    """Clips another live run is rendering (it holds their leases): this run leaves them alone."""
    reasons: dict[str, list[Reason]] = field(default_factory=dict)
    """Narration id -> why it renders (every clip of `to_render`), or why a fallback clip is kept."""
    kept_fallbacks: list[ClipSpec] = field(default_factory=list)
    """Clips the fallback voice spoke, kept because their own voice still does not answer (also in `cached`)."""
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The published sidecars read while planning, by narration id."""


@dataclass
class Summary:
    run_id: str
    course: str
    rendered: list[ClipState]
    cached: list[ClipState]
    failed: list[ClipState]
    index_error: str | None = None
    """Why the course index (or report) could not be written: the store did not answer in time."""

    @property
    def ok(self) -> bool:
        return not self.failed and self.index_error is None

    @property
    def fallbacks(self) -> list[ClipState]:
        """Rendered or unchanged clips whose published audio the fallback voice spoke."""
        return [state for state in self.rendered + self.cached if state.fallback]


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def plan_batch(
    manifest: Path | str,
    store: Store,
    catalogue: Catalogue | None,
    *,
    run_id: str | None = None,
    only: list[str] | None = None,
    voice: str | None = None,
    tier: str | None = None,
    force: bool = False,
    retry_fallbacks: bool = False,
    settings: Settings | None = None,
) -> Batch:
    """Plan the course and split what renders from what stays, with the reasons; writes nothing.

    A clip is skipped only when the store holds an object with its content key: the catalogue
    alone is not trusted, since the store may have been emptied or moved (it only adds reasons,
    e.g. that the last attempt failed; None: no catalogue yet). `voice` and `tier` override the
    manifest for the `only` clips (every clip when `only` is None): a one-off re-render, e.g. a
    retry with another voice; the next plain render follows the manifest again. `force` renders
    the chosen clips even when the store already holds their key. Clips the fallback voice spoke
    are kept unless their voice answers `settings`' probe or `retry_fallbacks` (no `settings`:
    no probe, they are kept).
    """
    course = load_course(manifest)
    specs = plan(course)
    if only is not None:
        unknown = sorted(set(only) - {spec.narration_id for spec in specs})
        if unknown:
            raise KeyError(f"not in {course.slug}: {', '.join(unknown)}")
    if voice is not None or tier is not None:
        specs = override(course, specs, only, voice, tier)
    refused = consent.spec_problems(specs, settings.consent.public_figures if settings else None)
    if refused:  # a cloned voice that may not speak stops the run before anything is written (narro.consent)
        raise ManifestError(refused)
    context = RunContext(run_id or new_run_id(), manifest_label(Path(manifest)), course.manifest_sha256)
    batch = Batch(course, context, specs, to_render=[])
    states = {state.narration_id: state for state in catalogue.clips(course.slug)} if catalogue else {}
    fallback_clips: list[ClipSpec] = []
    for spec in specs:
        if only is not None and spec.narration_id not in only:
            continue
        published = store.published_key(spec.course, spec.narration_id)
        if not force and published == spec.content_key:
            batch.cached.append(spec)
            continue
        sidecar = store.read_sidecar(spec.course, spec.narration_id) if published is not None else None
        if sidecar is not None:
            batch.sidecars[spec.narration_id] = sidecar
        reasons = why(spec, published, sidecar, states.get(spec.narration_id))
        if force:
            reasons.insert(0, Reason("asked for", "re-rendered even if unchanged"))
        batch.reasons[spec.narration_id] = reasons
        if not force and not retry_fallbacks and [r.kind for r in reasons] == [FALLBACK]:
            fallback_clips.append(spec)  # only the fallback stands between it and current: ask its voice
        else:
            batch.to_render.append(spec)
    unavailable = _probe(fallback_clips, settings, context.run_id)
    for spec in fallback_clips:
        why_not = unavailable.get(spec.engine_voice.engine)
        if why_not is None:
            batch.reasons[spec.narration_id].append(Reason("its own voice answers again"))
            batch.to_render.append(spec)
        else:
            batch.reasons[spec.narration_id].append(Reason("kept until its own voice answers", why_not))
            batch.cached.append(spec)
            batch.kept_fallbacks.append(spec)
    order = {spec.narration_id: index for index, spec in enumerate(specs)}
    batch.to_render.sort(key=lambda spec: order[spec.narration_id])
    batch.cached.sort(key=lambda spec: order[spec.narration_id])
    return batch


def prepare(
    manifest: Path | str,
    store: Store,
    catalogue: Catalogue,
    *,
    run_id: str | None = None,
    only: list[str] | None = None,
    voice: str | None = None,
    tier: str | None = None,
    force: bool = False,
    retry_fallbacks: bool = False,
    settings: Settings | None = None,
) -> Batch:
    """`plan_batch`, then record it: the run, every clip's row, the unchanged clips, the pending ones."""
    batch = plan_batch(manifest, store, catalogue, run_id=run_id, only=only, voice=voice, tier=tier, force=force,
                       retry_fallbacks=retry_fallbacks, settings=settings)
    catalogue.start_run(batch.context.run_id, batch.course.slug)
    for spec in batch.specs:
        catalogue.register(spec.course, spec.narration_id, title=spec.title, voice=spec.voice, tier=spec.tier,
                           content_key=spec.content_key)
    for spec in batch.cached:
        catalogue.mark_cached(spec.course, spec.narration_id, content_key=spec.content_key,
                              sidecar=batch.sidecars.get(spec.narration_id)
                              or store.read_sidecar(spec.course, spec.narration_id))
    for spec in batch.to_render:
        catalogue.mark_pending(spec.course, spec.narration_id, batch.context.run_id)
    return batch


FALLBACK = "spoken by the fallback"


def why(spec: ClipSpec, published_key: str | None, sidecar: dict[str, Any] | None,
        state: ClipState | None) -> list[Reason]:
    """Why `spec` is not what the store holds: what differs from the published sidecar, and how the last try ended.

    `published_key`: the store's key for the clip (None: absent or incomplete); `state`: its catalogue row.
    Empty when the store holds exactly this spec.
    """
    reasons: list[Reason] = []
    if sidecar is None:
        if state is not None and state.published_key is not None:
            reasons.append(Reason("published audio missing", "the store no longer holds the rendered clip"))
        elif state is None or state.attempts == 0:
            reasons.append(Reason("new"))
    elif published_key != spec.content_key:
        reasons += _differences(spec, sidecar)
    if state is not None and state.status == FAILED:
        reasons.append(Reason("last attempt failed", _shorten(state.last_error or "no reason recorded")))
    elif sidecar is None and not reasons:
        reasons.append(Reason("never finished", f"the catalogue has it {state.status}" if state else ""))
    return reasons


def _differences(spec: ClipSpec, sidecar: dict[str, Any]) -> list[Reason]:
    """What changed between the published clip (its sidecar) and the spec asked for now."""
    reasons = []
    fallback = sidecar.get("fallback")
    planned_key = fallback.get("planned_content_key") if isinstance(fallback, dict) else None
    if isinstance(fallback, dict):
        said = f"{fallback.get('to')} spoke it: {_shorten(str(fallback.get('reason', '')))}"
        if not spec.allow_fallback:
            return [Reason(FALLBACK, said + "; the manifest now forbids the fallback (fallback: false)")]
        if planned_key == spec.content_key:
            # Nothing changed but who spoke; the same fallback voice would make the same clip again.
            if effective_spec(spec, fallback).content_key == sidecar.get("content_key"):
                return [Reason(FALLBACK, said)]
            return [Reason(FALLBACK, said), Reason("fallback voice changed")]
        reasons.append(Reason(FALLBACK, said))
    if sidecar.get("text_sha256") != text_sha256(spec.text):
        reasons.append(Reason("text changed"))
    if sidecar.get("voice") != spec.voice:
        reasons.append(Reason("voice changed", f"{sidecar.get('voice')} → {spec.voice}"))
    if sidecar.get("tier") != spec.tier:
        reasons.append(Reason("tier changed", f"{sidecar.get('tier')} → {spec.tier}"))
    if not isinstance(fallback, dict) and sidecar.get("voice") == spec.voice:
        engine = {k: v for k, v in (sidecar.get("engine") or {}).items() if k != "name"}
        wanted = engine_kind(spec.engine_voice.engine).identity(spec.engine_voice)
        changed = [f"{k} {engine.get(k)} → {wanted.get(k)}" for k in sorted(set(engine) | set(wanted))
                   if engine.get(k) != wanted.get(k)]
        if changed:
            reasons.append(Reason("engine changed", ", ".join(changed[:3])))
    if sidecar.get("post") != spec.post.as_dict():
        reasons.append(Reason("post-processing changed"))
    if sidecar.get("title") != spec.title:
        reasons.append(Reason("title changed", f"'{sidecar.get('title')}' → '{spec.title}'"))
    if not reasons:
        reasons.append(Reason("narro's pipeline changed", "the same script now renders differently"))
    return reasons


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_probed: dict[str, dict[str, str | None]] = {}
"""The last run's probe answers (run id -> engine -> why unavailable): the CLI plans, then its flow plans again."""


def _probe(specs: list[ClipSpec], settings: Settings | None, run_id: str) -> dict[str, str | None]:
    """Engine name -> why its voice cannot speak now (None: it answers), asking each engine of `specs` once.

    Without settings nothing is asked and every engine counts as still unavailable.
    """
    answers = _probed.get(run_id, {})
    for spec in specs:
        name = spec.engine_voice.engine
        if name in answers:
            continue
        if settings is None:
            answers[name] = "not asked (no settings to reach it with)"
            continue
        try:
            engine_kind(name).probe(spec.engine_voice, settings)
            answers[name] = None
        except EngineUnavailable as error:
            answers[name] = str(error)
    _probed.clear()
    _probed[run_id] = answers
    return answers


def override(course: Course, specs: list[ClipSpec], only: list[str] | None, voice: str | None,
             tier: str | None) -> list[ClipSpec]:
    """The specs with `voice`/`tier` put in place of the manifest's for the chosen clips.

    Raises ManifestError when the course's voice registry lacks the voice or its tier.
    """
    registry = course.voices.source or "the built-in voice registry"
    if voice is not None and course.voices.get(voice) is None:
        raise ManifestError([Problem(course.manifest_path, None, "voice",
                                     f"unknown voice '{voice}'; {registry} defines: {', '.join(course.voices.names())}")])
    if tier is not None and tier not in TIERS:
        raise ManifestError([Problem(course.manifest_path, None, "tier",
                                     f"unknown tier '{tier}'; use one of: {', '.join(TIERS)}")])
    changed = []
    for spec in specs:
        if only is not None and spec.narration_id not in only:
            changed.append(spec)
            continue
        narration = course.narration(spec.narration_id)
        chosen = dataclasses.replace(narration, voice=voice or narration.voice, tier=tier or narration.tier)
        entry = course.voices.get(chosen.voice)
        if entry is None or entry.for_tier(chosen.tier) is None:
            raise ManifestError([Problem(course.manifest_path, None, "tier",
                                         f"voice '{chosen.voice}' has no {chosen.tier}-tier engine in {registry}")])
        changed.append(clip_spec(course, chosen, spec.post))
    return changed


STORE_WAIT_S = 60.0
"""How long the end of a run waits for a store that stopped answering (an S3 outage) to take the index."""


def _once_store_answers(write: Callable[[], None], wait_s: float) -> str | None:
    """Run `write`, again with growing pauses while the store fails, for up to `wait_s`.

    Returns None once it took, else the last error."""
    deadline, pause = time.monotonic() + wait_s, 1.0
    while True:
        try:
            write()
            return None
        except StoreError as error:
            if time.monotonic() + pause > deadline:
                return str(error)
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


def conclude(batch: Batch, store: Store, catalogue: Catalogue, qa: QaSettings,
             store_wait_s: float = STORE_WAIT_S) -> Summary:
    """Close the run, then write the course index (only clips whose objects are whole) and report.

    The account comes from the catalogue, so a store that stopped answering cannot lose it: the
    index is written once the store answers again, within `store_wait_s`, else the summary says it
    was not (`index_error`) and the next run writes it. `qa`: the thresholds the course report shows.
    """
    states = {state.narration_id: state for state in catalogue.clips(batch.course.slug)}
    cached_ids = {spec.narration_id for spec in batch.cached}
    rendered, cached, failed = [], [], []
    for spec in batch.to_render + batch.cached:  # held_elsewhere: the run holding them accounts for them
        state = states[spec.narration_id]
        if spec.narration_id in cached_ids:
            cached.append(state)
        elif state.status == RENDERED and (state.published_key == spec.content_key or state.fallback):
            rendered.append(state)
        else:
            if state.status != FAILED:
                # The worker died before it could say why; the clip must not look rendered.
                catalogue.mark_failed(spec.course, spec.narration_id, "render did not finish", batch.context.run_id)
                state = catalogue.clip(spec.course, spec.narration_id) or state
            failed.append(state)
    catalogue.finish_run(batch.context.run_id, rendered=len(rendered), failed=len(failed), cached=len(cached))

    def write() -> None:
        store.write_index(batch.course.slug, course_index(batch.specs, store))
        write_course_report(batch.specs, store, catalogue, qa)  # {course}/report.html: QA per clip (narro.report)

    index_error = _once_store_answers(write, store_wait_s)
    return Summary(batch.context.run_id, batch.course.slug, rendered, cached, failed, index_error)
