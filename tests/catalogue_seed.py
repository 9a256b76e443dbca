"""A large course written straight into a catalogue: clips, runs and attempts shaped like a real render's.

Used by tests/test_catalogue_scale.py and bench/catalogue.py. Rows go in with bulk inserts (a
10,000-clip course takes about a second on SQLite), through the same tables narro writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, insert, text

from narro.catalogue import FAILED, FLAGGED, RENDERED, AttemptRow, Catalogue, ClipRow, RunRow, VerdictRow

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
RUNS = 20
"""Nightly runs the seeded course went through; each clip's attempts are spread over them."""
LONG_ERROR = ("quality gate: no take passed: take 1: wer: 41.2% of 17 words > 30%: the recogniser did not hear "
              "the script; take 2: speech_rate: 212 wpm > 190 wpm: too fast to follow")


def clip_id(index: int) -> str:
    return f"l{index // 100:03d}-narration-about-codec-tokens-{index % 100:02d}"


def is_failed(index: int) -> bool:
    return index % 50 == 7  # 2% of the course


def is_fallback(index: int) -> bool:
    return index % 40 == 3


def is_flagged(index: int) -> bool:
    return index % 97 == 5


def _metrics(take: int, wer: float, passed: bool) -> dict[str, Any]:
    """A take's catalogue metrics as narro.heal.take_metrics writes them (the QA block included)."""
    checks = {"wer": {"value": wer, "threshold": "<= 0.3", "passed": wer <= 0.3, "reason": f"{wer:.1%} of 17 words"},
              "speech_rate": {"value": 151.0, "threshold": "<= 190", "passed": True, "reason": "151 wpm"},
              "loudness": {"value": -16.1, "threshold": "-16 ± 1", "passed": True, "reason": "-16.1 LUFS"}}
    script = "Codec tokens arrive at about seventy-five frames a second, eight codebooks deep."
    return {"take": take, "variant": "as asked", "options": {"length_scale": 1.0}, "duration_s": 6.2,
            "loudness_lufs": -16.1, "true_peak_dbtp": -1.8, "wer": wer, "wpm": 151.0, "passed": passed,
            "failed": [] if passed else ["wer"], "synthesis_s": 0.6, "post_s": 0.3, "qa_s": 0.9,
            "qa": {"passed": passed, "checks": checks, "transcript": script.lower().rstrip("."), "script": script,
                   "asr_s": 0.7, "checks_s": 0.2}}


def seed(url: str, course: str, clips: int) -> None:
    """Write `clips` clips of `course`, their attempts over RUNS runs, and a few reviewers' flags."""
    Catalogue(url).dispose()  # the tables and indexes, as narro makes them
    start = datetime(2026, 1, 1, tzinfo=UTC)
    runs = [f"{course[:40]}-run-{n:02d}" for n in range(RUNS)]
    clip_rows, attempt_rows, verdicts = [], [], []
    for index in range(clips):
        narration_id, key = clip_id(index), uuid.uuid5(uuid.NAMESPACE_URL, f"{course}/{index}").hex * 2
        failed, attempts = is_failed(index), 1 + index % 3
        for number in range(1, attempts + 1):
            last = number == attempts
            ok = not (failed and last) and (last or number % 2 == 0)
            attempt_rows.append({
                "course": course, "narration_id": narration_id, "run_id": runs[(index + number) % RUNS],
                "number": number, "status": RENDERED if ok else FAILED, "error": None if ok else LONG_ERROR,
                "engine": "piper:joe-us-medium", "metrics": _metrics(number, 0.05 if ok else 0.41, ok),
                "started_at": start + timedelta(seconds=index), "finished_at": start + timedelta(seconds=index + 1)})
        clip_rows.append({
            "course": course, "narration_id": narration_id, "title": f"Narration {index}",
            "status": FAILED if failed else RENDERED, "attempts": attempts, "last_error": LONG_ERROR if failed else None,
            "content_key": key, "published_key": key, "voice": "narrator", "tier": "fast", "engine": "piper",
            "duration_s": 6.2, "loudness_lufs": -16.1, "true_peak_dbtp": -1.8, "run_id": runs[index % RUNS],
            "fallback": "piper:joe-us-medium: edge-tts service unreachable" if is_fallback(index) else None,
            "created_at": start + timedelta(milliseconds=index), "updated_at": start + timedelta(seconds=index)})
        if is_flagged(index):
            verdicts.append({"course": course, "narration_id": narration_id, "content_key": key, "verdict": FLAGGED,
                             "note": "says 'Volley' for VALL-E", "reviewed_at": start})
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(RunRow.__table__), [
                {"run_id": run, "course": course, "started_at": start + timedelta(days=n),
                 "finished_at": start + timedelta(days=n, hours=1), "rendered": clips, "failed": 0, "cached": 0}
                for n, run in enumerate(runs)])
            for rows, table in ((clip_rows, ClipRow.__table__), (attempt_rows, AttemptRow.__table__),
                                (verdicts, VerdictRow.__table__)):
                for first in range(0, len(rows), 5000):
                    connection.execute(insert(table), rows[first:first + 5000])
            if engine.dialect.name == "postgresql":
                connection.execute(text("ANALYZE"))  # plans as a long-lived catalogue would have them
    finally:
        engine.dispose()


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A catalogue URL on the loopback PostgreSQL in a schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
