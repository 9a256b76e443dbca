"""The catalogue on SQLite and on the real PostgreSQL server running on loopback."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, text

from narro.catalogue import FAILED, RENDERED, RUNNING, Catalogue
from narro.errors import CatalogueError

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


def test_concurrent_writers_lose_no_update(catalogue: Catalogue):
    ids = [f"c{i}" for i in range(40)]
    for clip_id in ids:
        catalogue.register("course", clip_id, title="", voice="v", tier="fast", content_key="k")

    def work(clip_id: str) -> None:
        catalogue.mark_running("course", clip_id, "r")
        catalogue.mark_failed("course", clip_id, "no", "r")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, ids))
    clips = catalogue.clips("course")
    assert len(clips) == 40 and all(c.status == FAILED and c.attempts == 1 for c in clips)


def test_unreachable_database_is_a_clear_error():
    with pytest.raises(CatalogueError, match="cannot open catalogue"):
        Catalogue("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")


def test_error_message_hides_the_password():
    with pytest.raises(CatalogueError) as caught:
        Catalogue("postgresql+psycopg://nobody:hunter2@127.0.0.1:1/none")
    assert "hunter2" not in str(caught.value)
