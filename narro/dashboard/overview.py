"""What the dashboard shows: courses and clips from the catalogue, set against their manifests.

The catalogue says what happened; the manifest says what is wanted now. A clip is **stale**
when the audio in the store (its published key) is not what the manifest plans today; the
published sidecar says why (narro.batch.why: text changed, voice changed, spoken by the
fallback voice, ...). Figures shown are the published take's; an attempt that failed after it
is shown apart.
Manifests come from `narro dashboard --manifest` (files or folders); for a course not named
there, the manifest path recorded in a published clip's sidecar is tried.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from narro.batch import why
from narro.catalogue import FAILED, PENDING, RENDERED, RUNNING, AttemptState, Catalogue, ClipState
from narro.errors import ManifestError, NarroError
from narro.manifest import Course, load_course
from narro.plan import ClipSpec, plan
from narro.report import published_and_failed
from narro.store import Store

NOT_RENDERED = "new"
"""Status shown for a narration in the manifest that the catalogue has never seen."""


@dataclass
class Planned:
    """A course's manifest, loaded and planned, or why it could not be."""

    path: Path
    course: Course | None = None
    specs: dict[str, ClipSpec] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class ClipView:
    """One row of the course page."""

    narration_id: str
    title: str
    status: str
    state: ClipState | None
    spec: ClipSpec | None
    stale: bool | None
    """None when no manifest is known for the course."""
    stale_reasons: tuple[str, ...] = ()
    """Why the published audio is not what the manifest asks for now (when stale)."""
    published_take: AttemptState | None = None
    """The attempt whose take is in the store; its figures are the clip's."""
    failed_after: AttemptState | None = None
    """An attempt that failed after the published take (or with nothing published)."""

    @property
    def fallback_voice(self) -> str | None:
        """The voice that spoke the published audio instead of the planned one, if the fallback did."""
        return self.state.fallback.partition(": ")[0] if self.state and self.state.fallback else None

    @property
    def fallback_reason(self) -> str:
        return self.state.fallback.partition(": ")[2] if self.state and self.state.fallback else ""

    @property
    def override(self) -> str | None:
        """'voice plain' when a dashboard retry rendered it with another voice or tier than the manifest's."""
        if self.state is None or self.spec is None or self.state.published_key is None:
            return None
        changed = [f"{what} {mine}" for what, mine, planned in (("voice", self.state.voice, self.spec.voice),
                                                               ("tier", self.state.tier, self.spec.tier))
                   if mine and mine != planned]
        return ", ".join(changed) or None

    @property
    def busy(self) -> bool:
        return self.status in (PENDING, RUNNING)

    @property
    def playable(self) -> bool:
        return self.state is not None and self.state.published_key is not None

    @property
    def version(self) -> str:
        """Changes whenever anything the row shows changes; the page's live update compares it."""
        s = self.state
        return "-" if s is None else f"{s.status}:{s.attempts}:{s.published_key}:{s.updated_at.isoformat()}:{self.stale}"


@dataclass(frozen=True)
class CourseSummary:
    slug: str
    title: str
    counts: dict[str, int]
    last_run_at: datetime | None
    last_run_id: str | None
    total_duration_s: float
    manifest: str | None
    manifest_error: str | None


class Manifests:
    """Course slug → manifest, reloaded when the file changes."""

    def __init__(self, paths: list[Path]):
        self._paths = paths
        self._by_course: dict[str, Path] = {}
        self._cache: dict[Path, tuple[float, Planned]] = {}
        self._lock = threading.Lock()
        self.problems: list[str] = []
        for path in self._expand(paths):
            planned = self.load(path)
            if planned.course is not None:
                self._by_course.setdefault(planned.course.slug, path)
            elif path.suffix in (".yaml", ".yml") and path in paths:
                self.problems.append(f"{path}: {planned.error}")

    @staticmethod
    def _expand(paths: list[Path]) -> list[Path]:
        found = []
        for path in paths:
            if path.is_dir():
                found += sorted(p for p in path.glob("*.y*ml") if p.name != "voices.yaml")
            else:
                found.append(path)
        return found

    def load(self, path: Path) -> Planned:
        try:
            mtime = path.stat().st_mtime_ns
        except OSError as exc:
            return Planned(path, error=f"cannot read {path}: {exc.strerror or exc}")
        with self._lock:
            cached = self._cache.get(path)
            if cached and cached[0] == mtime:
                return cached[1]
        try:
            course = load_course(path)
            planned = Planned(path, course, {spec.narration_id: spec for spec in plan(course)})
        except ManifestError as exc:
            planned = Planned(path, error="; ".join(str(p) for p in exc.problems[:3]))
        except NarroError as exc:
            planned = Planned(path, error=str(exc))
        with self._lock:
            self._cache[path] = (mtime, planned)
        return planned

    def for_course(self, slug: str, store: Store, catalogue: Catalogue) -> Planned | None:
        path = self._by_course.get(slug) or self._from_sidecars(slug, store, catalogue)
        if path is None:
            return None
        planned = self.load(path)
        if planned.course is not None and planned.course.slug != slug:
            return Planned(path, error=f"{path} is now the manifest of course '{planned.course.slug}'")
        return planned

    def _from_sidecars(self, slug: str, store: Store, catalogue: Catalogue) -> Path | None:
        for state in catalogue.clips(slug):
            if state.published_key is None:
                continue
            sidecar = store.read_sidecar(slug, state.narration_id) or {}
            recorded = (sidecar.get("manifest") or {}).get("path")
            if isinstance(recorded, str) and Path(recorded).is_file():
                self._by_course[slug] = Path(recorded)
                return Path(recorded)
        return None


class Sidecars:
    """Published sidecars read from the store, kept by published key (a published sidecar never changes)."""

    LIMIT = 4096

    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        self._lock = threading.Lock()

    def get(self, state: ClipState) -> dict[str, Any] | None:
        if state.published_key is None:
            return None
        key = (state.course, state.narration_id, state.published_key)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        sidecar = self.store.read_sidecar(state.course, state.narration_id)
        with self._lock:
            if len(self._cache) >= self.LIMIT:
                self._cache.clear()
            self._cache[key] = sidecar
        return sidecar


def clip_views(states: list[ClipState], planned: Planned | None,
               history: dict[str, list[AttemptState]] | None = None, sidecars: Sidecars | None = None) -> list[ClipView]:
    """Catalogue rows in manifest order, then rows the manifest no longer has, then new narrations.

    `history`: the course's attempts (the published take's and a later failed one's figures);
    `sidecars`: the published sidecars, to say why a stale clip is stale.
    """
    by_id = {state.narration_id: state for state in states}
    specs = planned.specs if planned and planned.course else {}
    order = list(specs) + [i for i in by_id if i not in specs]
    views = []
    for narration_id in order:
        state, spec = by_id.get(narration_id), specs.get(narration_id)
        stale, reasons = None, tuple[str, ...]()
        if specs:
            stale = bool(state and state.published_key and (spec is None or state.published_key != spec.content_key))
        if stale and state is not None:
            reasons = _stale_reasons(spec, state, sidecars)
        published, failed = published_and_failed((history or {}).get(narration_id, []), state) if state else (None, None)
        views.append(ClipView(
            narration_id=narration_id,
            title=(spec.title if spec else "") or (state.title if state else ""),
            status=state.status if state else NOT_RENDERED,
            state=state, spec=spec, stale=stale, stale_reasons=reasons, published_take=published, failed_after=failed,
        ))
    return views


def _stale_reasons(spec: ClipSpec | None, state: ClipState, sidecars: Sidecars | None) -> tuple[str, ...]:
    if spec is None:
        return ("the manifest no longer has this narration",)
    sidecar = sidecars.get(state) if sidecars else None
    if sidecar is None:
        return ("the store's copy could not be read to say what changed",)
    # The catalogue's failure is shown on its own; here, only what differs from the manifest.
    return tuple(str(r) for r in why(spec, sidecar.get("content_key"), sidecar, None)) or ("narro's pipeline changed",)


def summarise(slug: str, views: list[ClipView], catalogue: Catalogue, planned: Planned | None) -> CourseSummary:
    counts = {RENDERED: 0, FAILED: 0, PENDING: 0, "stale": 0}
    for view in views:
        if view.status == RENDERED:
            counts[RENDERED] += 1
        elif view.status == FAILED:
            counts[FAILED] += 1
        else:  # pending, running, or a narration not rendered yet
            counts[PENDING] += 1
        counts["stale"] += bool(view.stale)
    run = catalogue.last_run(slug)
    course = planned.course if planned else None
    return CourseSummary(
        slug=slug,
        title=course.title if course else "",
        counts=counts,
        last_run_at=run.finished_at or run.started_at if run else None,
        last_run_id=run.run_id if run else None,
        total_duration_s=sum(v.state.duration_s or 0 for v in views if v.state and v.state.published_key),
        manifest=str(planned.path) if planned else None,
        manifest_error=planned.error if planned else None,
    )


def matches(view: ClipView, show: str, query: str) -> bool:
    """The course page's filters: `failed`, `stale` or `all`, and a case-insensitive search."""
    if show == "failed" and view.status != FAILED:
        return False
    if show == "stale" and not view.stale:
        return False
    if query:
        haystack = " ".join([view.narration_id, view.title, view.spec.script.written if view.spec else "",
                             (view.state.last_error or "") if view.state else ""]).lower()
        return query.lower() in haystack
    return True
