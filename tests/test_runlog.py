"""What `narro render` prints when clips fail, run as a user runs it: a real process, a real Prefect API.

Expected failures (a quality-gate refusal) are one line each in the summary; the run's log file,
which the summary names, holds Prefect's records and tracebacks. A bug shows its traceback once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from narro.catalogue import Catalogue
from tests.conftest import write_manifest

# An engine with a bug, installed the way an outside package is: a dist-info entry point on the path.
BUGGY_ENGINE = '''
from narro.engines import EngineKind


class BuggyKind(EngineKind):
    name = "buggy"

    @classmethod
    def identity(cls, voice):
        return {"engine": "buggy", "model": voice.model}

    @classmethod
    def load(cls, voice, settings):
        return Buggy()


class Buggy:
    sample_rate = 22050

    def synthesize(self, text):
        return 1 / 0
'''

VOICES = """
default: narrator
voices:
  narrator:
    fast: {engine: piper, model: joe-us-medium}
  buggy:
    fast: {engine: buggy, model: none}
"""

COURSE = """
course: noisy
title: Noisy
narrations:
  - id: slow-one
    text: The first clip is short and clear.
  - id: slow-two
    text: The second clip is short as well.
  - id: bug-one
    voice: buggy
    text: This engine has a bug.
  - id: bug-two
    voice: buggy
    text: And it has the same bug here.
"""


@dataclass
class Run:
    code: int
    terminal: str
    log_dir: Path
    catalogue: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, prefect_harness) -> Run:  # noqa: ANN001
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("runlog")
    plugin = root / "plugin"
    plugin.mkdir()
    (plugin / "narro_buggy_engine.py").write_text(BUGGY_ENGINE)
    dist = plugin / "narro_buggy_engine-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: narro-buggy-engine\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[narro.engines]\nbuggy = narro_buggy_engine:BuggyKind\n")
    manifest = write_manifest(root / "course", COURSE, VOICES)
    catalogue = f"sqlite:///{root / 'catalogue.db'}"
    env = {
        **os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()), "NARRO_CATALOGUE": catalogue,
        "NARRO_LOG_DIR": str(root / "logs"), "COLUMNS": "200",
        # No speech is this fast: every piper take is refused by the quality gate, as expected.
        "NARRO_QA_MIN_WPM": "1000", "NARRO_QA_MAX_WPM": "2000", "NARRO_QA_MIN_RATE_WORDS": "0",
        "NARRO_QA_ASR": "false", "NARRO_QA_MAX_TAKES": "1",
    }
    env.pop("PREFECT_LOGGING_LEVEL", None)  # as a user has it: Prefect's default
    narro = Path(sys.executable).parent / "narro"
    done = subprocess.run([str(narro), "render", str(manifest), "--store", str(root / "store")],
                          env=env, cwd=root, capture_output=True, text=True, timeout=600)
    return Run(done.returncode, done.stdout + done.stderr, root / "logs", catalogue)


def test_expected_failures_are_one_line_each_and_the_summary_names_the_log(run: Run):
    assert run.code == 1, run.terminal
    [log] = run.log_dir.glob("noisy-*.log")
    assert f"full log: {log}" in run.terminal
    for clip in ("slow-one", "slow-two"):
        assert re.search(rf"{clip}\s.*quality gate: no take passed", run.terminal), run.terminal
    assert "QualityError" not in run.terminal and "ERROR" not in run.terminal, run.terminal
    states = {c.narration_id: c for c in Catalogue(run.catalogue).clips("noisy")}
    assert all(state.status == "failed" for state in states.values())


def test_the_log_file_holds_the_details(run: Run):
    [log] = run.log_dir.glob("noisy-*.log")
    text = log.read_text()
    assert "Task run 'render-slow-one'" in text and "narro.errors.QualityError: quality gate" in text
    assert "INFO    | narro.clip - noisy/slow-two: take 1 (as asked) failed: " in text  # narro's own record
    assert text.count("Traceback (most recent call last)") >= 4  # every failed clip, the bug included


def test_a_bug_shows_its_traceback_once(run: Run):
    assert run.terminal.count("Traceback (most recent call last)") == 1, run.terminal
    assert "ZeroDivisionError: division by zero" in run.terminal
    assert re.search(r"bug-two\s.*ZeroDivisionError", run.terminal), run.terminal
