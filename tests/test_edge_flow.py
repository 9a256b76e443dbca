"""The edge tier through the whole pipeline: CLI, Prefect flow, store, catalogue; emulator on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from narro.catalogue import Catalogue
from narro.cli import main
from tests.conftest import write_manifest
from tests.edge_emulator import EdgeEmulator
from tests.test_edge import fast_retries, free_port  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("prefect_harness", "fast_retries", "no_asr")


@pytest.fixture
def no_asr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator's voice is a formant buzz, not words: the quality gate's ASR round trip is off here."""
    monkeypatch.setenv("NARRO_QA_ASR", "false")

VOICES = """
default: aria
voices:
  aria:
    fast: {engine: edge, model: en-US-AriaNeural, fallback: {engine: piper, model: joe-us-medium}}
"""


def course(folder: Path, clips: int, fallback: bool = True) -> Path:
    lines = ["course: edge-flow", "title: Edge flow", f"defaults: {{fallback: {str(fallback).lower()}}}", "narrations:"]
    for i in range(clips):
        lines += [f"  - id: c{i}", f"    text: Clip {i} says a short sentence. Then it says another one, & stops."]
    return write_manifest(folder, "\n".join(lines) + "\n", VOICES)


def render(*args: str):
    return CliRunner().invoke(main, ["render", *args])


def test_fallback_is_recorded_and_replaced_once_the_service_is_back(tmp_path: Path, isolated_catalogue: str,
                                                                    monkeypatch: pytest.MonkeyPatch):
    manifest, store = course(tmp_path / "c", 1), tmp_path / "store"
    folder = store / "edge-flow"
    monkeypatch.setenv("NARRO_EDGE_WSS_URL", f"ws://127.0.0.1:{free_port()}/edge/v1?x=1")
    result = render(str(manifest), "--store", str(store))
    assert result.exit_code == 0, result.output
    sidecar = json.loads((folder / "c0.json").read_text())
    assert sidecar["fallback"]["to"] == "piper:joe-us-medium" and "unreachable" in sidecar["fallback"]["reason"]
    assert sidecar["engine"]["engine"] == "piper" and sidecar["content_key"] != sidecar["fallback"]["planned_content_key"]
    assert not (folder / "c0.vtt").exists()
    state = Catalogue(isolated_catalogue).clip("edge-flow", "c0")
    assert state.status == "rendered" and state.fallback and state.fallback.startswith("piper:joe-us-medium")
    assert json.loads((folder / "index.json").read_text())["clips"][0]["fallback"] == "piper:joe-us-medium"

    from narro.engines import edge
    edge.reset_unreachable()
    with EdgeEmulator() as service:
        monkeypatch.setenv("NARRO_EDGE_WSS_URL", service.url)
        result = render(str(manifest), "--store", str(store))  # the service is back: re-rendered with edge
        assert result.exit_code == 0, result.output
        assert len(service.requests) == 1
        result = render(str(manifest), "--store", str(store))  # and now it is current: nothing to do
        assert result.exit_code == 0 and len(service.requests) == 1
    sidecar = json.loads((folder / "c0.json").read_text())
    assert "fallback" not in sidecar and sidecar["engine"]["engine"] == "edge"
    assert sidecar["content_key"] == Catalogue(isolated_catalogue).clip("edge-flow", "c0").content_key
    assert Catalogue(isolated_catalogue).clip("edge-flow", "c0").fallback is None
    vtt = (folder / "c0.vtt").read_text()
    assert sidecar["captions"]["file"] == "c0.vtt"
    first = vtt.split("\n")[3]
    assert first.startswith("00:00:00.2") or first.startswith("00:00:00.3")  # the 0.25 s pad, not the service's lead-in
    assert "\nThen it says another one, and stops.\n" in vtt  # the script's words and punctuation


def test_forbidden_fallback_fails_the_clip_with_the_reason(tmp_path: Path, isolated_catalogue: str,
                                                           monkeypatch: pytest.MonkeyPatch):
    manifest, store = course(tmp_path / "c", 1, fallback=False), tmp_path / "store"
    with EdgeEmulator(rates={"503": 1.0}) as service:
        monkeypatch.setenv("NARRO_EDGE_WSS_URL", service.url)
        result = render(str(manifest), "--store", str(store))
    assert result.exit_code == 1
    state = Catalogue(isolated_catalogue).clip("edge-flow", "c0")
    assert state.status == "failed" and "503" in state.last_error and "fallback: false" in state.last_error
    assert not (store / "edge-flow" / "c0.mp3").exists()


def test_the_request_cap_holds_across_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    manifest, store = course(tmp_path / "c", 8), tmp_path / "store"
    monkeypatch.setenv("NARRO_EDGE_CONCURRENCY", "2")
    with EdgeEmulator(first_audio_s=(0.3, 0.4), pace=20.0) as service:
        monkeypatch.setenv("NARRO_EDGE_WSS_URL", service.url)
        result = render(str(manifest), "--store", str(store), "--concurrency", "6")
    assert result.exit_code == 0, result.output
    assert len(service.requests) == 8 and service.max_active == 2
