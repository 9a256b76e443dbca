"""The catalogue: one row per clip (status, attempts, last error, key, metrics, run) and one per run.

SQLite file by default; any SQLAlchemy URL (PostgreSQL when several machines share it).
The store holds the audio; the catalogue holds what happened. Writes are short transactions
so several worker threads can report at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    and_,
    case,
    create_engine,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.schema import CreateIndex

from narro.errors import CatalogueError

# Clip statuses, in the order a clip moves through them.
PENDING, RUNNING, RENDERED, FAILED = "pending", "running", "rendered", "failed"
INTERRUPTED = "interrupted"
"""Shown, never stored: pending or running under a lease whose holder stopped renewing it (killed)."""
LEASE_TTL_S = 45.0
"""Default lease length (the cluster.lease_ttl_s setting); a dead run's clips are free within it."""


def now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ClipRow(Base):
    __tablename__ = "clips"

    course: Mapped[str] = mapped_column(String(80), primary_key=True)
    narration_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    title: Mapped[str] = mapped_column(String(400), default="")
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    content_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Key of the spec last asked for."""
    published_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Key of the audio now in the store, which may differ after a failed re-render."""
    voice: Mapped[str] = mapped_column(String(80), default="")
    tier: Mapped[str] = mapped_column(String(16), default="")
    engine: Mapped[str | None] = mapped_column(String(120), nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    loudness_lufs: Mapped[float | None] = mapped_column(Float, nullable=True)
    true_peak_dbtp: Mapped[float | None] = mapped_column(Float, nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fallback: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Set when the published audio was spoken by the fallback voice: which one, and why."""
    lease_holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Run id that holds the clip while it is pending or rendering, so two runs never render it at once."""
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, onupdate=now)

    # Pages of a course in catalogue order, all clips or one status (`clip_page`, `status_counts`).
    __table_args__ = (Index("ix_clips_course_order", "course", "created_at", "narration_id"),
                      Index("ix_clips_course_status", "course", "status", "created_at", "narration_id"))


class RunRow(Base):
    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    course: Mapped[str] = mapped_column(String(80), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rendered: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    cached: Mapped[int] = mapped_column(Integer, default=0)


class AttemptRow(Base):
    """One try at rendering a clip: what ran, how it ended, and what it measured."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    course: Mapped[str] = mapped_column(String(80), index=True)
    narration_id: Mapped[str] = mapped_column(String(80), index=True)
    run_id: Mapped[str] = mapped_column(String(64))
    number: Mapped[int] = mapped_column(Integer)
    """1 for the clip's first attempt ever, counting across runs."""
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    engine: Mapped[str | None] = mapped_column(String(120), nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """Loudness, peak, duration and any QA figures of this attempt."""
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    # One page's histories in a single range scan (`attempts_of`).
    __table_args__ = (Index("ix_attempts_clip", "course", "narration_id", "id"),)


@dataclass(frozen=True)
class AttemptState:
    number: int
    run_id: str
    status: str
    error: str | None
    engine: str | None
    metrics: dict[str, Any] | None
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ClipState:
    """A read-only copy of a clip row, safe to use after its session is gone."""

    course: str
    narration_id: str
    title: str
    status: str
    attempts: int
    last_error: str | None
    content_key: str | None
    published_key: str | None
    voice: str
    tier: str
    engine: str | None
    duration_s: float | None
    loudness_lufs: float | None
    true_peak_dbtp: float | None
    run_id: str | None
    updated_at: datetime
    fallback: str | None = None
    lease_holder: str | None = None
    lease_expires: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in self.__dict__.items()}


@dataclass(frozen=True)
class CourseResults:
    """A course's clips and every clip's attempts, read once: what a run's summary, QA table and report show."""

    clips: dict[str, ClipState]
    """Narration id → clip, in catalogue order."""
    history: dict[str, list[AttemptState]]
    """Narration id → its attempts, oldest first (absent: none yet)."""
    verdicts: dict[str, VerdictState] = field(default_factory=dict)
    """Narration id → the reviewer's latest verdict, where one was given (narro.review says if it still holds)."""


_ATTEMPT_COLUMNS = (AttemptRow.narration_id, AttemptRow.number, AttemptRow.run_id, AttemptRow.status,
                    AttemptRow.error, AttemptRow.engine, AttemptRow.metrics, AttemptRow.started_at,
                    AttemptRow.finished_at)
"""An attempt read as a plain row: a course's thousands of attempts load without an ORM object each."""


def _attempt(row: Any) -> AttemptState:
    """An AttemptRow, or a row of _ATTEMPT_COLUMNS."""
    return AttemptState(row.number, row.run_id, row.status, row.error, row.engine, row.metrics, row.started_at,
                        row.finished_at)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands timezone-aware columns back naive; they were written in UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _state(row: ClipRow) -> ClipState:
    values = {name: getattr(row, name) for name in ClipState.__dataclass_fields__}
    values["lease_expires"] = _aware(row.lease_expires)
    if row.status in (PENDING, RUNNING) and values["lease_expires"] is not None and values["lease_expires"] < now():
        values["status"] = INTERRUPTED
    return ClipState(**values)


# --- Review verdicts (narro.review; the dashboard's "review by ear") ------------------------
# Additive: a table of its own, created by create_all on any catalogue, old or new.

APPROVED, FLAGGED = "approved", "flagged"
VERDICTS = (APPROVED, FLAGGED)


class VerdictRow(Base):
    """A reviewer's verdict on a clip's audio: the latest one per clip, for the audio it was given on."""

    __tablename__ = "verdicts"

    course: Mapped[str] = mapped_column(String(80), primary_key=True)
    narration_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    content_key: Mapped[str] = mapped_column(String(64))
    """The published key of the audio reviewed: once the audio changes, the verdict no longer holds."""
    verdict: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    reviewed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


@dataclass(frozen=True)
class VerdictState:
    verdict: str
    """approved or flagged."""
    note: str
    content_key: str
    reviewed_at: datetime


@dataclass(frozen=True)
class ClipLine:
    """The few columns of a clip that a course's counts, filters and page order need (no metrics, no errors)."""

    narration_id: str
    status: str
    published_key: str | None
    duration_s: float | None
    verdict: VerdictState | None
    run_id: str | None = None


def _verdict(row: VerdictRow) -> VerdictState:
    return VerdictState(row.verdict, row.note, row.content_key, _aware(row.reviewed_at) or row.reviewed_at)


class Reviews:
    """The catalogue's verdict queries (mixed into Catalogue)."""

    _sessions: sessionmaker[Session]

    def record_verdict(self, course: str, narration_id: str, *, content_key: str, verdict: str, note: str = "") -> None:
        """Replace the clip's verdict with this one, given on the audio whose published key is `content_key`."""
        if verdict not in VERDICTS:
            raise CatalogueError(f"unknown verdict '{verdict}': expected one of {', '.join(VERDICTS)}")
        try:
            with self._sessions() as session, session.begin():
                row = session.get(VerdictRow, (course, narration_id))
                if row is None:
                    row = VerdictRow(course=course, narration_id=narration_id)
                    session.add(row)
                row.content_key, row.verdict, row.note, row.reviewed_at = content_key, verdict, note, now()
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue write failed: {exc}") from exc

    def verdict(self, course: str, narration_id: str) -> VerdictState | None:
        with self._sessions() as session:
            row = session.get(VerdictRow, (course, narration_id))
            return _verdict(row) if row else None

    def verdicts(self, course: str) -> dict[str, VerdictState]:
        """Every verdict given on a course's clips, current or not (narro.review says which still hold)."""
        with self._sessions() as session:
            return {row.narration_id: _verdict(row)
                    for row in session.scalars(select(VerdictRow).where(VerdictRow.course == course))}

    def clip_lines(self, course: str) -> list[ClipLine]:
        """Every clip of a course as a ClipLine with its verdict, in catalogue order: one query, light columns."""
        query = (select(ClipRow.narration_id, ClipRow.status, ClipRow.published_key, ClipRow.duration_s,
                        ClipRow.lease_expires, ClipRow.run_id, VerdictRow.verdict, VerdictRow.note, VerdictRow.content_key,
                        VerdictRow.reviewed_at)
                 .outerjoin(VerdictRow, and_(VerdictRow.course == ClipRow.course,
                                             VerdictRow.narration_id == ClipRow.narration_id))
                 .where(ClipRow.course == course).order_by(ClipRow.created_at, ClipRow.narration_id))
        lines = []
        moment = now()
        try:
            with self._sessions() as session:
                for narration_id, status, published, duration, expires, run_id, verdict, note, key, at in \
                        session.execute(query):
                    expires = _aware(expires)
                    if status in (PENDING, RUNNING) and expires is not None and expires < moment:
                        status = INTERRUPTED
                    lines.append(ClipLine(narration_id, status, published, duration,
                                          VerdictState(verdict, note, key, _aware(at) or at) if verdict else None,
                                          run_id))
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue read failed: {exc}") from exc
        return lines

    def clips_of(self, course: str, narration_ids: list[str]) -> dict[str, ClipState]:
        """The full rows of the given clips (a page of them) in one query: id → state."""
        if not narration_ids:
            return {}
        query = select(ClipRow).where(ClipRow.course == course, ClipRow.narration_id.in_(narration_ids))
        try:
            with self._sessions() as session:
                return {row.narration_id: _state(row) for row in session.scalars(query)}
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue read failed: {exc}") from exc

    def search_clips(self, course: str, words: str) -> set[str]:
        """The clips whose title or last error contains `words` (any case)."""
        pattern = "%" + words.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = select(ClipRow.narration_id).where(
            ClipRow.course == course,
            or_(func.lower(ClipRow.title).like(pattern, escape="\\"),
                func.lower(ClipRow.last_error).like(pattern, escape="\\")))
        with self._sessions() as session:
            return set(session.scalars(query))

# --- end of review verdicts ------------------------------------------------------------------


class Catalogue(Reviews):
    def __init__(self, url: str):
        """`url`: a SQLAlchemy URL, usually the `catalogue.url` setting (narro.settings)."""
        self.url = url
        try:
            if self.url.startswith("sqlite:///"):
                Path(self.url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
                self._engine = create_engine(self.url, connect_args={"check_same_thread": False, "timeout": 30})
                event.listen(self._engine, "connect", _sqlite_pragmas)
            else:
                self._engine = create_engine(self.url, pool_pre_ping=True)
            Base.metadata.create_all(self._engine)
            _add_missing_columns(self._engine)
        except (SQLAlchemyError, OSError) as exc:
            raise CatalogueError(f"cannot open catalogue {self.safe_url}: {exc}") from exc
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return self._engine.url.render_as_string(hide_password=True) if hasattr(self, "_engine") else self.url.split("@")[-1]

    def _session(self) -> Session:
        return self._sessions()

    def _update(self, course: str, narration_id: str, count_attempt: bool = False, **values: Any) -> None:
        try:
            with self._session() as session, session.begin():
                row = session.get(ClipRow, (course, narration_id))
                if row is None:
                    row = ClipRow(course=course, narration_id=narration_id, attempts=0)
                    session.add(row)
                for name, value in values.items():
                    setattr(row, name, value)
                if count_attempt:
                    row.attempts = (row.attempts or 0) + 1
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue write failed: {exc}") from exc

    def register(self, course: str, narration_id: str, *, title: str, voice: str, tier: str, content_key: str) -> None:
        """Make sure the clip has a row and records the spec now asked for."""
        self._update(course, narration_id, title=title, voice=voice, tier=tier, content_key=content_key)

    def acquire_leases(self, course: str, narration_ids: list[str], holder: str,
                       ttl_s: float = LEASE_TTL_S) -> list[str]:
        """Take the clips no live run holds (one atomic update per clip); returns those now held by `holder`.

        A clip is free when it has no lease, its lease expired (its holder died), or `holder` has it.
        """
        taken = []
        expires = now() + timedelta(seconds=ttl_s)
        try:
            with self._session() as session, session.begin():
                for narration_id in narration_ids:
                    result = session.execute(
                        update(ClipRow)
                        .where(ClipRow.course == course, ClipRow.narration_id == narration_id,
                               or_(ClipRow.lease_holder.is_(None), ClipRow.lease_holder == holder,
                                   ClipRow.lease_expires < now()))
                        .values(lease_holder=holder, lease_expires=expires)
                        .execution_options(synchronize_session=False))
                    if result.rowcount:  # type: ignore[attr-defined]
                        taken.append(narration_id)
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue write failed: {exc}") from exc
        return taken

    def renew_leases(self, holder: str, ttl_s: float = LEASE_TTL_S) -> int:
        """Extend every lease `holder` has; returns how many it still holds."""
        with self._session() as session, session.begin():
            result = session.execute(update(ClipRow).where(ClipRow.lease_holder == holder)
                                     .values(lease_expires=now() + timedelta(seconds=ttl_s))
                                     .execution_options(synchronize_session=False))
            return int(result.rowcount)  # type: ignore[attr-defined]

    def release_lease(self, course: str, narration_id: str, holder: str) -> None:
        with self._session() as session, session.begin():
            session.execute(update(ClipRow)
                            .where(and_(ClipRow.course == course, ClipRow.narration_id == narration_id,
                                        ClipRow.lease_holder == holder))
                            .values(lease_holder=None, lease_expires=None)
                            .execution_options(synchronize_session=False))

    def release_leases(self, holder: str) -> None:
        """Free whatever `holder` still has (its run ended)."""
        with self._session() as session, session.begin():
            session.execute(update(ClipRow).where(ClipRow.lease_holder == holder)
                            .values(lease_holder=None, lease_expires=None)
                            .execution_options(synchronize_session=False))

    def mark_pending(self, course: str, narration_id: str, run_id: str) -> None:
        self._update(course, narration_id, status=PENDING, run_id=run_id)

    def mark_running(self, course: str, narration_id: str, run_id: str) -> int:
        """Count a new attempt and open its history row; returns the attempt's number."""
        self._update(course, narration_id, count_attempt=True, status=RUNNING, run_id=run_id)
        number = self.clip(course, narration_id).attempts  # type: ignore[union-attr]
        with self._session() as session, session.begin():
            session.add(AttemptRow(course=course, narration_id=narration_id, run_id=run_id, number=number))
        return number

    def finish_attempt(self, course: str, narration_id: str, number: int, *, status: str, error: str | None = None,
                       engine: str | None = None, metrics: dict[str, Any] | None = None) -> None:
        with self._session() as session, session.begin():
            row = session.scalars(
                select(AttemptRow).where(AttemptRow.course == course, AttemptRow.narration_id == narration_id,
                                         AttemptRow.number == number).order_by(AttemptRow.id.desc()).limit(1)
            ).first()
            if row is not None:
                row.status, row.error, row.engine, row.metrics, row.finished_at = status, error, engine, metrics, now()

    def attempts(self, course: str, narration_id: str) -> list[AttemptState]:
        """The clip's attempt history, oldest first."""
        with self._session() as session:
            rows = session.scalars(
                select(AttemptRow).where(AttemptRow.course == course, AttemptRow.narration_id == narration_id)
                .order_by(AttemptRow.id)
            )
            return [AttemptState(r.number, r.run_id, r.status, r.error, r.engine, r.metrics, r.started_at,
                                 r.finished_at) for r in rows]

    def course_attempts(self, course: str) -> dict[str, list[AttemptState]]:
        """Every clip's attempt history for a course in one query: narration id → attempts, oldest first."""
        history: dict[str, list[AttemptState]] = {}
        with self._session() as session:
            for row in session.execute(select(*_ATTEMPT_COLUMNS).where(AttemptRow.course == course)
                                       .order_by(AttemptRow.id)):
                history.setdefault(row.narration_id, []).append(_attempt(row))
        return history

    def mark_rendered(self, course: str, narration_id: str, *, content_key: str, engine: str, duration_s: float,
                      loudness_lufs: float, true_peak_dbtp: float, run_id: str, published_key: str | None = None,
                      fallback: str | None = None) -> None:
        """`published_key` differs from `content_key` when the fallback voice spoke (`fallback` says why)."""
        self._update(course, narration_id, status=RENDERED, last_error=None, content_key=content_key,
                     published_key=published_key or content_key, fallback=fallback, engine=engine, duration_s=duration_s,
                     loudness_lufs=loudness_lufs, true_peak_dbtp=true_peak_dbtp, run_id=run_id)

    def mark_cached(self, course: str, narration_id: str, *, content_key: str, sidecar: dict[str, Any] | None) -> None:
        """The store already holds this clip: it is rendered without work.

        Its published key and fallback record come from the sidecar: a clip the fallback voice
        spoke may be kept as it is (narro.batch) while its own voice does not answer.
        """
        values: dict[str, Any] = {"status": RENDERED, "last_error": None, "content_key": content_key,
                                  "published_key": content_key, "fallback": None}
        fallback = (sidecar or {}).get("fallback")
        if isinstance(fallback, dict):
            values.update(published_key=sidecar.get("content_key") or content_key,  # type: ignore[union-attr]
                          fallback=f"{fallback.get('to')}: {fallback.get('reason')}")
        if sidecar:
            values.update(engine=sidecar.get("engine", {}).get("name"), duration_s=sidecar.get("duration_s"),
                          loudness_lufs=sidecar.get("loudness_lufs"), true_peak_dbtp=sidecar.get("true_peak_dbtp"))
        self._update(course, narration_id, **values)

    def mark_failed(self, course: str, narration_id: str, error: str, run_id: str) -> None:
        self._update(course, narration_id, status=FAILED, last_error=error[:4000], run_id=run_id)

    def start_run(self, run_id: str, course: str) -> None:
        """Record a run; starting the same run again (the CLI plans, then the flow) is harmless."""
        with self._session() as session, session.begin():
            if session.get(RunRow, run_id) is None:
                session.add(RunRow(run_id=run_id, course=course))

    def finish_run(self, run_id: str, *, rendered: int, failed: int, cached: int) -> None:
        with self._session() as session, session.begin():
            row = session.get(RunRow, run_id)
            if row is not None:
                row.finished_at, row.rendered, row.failed, row.cached = now(), rendered, failed, cached

    def clips(self, course: str) -> list[ClipState]:
        try:
            with self._session() as session:
                rows = session.scalars(select(ClipRow).where(ClipRow.course == course)
                                       .order_by(ClipRow.created_at, ClipRow.narration_id))
                return [_state(row) for row in rows]
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue read failed: {exc}") from exc

    def results(self, course: str) -> CourseResults:
        """Every clip of a course and every attempt's history, in one transaction (a consistent snapshot)."""
        history: dict[str, list[AttemptState]] = {}
        clips: dict[str, ClipState] = {}
        verdicts: dict[str, VerdictState] = {}
        try:
            with self._session() as session, session.begin():
                rows = session.execute(  # each clip with its reviewer's verdict, if any
                    select(ClipRow, VerdictRow)
                    .outerjoin(VerdictRow, and_(VerdictRow.course == ClipRow.course,
                                                VerdictRow.narration_id == ClipRow.narration_id))
                    .where(ClipRow.course == course).order_by(ClipRow.created_at, ClipRow.narration_id))
                for clip, verdict in rows:
                    clips[clip.narration_id] = _state(clip)
                    if verdict is not None:
                        verdicts[clip.narration_id] = _verdict(verdict)
                for row in session.execute(select(*_ATTEMPT_COLUMNS).where(AttemptRow.course == course)
                                           .order_by(AttemptRow.id)):
                    history.setdefault(row.narration_id, []).append(_attempt(row))
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue read failed: {exc}") from exc
        return CourseResults(clips, history, verdicts)

    def clip_page(self, course: str, *, offset: int = 0, limit: int | None = 50, failed_only: bool = False,
                  flagged_only: bool = False) -> tuple[list[ClipState], int]:
        """One page of a course's clips in catalogue order (first registered first), and how many match.

        `limit` None: every matching clip from `offset` on. `failed_only`: only clips whose status
        is failed. `flagged_only`: only clips whose reviewer's flag still holds (given on the audio
        now published, narro.review). Two indexed queries (the page, the count) whatever the course's size.
        """
        where = [ClipRow.course == course] + ([ClipRow.status == FAILED] if failed_only else [])
        if flagged_only:
            flagged = select(VerdictRow.narration_id).where(
                VerdictRow.course == course, VerdictRow.narration_id == ClipRow.narration_id,
                VerdictRow.verdict == FLAGGED, VerdictRow.content_key == ClipRow.published_key)
            where.append(flagged.exists())
        query = (select(ClipRow).where(*where).order_by(ClipRow.created_at, ClipRow.narration_id)
                 .offset(offset).limit(limit))
        try:
            with self._session() as session:
                total = session.scalar(select(func.count()).select_from(ClipRow).where(*where)) or 0
                return [_state(row) for row in session.scalars(query)], total
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue read failed: {exc}") from exc

    def attempts_of(self, course: str, narration_ids: list[str]) -> dict[str, list[AttemptState]]:
        """The attempt histories of the given clips (a page of them) in one query: id → attempts, oldest first."""
        history: dict[str, list[AttemptState]] = {narration_id: [] for narration_id in narration_ids}
        if not narration_ids:
            return history
        query = (select(*_ATTEMPT_COLUMNS)
                 .where(AttemptRow.course == course, AttemptRow.narration_id.in_(narration_ids))
                 .order_by(AttemptRow.id))
        try:
            with self._session() as session:
                for row in session.execute(query):
                    history[row.narration_id].append(_attempt(row))
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue read failed: {exc}") from exc
        return history

    def verdicts_of(self, course: str, narration_ids: list[str]) -> dict[str, VerdictState]:
        """The reviewers' verdicts on the given clips (a page of them) in one query: id → verdict, where given."""
        if not narration_ids:
            return {}
        query = select(VerdictRow).where(VerdictRow.course == course, VerdictRow.narration_id.in_(narration_ids))
        try:
            with self._session() as session:
                return {row.narration_id: _verdict(row) for row in session.scalars(query)}
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue read failed: {exc}") from exc

    def run_counts(self, course: str, run_id: str) -> dict[str, int]:
        """How many of a course's clips are in each status with `run_id` as their last run, in one query."""
        query = (select(ClipRow.status, func.count()).where(ClipRow.course == course, ClipRow.run_id == run_id)
                 .group_by(ClipRow.status))
        try:
            with self._session() as session:
                return {status: clips for status, clips in session.execute(query)}
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue read failed: {exc}") from exc

    def status_counts(self, course: str) -> dict[str, int]:
        """How many of a course's clips are in each status (interrupted leases counted as such), in one query.

        The key `fallback` counts the clips the fallback voice spoke, whatever their status.
        """
        shown = case((and_(ClipRow.status.in_((PENDING, RUNNING)), ClipRow.lease_expires < now()), INTERRUPTED),
                     else_=ClipRow.status)
        query = (select(shown, func.count(), func.count(ClipRow.fallback)).where(ClipRow.course == course)
                 .group_by(shown))
        counts: dict[str, int] = {}
        try:
            with self._session() as session:
                for status, clips, fallbacks in session.execute(query):
                    counts[status] = counts.get(status, 0) + clips
                    counts["fallback"] = counts.get("fallback", 0) + fallbacks
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue read failed: {exc}") from exc
        return counts

    def clip(self, course: str, narration_id: str) -> ClipState | None:
        with self._session() as session:
            row = session.get(ClipRow, (course, narration_id))
            return _state(row) if row else None

    def courses(self) -> list[str]:
        with self._session() as session:
            return list(session.scalars(select(ClipRow.course).distinct().order_by(ClipRow.course)))

    def last_run(self, course: str) -> RunRow | None:
        with self._session() as session:
            return session.scalars(
                select(RunRow).where(RunRow.course == course).order_by(RunRow.started_at.desc()).limit(1)
            ).first()

    def dispose(self) -> None:
        self._engine.dispose()


def _add_missing_columns(engine: Any) -> None:
    """Add nullable columns and indexes that a newer narro defines to an older catalogue's tables.

    Columns are only ever added, and only nullable ones, so this is the whole migration story.
    """
    inspector = inspect(engine)
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            indexed = {index["name"] for index in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexed:  # IF NOT EXISTS: another process may be opening it too
                    connection.execute(CreateIndex(index, if_not_exists=True))


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
