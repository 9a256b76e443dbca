"""A course render as a batch: what to do before the fan-out, and the account after it.

Kept apart from Prefect so the CLI can find out that nothing changed (and finish in a
second) without starting the flow engine at all.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from narro.catalogue import FAILED, RENDERED, Catalogue, ClipState
from narro.errors import ManifestError, Problem
from narro.manifest import Course, load_course
from narro.plan import ClipSpec, clip_spec, plan
from narro.voices import TIERS
from narro.render import RunContext, course_index, manifest_label
from narro.report import write_course_report
from narro.store import Store


@dataclass
class Batch:
    course: Course
    context: RunContext
    specs: list[ClipSpec]
    """Every clip of the course, in course order."""
    to_render: list[ClipSpec]
    """Clips whose content key is not in the store (or that were asked for by id)."""
    cached: list[ClipSpec] = field(default_factory=list)


@dataclass
class Summary:
    run_id: str
    course: str
    rendered: list[ClipState]
    cached: list[ClipState]
    failed: list[ClipState]

    @property
    def ok(self) -> bool:
        return not self.failed


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


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
) -> Batch:
    """Plan the course, register every clip, and split rendered-already from to-render.

    A clip is skipped only when the store holds an object with its content key: the catalogue
    alone is not trusted, since the store may have been emptied or moved. `voice` and `tier`
    override the manifest for the `only` clips (every clip when `only` is None): a one-off
    re-render, e.g. a retry with another voice; the next plain render follows the manifest again.
    `force` renders the chosen clips even when the store already holds their key.
    """
    course = load_course(manifest)
    specs = plan(course)
    if only is not None:
        unknown = sorted(set(only) - {spec.narration_id for spec in specs})
        if unknown:
            raise KeyError(f"not in {course.slug}: {', '.join(unknown)}")
    if voice is not None or tier is not None:
        specs = override(course, specs, only, voice, tier)
    context = RunContext(run_id or new_run_id(), manifest_label(Path(manifest)), course.manifest_sha256)
    batch = Batch(course, context, specs, to_render=[])
    catalogue.start_run(context.run_id, course.slug)
    for spec in specs:
        catalogue.register(spec.course, spec.narration_id, title=spec.title, voice=spec.voice, tier=spec.tier,
                           content_key=spec.content_key)
        if only is not None and spec.narration_id not in only:
            continue
        if not force and store.published_key(spec.course, spec.narration_id) == spec.content_key:
            batch.cached.append(spec)
            catalogue.mark_cached(spec.course, spec.narration_id, content_key=spec.content_key,
                                  sidecar=store.read_sidecar(spec.course, spec.narration_id))
        else:
            batch.to_render.append(spec)
            catalogue.mark_pending(spec.course, spec.narration_id, context.run_id)
    return batch


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


def conclude(batch: Batch, store: Store, catalogue: Catalogue) -> Summary:
    """Write the course index (only clips whose objects are whole) and close the run."""
    store.write_index(batch.course.slug, course_index(batch.specs, store))
    states = {state.narration_id: state for state in catalogue.clips(batch.course.slug)}
    cached_ids = {spec.narration_id for spec in batch.cached}
    rendered, cached, failed = [], [], []
    for spec in batch.to_render + batch.cached:
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
    write_course_report(batch.specs, store, catalogue)  # {course}/report.html: QA per clip (narro.report)
    return Summary(batch.context.run_id, batch.course.slug, rendered, cached, failed)
