"""`narro say`: one line spoken by any engine and written as it arrives, with its time to first audio.

A `StreamingEngine`'s chunks are written the moment they come, so the time to first audio
(TTFA) is the time to its first chunk; any other engine synthesises the whole line first and its
TTFA is that synthesis time. Both are measured from the call, after the engine is loaded (the
load is reported apart: a worker loads once and speaks many lines). The real-time factor (RTF)
is synthesis wall time over audio duration.

When the voice's engine is unavailable before any audio was written (service unreachable), its
tier fallback speaks the line and the report names it, as renders do.

Output is 16-bit PCM: a WAV file, or to a pipe a WAV whose size fields hold the streaming
placeholder (0xFFFFFFFF, as ffmpeg writes; players read to the end), or raw `s16le`.

A line with script markup (narro.markup) is spoken as a render speaks it: part by part, joined
with the authored silences, so it is synthesised whole rather than streamed.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from narro import markup
from narro.engines import engine_for, engine_kind
from narro.engines.marked import speak_marked
from narro.errors import ConsentError, EngineUnavailable, SynthesisError

STREAMING_SIZE = 0xFFFFFFFF


@dataclass(frozen=True)
class SayReport:
    voice: str
    """engine:model that spoke."""
    streamed: bool
    load_s: float
    ttfa_s: float
    wall_s: float
    audio_s: float
    sample_rate: int
    chunks: int
    fallback: str | None = None
    """Why the voice's own engine did not speak, when its fallback did."""

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s if self.audio_s else float("inf")

    def line(self) -> str:
        """The one-line summary `narro say` prints to stderr (bench/quality.py parses it)."""
        how = f"streamed in {self.chunks} chunks" if self.streamed else "not streamed"
        summary = (f"TTFA {self.ttfa_s * 1000:.0f} ms, RTF {self.rtf:.3f}, {self.audio_s:.2f} s of audio at "
                   f"{self.sample_rate} Hz, {how}, voice {self.voice} (loaded in {self.load_s:.2f} s)")
        return summary + (f"; fallback: {self.fallback}" if self.fallback else "")

    def as_dict(self) -> dict[str, Any]:
        return {"voice": self.voice, "streamed": self.streamed, "load_s": self.load_s, "ttfa_s": self.ttfa_s,
                "wall_s": self.wall_s, "audio_s": self.audio_s, "rtf": self.rtf, "chunks": self.chunks,
                "sample_rate": self.sample_rate, "fallback": self.fallback}


class PcmWriter:
    """16-bit mono PCM written chunk by chunk, as WAV (sizes fixed at the end when seekable) or raw."""

    def __init__(self, out: BinaryIO, wav: bool = True):
        self.out, self.wav = out, wav
        self.sample_rate = 0
        self.frames = 0

    def write(self, samples: np.ndarray, sample_rate: int) -> None:
        if not self.sample_rate:
            self.sample_rate = sample_rate
            if self.wav:
                self.out.write(_wav_header(sample_rate, STREAMING_SIZE))
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
        self.out.write(pcm.tobytes())
        self.out.flush()  # a player on the other end of a pipe starts now
        self.frames += len(pcm)

    def close(self) -> None:
        if self.wav and self.out.seekable():
            self.out.seek(0)
            self.out.write(_wav_header(self.sample_rate, 2 * self.frames))
        self.out.flush()


def _wav_header(sample_rate: int, data_bytes: int) -> bytes:
    riff = STREAMING_SIZE if data_bytes == STREAMING_SIZE else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate,
            2 * sample_rate, 2, 16) + b"data" + struct.pack("<I", data_bytes))


def label(voice: Any) -> str:
    return f"{voice.engine}:{voice.model}"


Gate = Callable[[Any], object]
"""Called with an engine voice that clones a speaker before it speaks: raises ConsentError to refuse it."""


def say(voice: Any, text: str, settings: Any, out: BinaryIO, wav: bool = True, gate: Gate | None = None) -> SayReport:
    """Speak normalised `text` with the engine voice (or its fallback) into `out`.

    A cloned voice speaks only through `gate` (narro.consent.clear, with an audit trail); without one it is refused.
    """
    writer = PcmWriter(out, wav)
    try:
        report = _say(voice, text, settings, writer, None, gate)
    except EngineUnavailable as error:
        if voice.fallback is None or writer.frames:  # half a line is out: the fallback cannot take over
            raise
        report = _say(voice.fallback, text, settings, writer, f"{label(voice)} unavailable: {error}", gate)
    writer.close()
    return report


def _say(voice: Any, text: str, settings: Any, writer: PcmWriter, fallback: str | None,
         gate: Gate | None) -> SayReport:
    if engine_kind(voice.engine).clones_voice:
        if gate is None:
            raise ConsentError(f"{label(voice)} clones a speaker: it speaks only where its consent is checked")
        gate(voice)
    loading = time.perf_counter()
    engine = engine_for(voice, settings)
    started = time.perf_counter()
    stream = getattr(engine, "stream", None)  # a StreamingEngine
    if markup.marked(text):  # spoken part by part with the authored silences, as a render does: not streamed
        stream = None
        chunks: Iterator[np.ndarray] = iter([speak_marked(engine, text, engine_kind(voice.engine).pace_control).samples])
    else:
        chunks = stream(text) if stream is not None else iter([engine.synthesize(text).samples])
    streaming = stream is not None
    first_s, count = 0.0, 0
    for chunk in chunks:
        if not count:
            first_s = time.perf_counter() - started
        writer.write(np.asarray(chunk, dtype=np.float32), engine.sample_rate)
        count += 1
    wall = time.perf_counter() - started
    if writer.frames == 0:
        raise SynthesisError(f"{label(voice)} produced no audio for this line")
    return SayReport(label(voice), streaming, started - loading, first_s, wall, writer.frames / engine.sample_rate,
                     engine.sample_rate, count, fallback)
