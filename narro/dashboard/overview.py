"""What the dashboard shows: courses and clips from the catalogue, set against their manifests.

The catalogue says what happened; the manifest says what is wanted now. A clip is **stale**
when the audio in the store (its published key) is not what the manifest plans today.
Manifests come from `narro dashboard --manifest` (files or folders); for a course not named
there, the manifest path recorded in a published clip's sidecar is tried.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from narro.catalogue import FAILED, PENDING, RENDERED, RUNNING, Catalogue, ClipState
from narro.errors import ManifestError, NarroError
from narro.manifest import Course, load_course
from narro.plan import ClipSpec, plan
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


def clip_views(states: list[ClipState], planned: Planned | None) -> list[ClipView]:
    """Catalogue rows in manifest order, then rows the manifest no longer has, then new narrations."""
    by_id = {state.narration_id: state for state in states}
    specs = planned.specs if planned and planned.course else {}
    order = list(specs) + [i for i in by_id if i not in specs]
    views = []
    for narration_id in order:
        state, spec = by_id.get(narration_id), specs.get(narration_id)
        stale = None
        if specs:
            stale = bool(state and state.published_key and (spec is None or state.published_key != spec.content_key))
        views.append(ClipView(
            narration_id=narration_id,
            title=(spec.title if spec else "") or (state.title if state else ""),
            status=state.status if state else NOT_RENDERED,
            state=state, spec=spec, stale=stale,
        ))
    return views


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
        haystack = " ".join([view.narration_id, view.title, view.spec.text if view.spec else "",
                             (view.state.last_error or "") if view.state else ""]).lower()
        return query.lower() in haystack
    return True
