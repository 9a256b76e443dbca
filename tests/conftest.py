"""Shared fixtures. Real things are started here once per session and polled until they answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

EXAMPLE_MANIFEST = Path(__file__).resolve().parent.parent / "manifests" / "example-course.yaml"

# Prefect must never reach out or log noise into test output.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.fixture(autouse=True)
def isolated_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """No test touches the user's catalogue."""
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    monkeypatch.setenv("NARRO_CATALOGUE", url)
    monkeypatch.setenv("NARRO_LOG_DIR", str(tmp_path / "logs"))  # nor the user's run logs
    return url


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (its own SQLite database) for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def write_manifest(folder: Path, body: str, voices: str | None = None) -> Path:
    """A manifest (and optionally a voices.yaml) in `folder`; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "course.yaml"
    path.write_text(body, encoding="utf-8")
    if voices is not None:
        (folder / "voices.yaml").write_text(voices, encoding="utf-8")
    return path
