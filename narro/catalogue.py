"""The catalogue: one row per clip (status, attempts, last error, key, metrics, run) and one per run.

SQLite file by default; any SQLAlchemy URL (PostgreSQL when several machines share it).
The store holds the audio; the catalogue holds what happened. Writes are short transactions
so several worker threads can report at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    and_,
    create_engine,
    event,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

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


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands timezone-aware columns back naive; they were written in UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _state(row: ClipRow) -> ClipState:
    values = {name: getattr(row, name) for name in ClipState.__dataclass_fields__}
    values["lease_expires"] = _aware(row.lease_expires)
    if row.status in (PENDING, RUNNING) and values["lease_expires"] is not None and values["lease_expires"] < now():
        values["status"] = INTERRUPTED
    return ClipState(**values)


class Catalogue:
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
            for r in session.scalars(select(AttemptRow).where(AttemptRow.course == course).order_by(AttemptRow.id)):
                history.setdefault(r.narration_id, []).append(
                    AttemptState(r.number, r.run_id, r.status, r.error, r.engine, r.metrics, r.started_at, r.finished_at))
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
                rows = session.scalars(select(ClipRow).where(ClipRow.course == course).order_by(ClipRow.created_at))
                return [_state(row) for row in rows]
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue read failed: {exc}") from exc

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
    """Add nullable columns that a newer narro defines to an older catalogue's tables.

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


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
