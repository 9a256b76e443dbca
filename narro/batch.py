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
from narro.catalogue import FAILED, RENDERED, AttemptState, Catalogue, ClipState, CourseResults
from narro.engines import engine_kind
from narro.errors import EngineUnavailable, ManifestError, Problem, StoreError
from narro.index import Published, course_index, known_entries
from narro.manifest import Course, load_course
from narro.plan import ClipSpec, RunContext, clip_spec, effective_spec, manifest_label, plan, text_sha256
from narro.post import PostSettings
from narro.report import write_course_report
from narro.retag import retag
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
    to_retag: list[ClipSpec] = field(default_factory=list)
    """Clips whose published audio is current and only the title changed: re-tagged, not synthesised (narro.retag)."""
    retagged: list[ClipSpec] = field(default_factory=list)
    """The clips of `to_retag` that `prepare` re-tagged (one that could not be goes to `to_render`)."""
    known: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The course index's entries as planning found it (narro.index): what the store held, as last checked."""
    published: dict[str, Published] = field(default_factory=dict)
    """What planning's listing found published, by narration id."""
    catalogued: dict[str, ClipState] = field(default_factory=dict)
    """The catalogue's rows for the course as planning read them (empty without a catalogue)."""


@dataclass
class Summary:
    run_id: str
    course: str
    rendered: list[ClipState]
    cached: list[ClipState]
    failed: list[ClipState]
    index_error: str | None = None
    """Why the course index (or report) could not be written: the store did not answer in time."""
    history: dict[str, list[AttemptState]] = field(default_factory=dict)
    """The course's attempts, from the same read as the clips (the QA table and run artifact show them)."""
    retagged: list[ClipState] = field(default_factory=list)
    """Clips whose title alone changed: re-tagged and re-published without synthesis (narro.retag)."""

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
    specs = plan(course, PostSettings.of(settings or Settings.load()))
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
    batch.catalogued = states
    # One listing of the store, checked against the index (narro.index), instead of reads per clip.
    batch.known = known_entries(store, course.slug)
    batch.published = store.published_clips(course.slug, batch.known)
    fallback_clips: list[ClipSpec] = []
    for spec in specs:
        if only is not None and spec.narration_id not in only:
            continue
        clip = batch.published.get(spec.narration_id)
        published = clip.content_key if clip is not None else None
        if not force and clip is not None and published == spec.content_key:
            if clip.title == spec.title:
                batch.cached.append(spec)
            else:
                batch.to_retag.append(spec)
                batch.reasons[spec.narration_id] = [title_changed(clip.title, spec.title)]
            continue
        sidecar = (clip.sidecar or store.read_sidecar(spec.course, spec.narration_id)) if clip is not None else None
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
    """`plan_batch`, then record it: the run, every clip's row, the unchanged clips, the pending ones.

    Clips whose title alone changed are re-tagged here (narro.retag): no synthesis, so no flow.
    Rows the catalogue already holds as they would be written are left alone, so an unchanged
    course costs no catalogue write per clip.
    """
    batch = plan_batch(manifest, store, catalogue, run_id=run_id, only=only, voice=voice, tier=tier, force=force,
                       retry_fallbacks=retry_fallbacks, settings=settings)
    catalogue.start_run(batch.context.run_id, batch.course.slug)
    states = batch.catalogued
    for spec in batch.specs:
        state = states.get(spec.narration_id)
        if state is None or (state.title, state.voice, state.tier, state.content_key) != \
                (spec.title, spec.voice, spec.tier, spec.content_key):
            catalogue.register(spec.course, spec.narration_id, title=spec.title, voice=spec.voice, tier=spec.tier,
                               content_key=spec.content_key)
    for spec in batch.to_retag:
        listed = batch.published.get(spec.narration_id)
        try:
            batch.sidecars[spec.narration_id] = retag(store, spec, (listed.sidecar if listed else None)
                                                      or _sidecar(store, spec), batch.context.run_id)
        except StoreError as error:  # the MP3 is not what its sidecar says: make the clip again
            batch.reasons[spec.narration_id].append(Reason("could not re-tag", str(error)))
            batch.to_render.append(spec)
            continue
        batch.retagged.append(spec)
        catalogue.mark_cached(spec.course, spec.narration_id, content_key=spec.content_key,
                              sidecar=batch.sidecars[spec.narration_id])
    for spec in batch.cached:
        if not _recorded(states.get(spec.narration_id), spec, batch.published.get(spec.narration_id)):
            listed = batch.published.get(spec.narration_id)
            catalogue.mark_cached(spec.course, spec.narration_id, content_key=spec.content_key,
                                  sidecar=(listed.sidecar if listed else None) or batch.sidecars.get(spec.narration_id)
                                  or _sidecar(store, spec))
    for spec in batch.to_render:
        catalogue.mark_pending(spec.course, spec.narration_id, batch.context.run_id)
    return batch


def _sidecar(store: Store, spec: ClipSpec) -> dict[str, Any]:
    return store.read_sidecar(spec.course, spec.narration_id) or {}


def _recorded(state: ClipState | None, spec: ClipSpec, published: Published | None) -> bool:
    """Whether the catalogue already has the clip as `mark_cached` would write it."""
    return (state is not None and published is not None and state.status == RENDERED and state.last_error is None
            and state.content_key == spec.content_key and state.published_key == published.content_key
            and (state.fallback is None) == (published.fallback is None) and state.duration_s is not None)


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
    elif sidecar.get("title") != spec.title:  # the same audio: only its tag differs (narro.retag)
        reasons.append(title_changed(sidecar.get("title"), spec.title))
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
        reasons.append(title_changed(sidecar.get("title"), spec.title))
    if not reasons:
        reasons.append(Reason("narro's pipeline changed", "the same script now renders differently"))
    return reasons


def title_changed(published: str | None, wanted: str) -> Reason:
    return Reason("title changed", f"'{published}' → '{wanted}'")


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
    The catalogue is read once (clips and attempts); the summary, QA table and report all use that read.
    """
    results = catalogue.results(batch.course.slug)
    states = dict(results.clips)  # updated below where a clip is found unfinished
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
                state = states[spec.narration_id] = catalogue.clip(spec.course, spec.narration_id) or state
            failed.append(state)
    retagged = [states[spec.narration_id] for spec in batch.retagged]
    catalogue.finish_run(batch.context.run_id, rendered=len(rendered), failed=len(failed),
                         cached=len(cached) + len(retagged))
    changed = bool(batch.to_render or batch.retagged)

    def write() -> None:
        # The listing planning made still holds when this run published nothing; else list again
        # (narro.index: only the clips published since are read, each sidecar once).
        published = store.published_clips(batch.course.slug, batch.known) if changed else batch.published
        index = course_index(batch.specs, published)
        if not changed and _same_clips(index, batch.known):
            return  # nothing was published and the index says so already: no write per run
        # {course}/report.html
        write_course_report(batch.specs, CourseResults(states, results.history, results.verdicts), store, qa)
        store.write_index(batch.course.slug, index)  # last: an index in place means the report went before it

    index_error = _once_store_answers(write, store_wait_s)
    return Summary(batch.context.run_id, batch.course.slug, rendered, cached, failed, index_error, results.history,
                   retagged)


def _same_clips(index: dict[str, Any], known: dict[str, dict[str, Any]]) -> bool:
    """Whether `index` lists exactly the clips of the index in the store (`known`), in the same order."""
    return [(clip["id"], clip) for clip in index["clips"]] == list(known.items())
