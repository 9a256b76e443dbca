"""What the dashboard shows: courses and clips from the catalogue, set against their manifests.

The catalogue says what happened; the manifest says what is wanted now. A clip is **stale**
when the audio in the store (its published key) is not what the manifest plans today; the
published sidecar says why (narro.batch.why: text changed, voice changed, spoken by the
fallback voice, ...). Figures shown are the published take's; an attempt that failed after it
is shown apart.
Manifests come from `narro dashboard --manifest` (files or folders); for a course not named
there, the manifest path recorded in a published clip's sidecar is tried.

A course page costs the same few queries whatever the course's size: one light listing of every
clip (status, keys, duration, verdict: the counts, filters and order), then the full rows and
attempt histories of the page shown. Sidecars are read only to say why a clip on the page is stale.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from narro.batch import why
from narro.catalogue import (
    FAILED,
    FLAGGED,
    PENDING,
    RENDERED,
    RUNNING,
    AttemptState,
    Catalogue,
    ClipLine,
    ClipState,
    VerdictState,
)
from narro.errors import ManifestError, NarroError
from narro.manifest import Course, load_course
from narro.plan import ClipSpec, plan
from narro.post import PostSettings
from narro.report import published_and_failed
from narro.review import REVIEW_AGAIN, UNREVIEWED, standing
from narro.store import Store

NOT_RENDERED = "new"
"""Status shown for a narration in the manifest that the catalogue has never seen."""
PAGE_SIZE = 50
SHOWS = ("all", "failed", "stale", "flagged", "review")
"""The course page's filters; `review`: published clips with no verdict on their audio."""


@dataclass
class Planned:
    """A course's manifest, loaded and planned, or why it could not be."""

    path: Path
    course: Course | None = None
    specs: dict[str, ClipSpec] = field(default_factory=dict)
    error: str | None = None
    inputs: tuple[Path, ...] = ()
    """The files it was planned from; a change to any of them plans it again."""


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
    verdict: VerdictState | None = None
    """The reviewer's latest verdict, which holds only for the audio it was given on (see `review`)."""

    @property
    def review(self) -> str:
        """approved, flagged, unreviewed or review again (narro.review.standing)."""
        return standing(self.verdict, self.state.published_key if self.state else None)

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
        if s is None:
            return "-"
        reviewed = self.verdict.reviewed_at.isoformat() if self.verdict else ""
        return f"{s.status}:{s.attempts}:{s.published_key}:{s.updated_at.isoformat()}:{self.stale}:{reviewed}"


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

    def __init__(self, paths: list[Path], post: PostSettings | None = None):
        self._paths = paths
        self._post = post  # keys clips as the dashboard's renders will (the watermark's organisation id)
        self._by_course: dict[str, Path] = {}
        self._cache: dict[Path, tuple[tuple[int, ...], Planned]] = {}
        self._lock = threading.Lock()
        self._not_found: dict[str, float] = {}
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

    # Files beside a manifest that change what it plans (narro.voices, narro.lexicon, narro.consent).
    BESIDE = ("voices.yaml", "lexicon.yaml", "consent.yaml")

    def load(self, path: Path) -> Planned:
        """The manifest planned, again only when it or a file it reads (scripts, voices, lexicon) has changed."""
        try:
            path.stat()
        except OSError as exc:
            return Planned(path, error=f"cannot read {path}: {exc.strerror or exc}")
        with self._lock:
            cached = self._cache.get(path)
        if cached and cached[0] == _stamps(cached[1].inputs):
            return cached[1]
        inputs = (path,) + tuple(path.parent / name for name in self.BESIDE)
        stamps = _stamps(inputs)
        try:
            course = load_course(path)
            scripts = tuple(path.parent / n.source for n in course.narrations if n.source != "inline")
            planned = Planned(path, course, {spec.narration_id: spec for spec in plan(course, self._post)}, inputs=inputs + scripts)
            stamps += _stamps(scripts)
        except ManifestError as exc:
            planned = Planned(path, error="; ".join(str(p) for p in exc.problems[:3]), inputs=inputs)
        except NarroError as exc:
            planned = Planned(path, error=str(exc), inputs=inputs)
        with self._lock:
            self._cache[path] = (stamps, planned)
        return planned

    def for_course(self, slug: str, store: Store, lines: list[ClipLine]) -> Planned | None:
        """The course's manifest: one named at start, else the one its published sidecars record (`lines`: its clips)."""
        path = self._by_course.get(slug) or self._from_sidecars(slug, store, lines)
        if path is None:
            return None
        planned = self.load(path)
        if planned.course is not None and planned.course.slug != slug:
            return Planned(path, error=f"{path} is now the manifest of course '{planned.course.slug}'")
        return planned

    SIDECAR_TRIES = 3
    """Published sidecars read to find a course's manifest: they all record the same one."""
    RECHECK_S = 60.0

    def _from_sidecars(self, slug: str, store: Store, lines: list[ClipLine]) -> Path | None:
        with self._lock:
            if time.monotonic() < self._not_found.get(slug, 0.0):
                return None
        published = [line for line in lines if line.published_key is not None][:self.SIDECAR_TRIES]
        for line in published:
            sidecar = store.read_sidecar(slug, line.narration_id) or {}
            recorded = (sidecar.get("manifest") or {}).get("path")
            if isinstance(recorded, str) and Path(recorded).is_file():
                self._by_course[slug] = Path(recorded)
                return Path(recorded)
        with self._lock:  # not known: look again a minute later, not on every page load
            self._not_found[slug] = time.monotonic() + self.RECHECK_S
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


def _stamps(paths: tuple[Path, ...]) -> tuple[int, ...]:
    """Modification times (-1: missing), which tell whether a planned manifest is still current."""
    stamps = []
    for path in paths:
        try:
            stamps.append(path.stat().st_mtime_ns)
        except OSError:
            stamps.append(-1)
    return tuple(stamps)


@dataclass(frozen=True)
class CourseIndex:
    """A course's clips in page order, with what its counts and filters need (narro.catalogue.ClipLine)."""

    order: list[str]
    """Manifest order, then clips the manifest no longer has."""
    lines: dict[str, ClipLine]
    specs: dict[str, ClipSpec]
    stale: frozenset[str]
    known: bool
    """Whether a manifest is known, so that staleness is."""

    def review(self, narration_id: str) -> str:
        line = self.lines.get(narration_id)
        return standing(line.verdict, line.published_key) if line else UNREVIEWED

    def status(self, narration_id: str) -> str:
        line = self.lines.get(narration_id)
        return line.status if line else NOT_RENDERED


def course_index(lines: list[ClipLine], planned: Planned | None) -> CourseIndex:
    by_id = {line.narration_id: line for line in lines}
    specs = planned.specs if planned and planned.course else {}
    stale = frozenset(i for i, line in by_id.items()
                      if specs and line.published_key and (i not in specs or line.published_key != specs[i].content_key))
    return CourseIndex(list(specs) + [i for i in by_id if i not in specs], by_id, specs, stale, bool(specs))


def select_ids(index: CourseIndex, show: str, found: set[str] | None = None) -> list[str]:
    """The clips a filter shows, in page order; `found`: the clips a search matched (None: no search)."""
    chosen = []
    for narration_id in index.order:
        status, review = index.status(narration_id), index.review(narration_id)
        if show == "failed" and status != FAILED:
            continue
        if show == "stale" and narration_id not in index.stale:
            continue
        if show == "flagged" and review != FLAGGED:
            continue
        if show == "review" and (index.lines.get(narration_id) is None or review not in (UNREVIEWED, REVIEW_AGAIN)
                                 or index.lines[narration_id].published_key is None):
            continue
        if found is not None and narration_id not in found:
            continue
        chosen.append(narration_id)
    return chosen


def search(index: CourseIndex, catalogue: Catalogue, course: str, query: str) -> set[str]:
    """The clips whose id, title, script or last error contains `query` (any case)."""
    words = query.lower()
    found = catalogue.search_clips(course, query)
    found.update(i for i in index.order if words in i.lower())
    found.update(i for i, spec in index.specs.items()
                 if words in spec.title.lower() or words in spec.script.written.lower())
    return found


def clip_views(ids: list[str], index: CourseIndex, states: dict[str, ClipState],
               history: dict[str, list[AttemptState]], sidecars: Sidecars | None = None) -> list[ClipView]:
    """The full rows of the given clips: `states` and `history` are theirs (a page's, or the whole course's).

    `sidecars`: the published sidecars, to say why a stale clip is stale.
    """
    views = []
    for narration_id in ids:
        state, spec, line = states.get(narration_id), index.specs.get(narration_id), index.lines.get(narration_id)
        stale = (narration_id in index.stale) if index.known else None
        reasons = _stale_reasons(spec, state, sidecars) if stale and state is not None else ()
        published, failed = published_and_failed(history.get(narration_id, []), state) if state else (None, None)
        views.append(ClipView(
            narration_id=narration_id,
            title=(spec.title if spec else "") or (state.title if state else ""),
            status=state.status if state else NOT_RENDERED,
            state=state, spec=spec, stale=stale, stale_reasons=reasons, published_take=published, failed_after=failed,
            verdict=line.verdict if line else None,
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


def summarise(slug: str, index: CourseIndex, catalogue: Catalogue, planned: Planned | None) -> CourseSummary:
    counts = {RENDERED: 0, FAILED: 0, PENDING: 0, "stale": len(index.stale), FLAGGED: 0, "review": 0}
    for narration_id in index.order:
        status = index.status(narration_id)
        if status == RENDERED:
            counts[RENDERED] += 1
        elif status == FAILED:
            counts[FAILED] += 1
        else:  # pending, running, interrupted, or a narration not rendered yet
            counts[PENDING] += 1
        review = index.review(narration_id)
        counts[FLAGGED] += review == FLAGGED
        line = index.lines.get(narration_id)
        counts["review"] += bool(line and line.published_key and review in (UNREVIEWED, REVIEW_AGAIN))
    run = catalogue.last_run(slug)
    course = planned.course if planned else None
    return CourseSummary(
        slug=slug,
        title=course.title if course else "",
        counts=counts,
        last_run_at=run.finished_at or run.started_at if run else None,
        last_run_id=run.run_id if run else None,
        total_duration_s=sum(line.duration_s or 0 for line in index.lines.values() if line.published_key),
        manifest=str(planned.path) if planned else None,
        manifest_error=planned.error if planned else None,
    )
