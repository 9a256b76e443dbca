"""The edge tier through the whole pipeline: CLI, Prefect flow, store, catalogue; emulator on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from narro.catalogue import Catalogue
from narro.cli import main
from narro.engines import edge
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
    # The fallback voice gives no word timings and the ASR pass (which would time them) is off here.
    assert "captions" not in sidecar and not (folder / "c0.vtt").exists()
    state = Catalogue(isolated_catalogue).clip("edge-flow", "c0")
    assert state.status == "rendered" and state.fallback and state.fallback.startswith("piper:joe-us-medium")
    assert json.loads((folder / "index.json").read_text())["clips"][0]["fallback"] == "piper:joe-us-medium"

    with EdgeEmulator() as service:
        monkeypatch.setenv("NARRO_EDGE_WSS_URL", service.url)
        result = render(str(manifest), "--store", str(store))  # the service is back: re-rendered with edge
        assert result.exit_code == 0, result.output
        # One probe (it answers, so the fallback clip is made again), then the clip's own request.
        assert [r.text for r in service.requests][0] == edge.PROBE_TEXT and len(service.requests) == 2
        result = render(str(manifest), "--store", str(store))  # and now it is current: nothing to do, nothing asked
        assert result.exit_code == 0 and len(service.requests) == 2
    sidecar = json.loads((folder / "c0.json").read_text())
    assert "fallback" not in sidecar and sidecar["engine"]["engine"] == "edge"
    assert sidecar["content_key"] == Catalogue(isolated_catalogue).clip("edge-flow", "c0").content_key
    assert Catalogue(isolated_catalogue).clip("edge-flow", "c0").fallback is None
    vtt = (folder / "c0.vtt").read_text()
    assert sidecar["captions"]["vtt"] == "c0.vtt" and sidecar["captions"]["timing"] == "engine"
    first = vtt.split("\n")[3]
    assert first.startswith("00:00:00.2") or first.startswith("00:00:00.3")  # the 0.25 s pad, not the service's lead-in
    assert "\nThen it says another one, &amp; stops.\n" in vtt  # the script as written (spoken: "and")


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as their text, so a cell's words stay on one line."""
    from narro import cli

    monkeypatch.setattr(cli.console, "_width", 400)


def test_offline_renders_of_an_unchanged_course_render_nothing_and_show_the_fallback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wide: None):
    manifest, store = course(tmp_path / "c", 2), tmp_path / "store"
    folder = store / "edge-flow"
    monkeypatch.setenv("NARRO_EDGE_WSS_URL", f"ws://127.0.0.1:{free_port()}/edge/v1?x=1")  # offline: nothing listens
    first = render(str(manifest), "--store", str(store))
    assert first.exit_code == 0, first.output
    assert "by fallback voice" in first.output and "spoken by the fallback voice, not the voice the manifest asks" in first.output
    assert "  c0 (aria): piper:joe-us-medium spoke it: edge-tts service unreachable: cannot connect to 127.0.0.1" \
        in first.output
    status = CliRunner().invoke(main, ["status", "edge-flow", "--wide"])
    assert "fallback: piper:joe-us-medium" in status.output and "2 spoken by the fallback voice" in status.output
    assert "fallback: piper:joe-us-medium spoke it: edge-tts service unreachable" in status.output
    made = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.mp3")}

    again = render(str(manifest), "--store", str(store))  # still offline, nothing changed: nothing is rendered
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.mp3")} == made
    row = next(line for line in again.output.splitlines() if line.startswith("│"))
    assert [cell.strip() for cell in row.split("│")[1:5]] == ["0", "2", "0", "2"]  # rendered, unchanged, failed, fallback
    dry = render(str(manifest), "--store", str(store), "--dry-run")
    assert "would keep edge-flow/c0: spoken by the fallback: piper:joe-us-medium spoke it: edge-tts service " \
           "unreachable" in dry.output
    assert "kept until its own voice answers: edge-tts service unreachable: cannot connect to 127.0.0.1" in dry.output
    assert dry.output.splitlines()[-1] == "0 to render, 2 unchanged (2 spoken by the fallback voice); dry run: nothing was written"

    retried = render(str(manifest), "--store", str(store), "--retry-fallbacks")  # asked: made again, by the fallback
    assert retried.exit_code == 0, retried.output
    assert all(made[p.name] != p.stat().st_mtime_ns for p in folder.glob("*.mp3"))
    assert "2 to render (2 spoken by the fallback)" in retried.output


def test_forbidden_fallback_fails_the_clip_with_the_reason(tmp_path: Path, isolated_catalogue: str,
                                                           monkeypatch: pytest.MonkeyPatch):
    manifest, store = course(tmp_path / "c", 1, fallback=False), tmp_path / "store"
    with EdgeEmulator(rates={"503": 1.0}) as service:
        monkeypatch.setenv("NARRO_EDGE_WSS_URL", service.url)
        result = render(str(manifest), "--store", str(store))
    assert result.exit_code == 1
    state = Catalogue(isolated_catalogue).clip("edge-flow", "c0")
    assert state.status == "failed" and "503" in state.last_error and "fallback: false" in state.last_error
    # Nothing was spoken, so nothing failed a quality check: the message says what happened.
    assert state.last_error.startswith("engine unavailable: edge-tts service keeps failing") and \
        "quality gate" not in state.last_error
    assert not (store / "edge-flow" / "c0.mp3").exists()


def test_the_request_cap_holds_across_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    manifest, store = course(tmp_path / "c", 8), tmp_path / "store"
    monkeypatch.setenv("NARRO_EDGE_CONCURRENCY", "2")
    with EdgeEmulator(first_audio_s=(0.3, 0.4), pace=20.0) as service:
        monkeypatch.setenv("NARRO_EDGE_WSS_URL", service.url)
        result = render(str(manifest), "--store", str(store), "--concurrency", "6")
    assert result.exit_code == 0, result.output
    assert len(service.requests) == 8 and service.max_active == 2
