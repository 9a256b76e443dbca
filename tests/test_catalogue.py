"""The catalogue on SQLite and on the real PostgreSQL server running on loopback."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text

from narro.catalogue import FAILED, RENDERED, RUNNING, Catalogue

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def catalogue(request, tmp_path):
    if request.param == "sqlite":
        yield Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
        return
    # A schema of its own per test, so runs never see each other's rows.
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        yield Catalogue(url)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_clip_lifecycle(catalogue: Catalogue):
    catalogue.start_run("r1", "course")
    catalogue.register("course", "a", title="A", voice="narrator", tier="fast", content_key="k1")
    catalogue.mark_running("course", "a", "r1")
    assert catalogue.clip("course", "a").status == RUNNING
    catalogue.mark_failed("course", "a", "engine crashed", "r1")
    catalogue.mark_running("course", "a", "r1")
    catalogue.mark_rendered("course", "a", content_key="k1", engine="piper", duration_s=3.5, loudness_lufs=-16.1,
                            true_peak_dbtp=-2.0, run_id="r1")
    clip = catalogue.clip("course", "a")
    assert (clip.status, clip.attempts, clip.last_error, clip.published_key) == (RENDERED, 2, None, "k1")
    catalogue.finish_run("r1", rendered=1, failed=0, cached=0)
    assert catalogue.last_run("course").rendered == 1
    assert catalogue.courses() == ["course"]
    history = catalogue.attempts("course", "a")
    assert [a.number for a in history] == [1, 2]
    assert history[0].status == RUNNING  # never finished: a worker that died leaves it open


def test_attempt_history_records_outcomes(catalogue: Catalogue):
    number = catalogue.mark_running("course", "b", "r1")
    catalogue.finish_attempt("course", "b", number, status=FAILED, error="boom")
    number = catalogue.mark_running("course", "b", "r2")
    catalogue.finish_attempt("course", "b", number, status=RENDERED, engine="piper", metrics={"loudness_lufs": -16.0})
    history = catalogue.attempts("course", "b")
    assert [(a.number, a.status, a.error) for a in history] == [(1, FAILED, "boom"), (2, RENDERED, None)]
    assert history[1].metrics == {"loudness_lufs": -16.0}


def test_older_catalogue_gains_new_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    Catalogue(url).dispose()
    old = create_engine(url)
    with old.begin() as connection:  # as a catalogue from before these columns existed
        connection.execute(text("ALTER TABLE clips DROP COLUMN engine"))
        connection.execute(text("ALTER TABLE attempts DROP COLUMN metrics"))
    old.dispose()
    catalogue = Catalogue(url)
    catalogue.mark_rendered("c", "x", content_key="k", engine="piper", duration_s=1.0, loudness_lufs=-16.0,
                            true_peak_dbtp=-2.0, run_id="r")
    assert catalogue.clip("c", "x").engine == "piper"
