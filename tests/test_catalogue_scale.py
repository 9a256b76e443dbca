"""`narro status` on a 10,000-clip course (issue 12, goal 4), on SQLite and on the loopback PostgreSQL.

Speed is in bench/catalogue.py; here: the number of SQL statements a status page costs does not
grow with the course, the default fits 80 columns, --wide, --failed, --json and a manifest path
work, and a render's summary, QA table and report come from one read of the catalogue.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine

from narro import cli
from narro.catalogue import Catalogue
from narro.cli import main
from narro.manifest import load_course
from narro.plan import plan
from narro.report import course_report
from narro.settings import QaSettings
from tests import doubles
from tests.catalogue_seed import LONG_ERROR, clip_id, is_failed, postgres_schema, seed
from tests.conftest import write_manifest

LARGE, SMALL = 10_000, 12
READS = re.compile(r"\bFROM (clips|attempts|verdicts)\b")
NARRO = Path(sys.executable).with_name("narro")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A catalogue holding course `large` (10,000 clips, ~20,000 attempts) and course `small` (12 clips)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'catalogue.db'}"
        seed(url, "large", LARGE)
        seed(url, "small", SMALL)
        yield url
        return
    with postgres_schema() as url:
        seed(url, "large", LARGE)
        seed(url, "small", SMALL)
        yield url


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine sends while the block runs."""
    seen: list[str] = []

    def record(_connection, _cursor, statement, _parameters, _context, _many) -> None:  # noqa: ANN001
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def status(url: str, *args: str):
    return CliRunner().invoke(main, ["status", *args, "--catalogue", url])


@pytest.fixture
def width(monkeypatch: pytest.MonkeyPatch):
    """Set the terminal's width, as a person's terminal would."""
    return lambda columns: monkeypatch.setattr(cli.console, "_width", columns)


@pytest.mark.parametrize("options", [(), ("--failed",), ("--wide",), ("--limit", "5", "--page", "2"),
                                     ("--json", "--limit", "20")])
def test_a_status_page_costs_the_same_statements_whatever_the_course_size(seeded: str, options: tuple[str, ...]):
    counted = {}
    for course in ("small", "large", "small"):
        with statements() as seen:
            result = status(seeded, course, *options)
        assert result.exit_code == 1, result.output  # both courses have failed clips
        counted[course] = seen
    assert len(counted["large"]) == len(counted["small"]), (counted["small"], counted["large"])
    reads = [s for s in counted["large"] if READS.search(s)]
    assert 2 <= len(reads) <= 5, reads
    for statement in reads:  # nothing reads the whole course: a page, a count, or the page's own clips
        assert "LIMIT" in statement or "count(" in statement or " IN (" in statement, statement


def test_the_default_fits_80_columns_with_ids_whole_and_says_what_is_not_shown(seeded: str, width):
    width(80)
    result = status(seeded, "large")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    rows = [line for line in lines if line.startswith("l0")]
    assert [row.split()[0] for row in rows] == [clip_id(i) for i in range(50)]
    assert rows[7].split()[1] == "failed" and rows[7].endswith("…") and "quality gate: no take passed" in rows[7]
    assert rows[0].split()[1:] == ["rendered", "WER", "5.0%"]
    assert "200 failed, 9800 rendered; 250 spoken by the fallback voice" in lines
    assert "9950 of 10000 not shown (this is 1-50): --page N, or --limit 0 for all" in lines

    third = status(seeded, "large", "--limit", "20", "--page", "3").output.splitlines()
    assert [line.split()[0] for line in third if line.startswith("l0")] == [clip_id(i) for i in range(40, 60)]
    assert "9980 of 10000 not shown (this is 41-60): --page N, or --limit 0 for all" in third


def test_wide_shows_every_column_and_the_whole_reason(seeded: str, width):
    width(400)
    result = status(seeded, "large", "--wide", "--limit", "3", "--page", "3")
    assert result.exit_code == 1
    header = next(line for line in result.output.splitlines() if "clip" in line and "status" in line)
    for column in ("tier", "voice", "duration", "LUFS", "dBTP", "WER", "wpm", "tries", "notes"):
        assert column in header, column
    assert LONG_ERROR in result.output  # clip 7, on page 3 of 3
    assert "-16.1" in result.output and "5.0%" in result.output


def test_failed_lists_only_failed_clips(seeded: str, width):
    width(80)
    result = status(seeded, "large", "--failed")
    assert result.exit_code == 1
    ids = [line.split()[0] for line in result.output.splitlines() if line.startswith("l0")]
    assert ids == [clip_id(i) for i in range(LARGE) if is_failed(i)][:50]
    assert "150 of 200 not shown (this is 1-50): --page N, or --limit 0 for all" in result.output.splitlines()
    every = json.loads(status(seeded, "large", "--failed", "--json").output)
    assert len(every["clips"]) == 200 and {c["status"] for c in every["clips"]} == {"failed"}


def test_json_is_complete_unless_a_page_is_asked_for(seeded: str):
    every = json.loads(status(seeded, "small", "--json").output)
    assert [c["narration_id"] for c in every["clips"]] == [clip_id(i) for i in range(SMALL)]
    assert "total" not in every and every["counts"]["failed"] == 1
    clip = every["clips"][1]  # two attempts: the first failed, the second published
    assert clip["qa"]["attempt"] == 2 and clip["qa"]["wer"] == 0.05 and clip["failed_after"] is None
    assert every["clips"][5]["review"] == "flagged: says 'Volley' for VALL-E"
    page = json.loads(status(seeded, "large", "--json", "--limit", "5", "--page", "2").output)
    assert [c["narration_id"] for c in page["clips"]] == [clip_id(i) for i in range(5, 10)]
    assert (page["offset"], page["total"]) == (5, LARGE)


def test_a_manifest_path_names_the_course_also_as_a_command(seeded: str, tmp_path: Path):
    manifest = write_manifest(tmp_path / "m", "course: small\nnarrations:\n  - id: x\n    text: The cat sat.\n")
    result = status(seeded, str(manifest), "--limit", "0")
    assert result.exit_code == 1 and clip_id(SMALL - 1) in result.output
    environment = {**os.environ, "COLUMNS": "80", "NARRO_CATALOGUE": seeded}
    ran = subprocess.run([str(NARRO), "status", str(manifest)], capture_output=True, text=True, env=environment,
                         timeout=120)
    assert ran.returncode == 1, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "small" and max(len(line) for line in lines) <= 80
    assert "1 failed, 11 rendered; 1 spoken by the fallback voice" in lines


def test_an_unknown_course_or_clip_is_named(seeded: str):
    missing = status(seeded, "nope")
    assert missing.exit_code == 2 and "no course 'nope'" in missing.output and "large" in missing.output
    clip = status(seeded, "large", "--clip", "nope")
    assert clip.exit_code == 2 and f"{clip_id(9)} and 9990 more" in clip.output


def test_an_older_catalogue_gets_the_indexes(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    catalogue = Catalogue(url)
    with catalogue._engine.begin() as connection:  # as a catalogue made before the indexes existed
        for name in ("ix_clips_course_order", "ix_clips_course_status", "ix_attempts_clip"):
            connection.execute(text(f"DROP INDEX {name}"))
    catalogue.dispose()
    reopened = Catalogue(url)
    names = {index["name"] for table in ("clips", "attempts") for index in inspect(reopened._engine).get_indexes(table)}
    assert {"ix_clips_course_order", "ix_clips_course_status", "ix_attempts_clip"} <= names
    plan_rows = reopened._engine.connect().execute(text(
        "EXPLAIN QUERY PLAN SELECT * FROM clips WHERE course = 'c' ORDER BY created_at, narration_id LIMIT 50"
    )).fetchall()
    assert "ix_clips_course_order" in str(plan_rows)  # the page is read in index order, not sorted whole


class NoSidecars:
    """A store that must not be asked for sidecars: the report's figures come from the catalogue."""

    def read_sidecar(self, course: str, narration_id: str) -> dict:
        raise AssertionError(f"read the sidecar of {course}/{narration_id}")


def test_the_report_is_built_from_the_catalogue_read_without_sidecars(tmp_path: Path):
    course = "course: rep\nnarrations:\n  - id: a\n    text: One.\n  - id: b\n    text: Two.\n"
    specs = plan(load_course(write_manifest(tmp_path / "m", course)))
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    for spec in specs:
        catalogue.register("rep", spec.narration_id, title="", voice="narrator", tier="fast",
                           content_key=spec.content_key)
    for number, (state, wer, error) in enumerate((("failed", 0.41, "wer: 41% of 2 words"), ("rendered", 0.12, None)),
                                                 1):
        attempt = catalogue.mark_running("rep", "a", "r1")
        catalogue.finish_attempt("rep", "a", attempt, status=state, error=error,
                                 metrics={"take": number, "wer": wer, "wpm": 140.0})
    catalogue.mark_rendered("rep", "a", content_key=specs[0].content_key, engine="piper", duration_s=1.5,
                            loudness_lufs=-16.2, true_peak_dbtp=-2.0, run_id="r1")
    catalogue.mark_failed("rep", "b", "engine refused", "r1")
    html = course_report(specs, catalogue.results("rep"), NoSidecars(), QaSettings())  # type: ignore[arg-type]
    assert "<td>12.0</td>" in html and "<td>140</td>" in html and "<td>-16.2</td>" in html
    assert "take 1: wer: 41% of 2 words" in html and "engine refused" in html


def test_the_report_reads_a_sidecar_only_for_audio_published_before_its_takes_were_kept(tmp_path: Path):
    specs = plan(load_course(write_manifest(tmp_path / "m", "course: rep\nnarrations:\n  - id: a\n    text: One.\n")))
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    catalogue.register("rep", "a", title="", voice="narrator", tier="fast", content_key=specs[0].content_key)
    catalogue.mark_cached("rep", "a", content_key=specs[0].content_key, sidecar=None)

    class Sidecars:
        read: list[str] = []

        def read_sidecar(self, course: str, narration_id: str) -> dict:
            self.read.append(narration_id)
            return {"qa": {"wer": 0.07, "wpm": 150.0, "take": 1, "takes": [{"take": 1, "passed": True}]}}

    store = Sidecars()
    html = course_report(specs, catalogue.results("rep"), store, QaSettings())  # type: ignore[arg-type]
    assert store.read == ["a"] and "<td>7.0</td>" in html


@pytest.mark.usefixtures("prefect_harness")
def test_after_a_render_the_catalogue_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   isolated_catalogue: str):
    """From the end of the flow to the exit: one read of clips and one of attempts for summary, QA table and report."""
    import flows.render_course
    import narro.batch

    monkeypatch.setenv("NARRO_QA_ASR", "false")
    doubles.register(monkeypatch)
    course = ("course: once\nnarrations:\n  - id: one\n    text: The first clip is short.\n"
              "  - id: two\n    text: This clip is unspeakable for the test engine.\n")
    manifest = write_manifest(tmp_path / "course", course, doubles.VOICES_WITH_BROKEN_ENGINE)
    conclude = narro.batch.conclude
    with statements() as sent:
        def marked(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            sent.append("-- conclude --")
            return conclude(*args, **kwargs)

        monkeypatch.setattr(narro.batch, "conclude", marked)
        monkeypatch.setattr(flows.render_course, "conclude", marked)  # bound at import, maybe by an earlier test
        result = CliRunner().invoke(main, ["render", str(manifest), "--store", str(tmp_path / "store")])
    assert result.exit_code == 1, result.output
    tail = sent[sent.index("-- conclude --"):]  # what conclude and the summary, QA table and report sent
    # Rows read (the progress bar's per-status counts go on while the flow closes the run: not rows).
    reads = [s for s in tail if s.lstrip().upper().startswith("SELECT") and READS.search(s) and "count(" not in s]
    assert len(reads) == 2, "\n\n".join(s[:60] + " ... " + s[-120:] for s in reads)
    report = (tmp_path / "store" / "once" / "report.html").read_text()
    assert "unspeakable" in report


@pytest.mark.usefixtures("prefect_harness")
def test_a_render_that_also_retags_reports_both_from_the_flows_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The CLI re-tags before the flow plans, so the flow counts that clip unchanged; the summary still says retagged."""
    monkeypatch.setenv("NARRO_QA_ASR", "false")
    doubles.register(monkeypatch)
    course = ("course: mixed\nnarrations:\n  - id: one\n    title: {title}\n    text: The first clip is short.\n"
              "  - id: two\n    title: Two\n    text: {text}\n")
    manifest = write_manifest(tmp_path / "course", course.format(title="One", text="The second clip is short."),
                              doubles.VOICES_WITH_BROKEN_ENGINE)
    store = ["--store", str(tmp_path / "store")]
    assert CliRunner().invoke(main, ["render", str(manifest), *store]).exit_code == 0
    manifest.write_text(course.format(title="One, renamed", text="The second clip, edited."), encoding="utf-8")
    result = CliRunner().invoke(main, ["render", str(manifest), *store])
    assert result.exit_code == 0, result.output
    assert "retagged 1 (title changed; new ID3 title, same audio): one" in result.output
    counts = next(line for line in result.output.splitlines() if "│" in line and "s │" in line)
    assert [cell.strip() for cell in counts.split("│")[1:4]] == ["1", "0", "0"], counts  # rendered, unchanged, failed
