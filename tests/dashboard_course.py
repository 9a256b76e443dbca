"""A tiny course rendered for real (piper audio, the real flow) with one clip that fails, for dashboard tests."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from narro.engines import ENGINES, Engine, EngineKind, Synthesis, engine_for
from narro.errors import EngineUnavailable
from narro.voices import EngineVoice
from tests import doubles
from tests.conftest import write_manifest

COURSE = """
course: dash-test
title: Dashboard test
narrations:
  - id: intro
    title: Intro <b>bold</b>
    text: Welcome to the dashboard test. This clip is long enough to hear a few words of speech.
  - id: broken
    title: Broken
    text: "This line is unspeakable for the test engine. <script>alert(1)</script>"
  - id: outro
    title: Outro
    text: That is all for now. In the next lesson we will listen to a few voices and compare them.
  - id: aside
    title: Aside
    voice: online
    text: An aside for the curious. The online voice is away, so the offline voice reads it instead.
"""

# `narrator` breaks on the marker word; `plain` is piper behind a gate, so a retry with it succeeds
# when the test lets it (the browser test holds the gate to see the clip pending first).
VOICES = """
default: narrator
voices:
  narrator:
    description: Piper behind an engine that refuses a marker word
    fast: {engine: broken-on-marker, model: joe-us-medium}
  plain:
    description: Piper
    fast: {engine: gated, model: joe-us-medium}
  online:
    description: An online voice whose service never answers; piper speaks for it
    fast: {engine: unreachable, model: online-voice, fallback: {engine: piper, model: joe-us-medium}}
"""

GATE = threading.Event()
GATE.set()


class GatedKind(EngineKind):
    """Piper that waits for GATE before speaking (open unless a test closes it)."""

    name = "gated"

    @classmethod
    def identity(cls, voice: EngineVoice) -> dict[str, object]:
        return {"engine": "gated", "model": voice.model}

    @classmethod
    def load(cls, voice: EngineVoice, settings: object) -> Engine:
        piper = engine_for(EngineVoice(engine="piper", model=voice.model), settings)

        class Gated:
            def synthesize(self, text: str) -> Synthesis:
                GATE.wait(timeout=60)
                return piper.synthesize(text)

        return Gated()


class UnreachableKind(EngineKind):
    """An online voice whose service never answers (synthesis and probe alike): its fallback speaks."""

    name = "unreachable"
    WHY = "test service unreachable: no route to host"

    @classmethod
    def identity(cls, voice: EngineVoice) -> dict[str, object]:
        return {"engine": "unreachable", "model": voice.model}

    @classmethod
    def load(cls, voice: EngineVoice, settings: object) -> Engine:
        class Away:
            def synthesize(self, text: str) -> Synthesis:
                raise EngineUnavailable(UnreachableKind.WHY)

        return Away()

    @classmethod
    def probe(cls, voice: EngineVoice, settings: object) -> None:
        raise EngineUnavailable(cls.WHY)


@dataclass
class Rendered:
    manifest: Path
    store: str
    catalogue: str


def render_course_once(folder: Path) -> Rendered:
    """Write the course and render it through the real flow: intro and outro render, broken fails, and the
    fallback voice speaks aside."""
    from flows.render_course import render_course

    ENGINES[doubles.BrokenOnMarkerKind.name] = doubles.BrokenOnMarkerKind
    ENGINES[GatedKind.name] = GatedKind
    ENGINES[UnreachableKind.name] = UnreachableKind
    manifest = write_manifest(folder / "course", COURSE, VOICES)
    rendered = Rendered(manifest, str(folder / "store"), f"sqlite:///{folder / 'catalogue.db'}")
    summary = render_course(manifest=str(manifest), store=rendered.store, catalogue=rendered.catalogue)
    assert summary["rendered"] == ["intro", "outro", "aside"] and list(summary["failed"]) == ["broken"], summary
    return rendered


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerThread:
    """A real uvicorn server on loopback, in a thread of the test process (so test engines apply)."""

    def __init__(self, app, port: int):  # noqa: ANN001 (a Starlette app)
        import uvicorn

        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"dashboard did not answer on {self.url}")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
