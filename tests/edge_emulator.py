"""A local emulator of the edge-tts read-aloud service, on loopback, for tests and the benchmark.

It speaks the service's WebSocket protocol to the unmodified `edge-tts` client: the client sends
`Path:speech.config` and `Path:ssml` text frames; the emulator answers `turn.start`, one
`audio.metadata` frame per word boundary (offsets in 100 ns ticks), binary audio frames (2-byte
big-endian header length, `Path:audio` / `Content-Type:audio/mpeg` headers, MP3 bytes; the
header length counts the headers' final CRLF, which is how the client slices them), an empty
end-of-audio frame, and `turn.end`.

The audio is real MP3 (24 kHz, 48 kbps CBR, raw frames like the service's) of a cheap
synthetic voice: a harmonic buzz shaped by two formants, one syllable-timed burst per word,
pauses at punctuation. Its word boundaries are exact, rate stretches it and pitch moves its
fundamental, so what narro does with timings and prosody is checkable. (A neural voice here
would cost seconds of CPU per clip on a 2-core machine, which the benchmark cannot spare.)

Faults, chosen per connection from `queue` (FIFO) or at random by `rates`:
  429, 503        the handshake is refused with that status
  drop            the connection is cut mid-stream (no close frame, no turn.end)
  truncate        all word boundaries, 40% of the audio, then a proper turn.end
  no_turn_end     60% of audio and its boundaries, then the socket closes without turn.end
  silent          digital silence with plausible boundaries
  slow            the whole answer, one small frame every `slow_frame_s`
  malformed       a binary frame whose header length exceeds the frame
  wrong_type      audio frames with Content-Type audio/x-wav
Run alone: `python tests/edge_emulator.py [--port N] [--rate429 0.2]` prints its URLs.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from aiohttp import WSMsgType, web

SAMPLE_RATE = 24_000
BYTES_PER_S = 6_000  # 48 kbps
CHUNK_BYTES = 1_200  # 0.2 s of audio per binary frame
TICKS = 10_000_000
SSML_NS = "{http://www.w3.org/2001/10/synthesis}"

VOICES = [
    {"Name": "Microsoft Server Speech Text to Speech Voice (en-US, AriaNeural)", "ShortName": "en-US-AriaNeural",
     "Gender": "Female", "Locale": "en-US", "SuggestedCodec": "audio-24khz-48kbitrate-mono-mp3",
     "FriendlyName": "Microsoft Aria Online (Natural) - English (United States)", "Status": "GA"},
    {"Name": "Microsoft Server Speech Text to Speech Voice (en-US, GuyNeural)", "ShortName": "en-US-GuyNeural",
     "Gender": "Male", "Locale": "en-US", "SuggestedCodec": "audio-24khz-48kbitrate-mono-mp3",
     "FriendlyName": "Microsoft Guy Online (Natural) - English (United States)", "Status": "GA"},
    {"Name": "Microsoft Server Speech Text to Speech Voice (en-GB, SoniaNeural)", "ShortName": "en-GB-SoniaNeural",
     "Gender": "Female", "Locale": "en-GB", "SuggestedCodec": "audio-24khz-48kbitrate-mono-mp3",
     "FriendlyName": "Microsoft Sonia Online (Natural) - English (United Kingdom)", "Status": "GA"},
]


@dataclass
class Request:
    """What one connection asked for, as the emulator parsed it."""

    voice: str
    rate: str
    pitch: str
    volume: str
    text: str
    """Character data of the SSML's prosody element, unescaped."""
    elements: list[str]
    """Tags of any elements inside the prosody element: must stay empty (no injected SSML)."""
    word_boundaries: bool
    fault: str | None
    started: float
    ended: float = 0.0


@dataclass
class Take:
    mp3: bytes
    words: list[tuple[str, float, float]]
    duration_s: float


def synthetic_speech(text: str, rate: float = 1.0, pitch_hz: float = 0.0, seed: int = 0) -> tuple[np.ndarray, list]:
    """Speech-like audio for `text` and exact (word, start_s, end_s) timings."""
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = [np.zeros(int(0.12 * SAMPLE_RATE), np.float32)]
    position = len(pieces[0])
    words = []
    f0 = 118.0 + pitch_hz
    for token in text.split():
        word = token.strip(".,;:!?\"'()[]…")
        if not any(ch.isalnum() for ch in word):
            continue
        syllables = max(1, len(re.findall(r"[aeiouy]+", word.lower())))
        length = (0.11 + 0.13 * syllables) / rate
        n = int(length * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        pitch = f0 * (1.0 + 0.06 * np.sin(2 * np.pi * 1.5 * t + rng.uniform(0, 6)))
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        formants = rng.uniform(350, 850), rng.uniform(1000, 2400)
        signal = np.zeros(n)
        for k in range(1, 26):
            harmonic = k * f0
            gain = sum(np.exp(-((harmonic - f) / 140.0) ** 2) for f in formants) + 0.05 / k
            signal += gain * np.sin(k * phase)
        syllable = np.abs(np.sin(np.pi * syllables * t / length)) ** 0.6
        signal = (0.25 * signal / max(1e-9, np.max(np.abs(signal))) * syllable).astype(np.float32)
        words.append((word, position / SAMPLE_RATE, (position + n) / SAMPLE_RATE))
        pieces.append(signal)
        position += n
        pause = 0.32 if token[-1] in ".!?…" else 0.16 if token[-1] in ",;:" else 0.05
        pieces.append(np.zeros(int(pause / rate * SAMPLE_RATE), np.float32))
        position += len(pieces[-1])
    pieces.append(np.zeros(int(0.15 * SAMPLE_RATE), np.float32))
    return np.concatenate(pieces), words


def encode_stream_mp3(samples: np.ndarray) -> bytes:
    """Raw MP3 frames (no ID3, no Xing header), 24 kHz mono 48 kbps CBR, as the service sends."""
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "f32le", "-ar", str(SAMPLE_RATE),
         "-ac", "1", "-i", "pipe:0", "-c:a", "libmp3lame", "-b:a", "48k", "-write_xing", "0",
         "-id3v2_version", "0", "-f", "mp3", "pipe:1"],
        input=samples.astype("<f4").tobytes(), capture_output=True, check=True,
    )
    return done.stdout


def _text_frame(path: str, body: str, request_id: str, content_type: str = "application/json; charset=utf-8") -> str:
    return f"X-RequestId:{request_id}\r\nContent-Type:{content_type}\r\nPath:{path}\r\n\r\n{body}"


def _audio_frame(request_id: str, data: bytes, content_type: str | None = "audio/mpeg") -> bytes:
    headers = f"X-RequestId:{request_id}\r\n"
    if content_type:
        headers += f"Content-Type:{content_type}\r\n"
    headers += "Path:audio\r\n"
    encoded = headers.encode("ascii")
    return len(encoded).to_bytes(2, "big") + encoded + data


def _boundary(word: str, start: float, end: float) -> str:
    return json.dumps({"Metadata": [{"Type": "WordBoundary", "Data": {
        "Offset": int(start * TICKS), "Duration": int((end - start) * TICKS),
        "text": {"Text": word.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
                 "Length": len(word), "BoundaryType": "WordBoundary"}}}]})


@dataclass
class EdgeEmulator:
    """The service on 127.0.0.1; `with EdgeEmulator() as service:` starts and stops it."""

    first_audio_s: tuple[float, float] = (0.0, 0.0)
    """Delay before the first audio frame, drawn uniformly from this range."""
    pace: float = 0.0
    """Audio seconds streamed per wall second (0: as fast as possible)."""
    rates: dict[str, float] = field(default_factory=dict)
    """Probability of each fault per connection, e.g. {"429": 0.2}."""
    slow_frame_s: float = 0.25
    seed: int = 1
    port: int = 0
    queue: deque[str] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    max_active: int = 0
    handshakes: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._cache: dict[tuple[str, str, str], Take] = {}
        self._cache_lock = threading.Lock()
        self._active = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/consumer/speech/synthesize/readaloud/edge/v1?TrustedClientToken=test"

    @property
    def voices_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/consumer/speech/synthesize/readaloud/voices/list?trustedclienttoken=test"

    def __enter__(self) -> EdgeEmulator:
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_get("/consumer/speech/synthesize/readaloud/edge/v1", self._speak)
            app.router.add_get("/consumer/speech/synthesize/readaloud/voices/list", self._voices)
            self._runner = web.AppRunner(app, handle_signals=False)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, daemon=True, name="edge-emulator")
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("edge emulator did not start")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def fault_next(self, *faults: str) -> None:
        self.queue.extend(faults)

    def warm(self, texts: list[str], voice: str = "en-US-AriaNeural") -> None:
        """Render takes ahead of time so a benchmark measures the protocol, not this emulator."""
        for text in texts:
            self._take(text, "+0%", "+0Hz")

    # ------------------------------------------------------------------ audio
    def _take(self, text: str, rate: str, pitch: str) -> Take:
        key = (text, rate, pitch)
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        factor = max(0.25, 1 + int(rate.rstrip("%")) / 100)
        samples, words = synthetic_speech(text, factor, float(pitch.removesuffix("Hz")), seed=len(text))
        take = Take(encode_stream_mp3(samples), words, len(samples) / SAMPLE_RATE)
        with self._cache_lock:
            self._cache[key] = take
        return take

    # ------------------------------------------------------------------ HTTP
    async def _voices(self, request: web.Request) -> web.Response:
        return web.json_response(VOICES)

    def _pick_fault(self) -> str | None:
        if self.queue:
            return self.queue.popleft()
        for fault, probability in self.rates.items():
            if self._random.random() < probability:
                return fault
        return None

    async def _speak(self, http: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        fault = self._pick_fault()
        if fault in ("429", "503"):
            return web.Response(status=int(fault), text="Too Many Requests" if fault == "429" else "Unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(http)
        self._active += 1
        self.max_active = max(self.max_active, self._active)
        try:
            await self._converse(ws, http, fault)
        finally:
            self._active -= 1
        return ws

    async def _converse(self, ws: web.WebSocketResponse, http: web.Request, fault: str | None) -> None:
        config, ssml = None, None
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            head, _, body = message.data.partition("\r\n\r\n")
            if "Path:speech.config" in head:
                config = json.loads(body)
            elif "Path:ssml" in head:
                ssml = body
                break
        if ssml is None:
            return
        request = self._parse(ssml, config, fault)
        self.requests.append(request)
        loop = asyncio.get_running_loop()
        take = await loop.run_in_executor(None, self._take, request.text, request.rate, request.pitch)
        request_id = uuid.uuid4().hex
        await ws.send_str(_text_frame("turn.start", '{"context":{"serviceTag":"emulator"}}', request_id))
        await asyncio.sleep(self._random.uniform(*self.first_audio_s))
        await self._stream(ws, http, take, request, request_id)
        request.ended = time.monotonic()

    def _parse(self, ssml: str, config: dict | None, fault: str | None) -> Request:
        root = ET.fromstring(ssml)
        voice = root.find(f"{SSML_NS}voice")
        prosody = voice.find(f"{SSML_NS}prosody") if voice is not None else None
        if voice is None or prosody is None:
            raise ValueError("SSML without voice/prosody")
        options = ((config or {}).get("context", {}).get("synthesis", {}).get("audio", {}).get("metadataoptions", {}))
        return Request(
            voice=voice.get("name", ""), rate=prosody.get("rate", "+0%"), pitch=prosody.get("pitch", "+0Hz"),
            volume=prosody.get("volume", "+0%"), text="".join(prosody.itertext()),
            elements=[child.tag for child in prosody.iter() if child is not prosody],
            word_boundaries=options.get("wordBoundaryEnabled") == "true", fault=fault, started=time.monotonic(),
        )

    async def _stream(self, ws: web.WebSocketResponse, http: web.Request, take: Take, request: Request,
                      request_id: str) -> None:
        mp3, words = take.mp3, take.words if request.word_boundaries else []
        audio_end = len(mp3)
        if fault := request.fault:
            if fault == "truncate":
                audio_end = int(len(mp3) * 0.4)
            elif fault in ("no_turn_end", "drop"):
                audio_end = int(len(mp3) * (0.6 if fault == "no_turn_end" else 0.5))
                words = [w for w in words if w[2] <= audio_end / BYTES_PER_S]
            elif fault == "silent":
                mp3 = encode_stream_mp3(np.zeros(int(take.duration_s * SAMPLE_RATE), np.float32))
                audio_end = len(mp3)
        content_type = "audio/x-wav" if request.fault == "wrong_type" else "audio/mpeg"
        started = time.monotonic()
        sent_words = 0
        for offset in range(0, audio_end, CHUNK_BYTES):
            audio_time = offset / BYTES_PER_S
            # Boundaries run a little ahead of the audio, as the service's do.
            while sent_words < len(words) and (words[sent_words][1] <= audio_time + 0.5 or request.fault == "truncate"):
                await ws.send_str(_text_frame("audio.metadata", _boundary(*words[sent_words]), request_id))
                sent_words += 1
            if request.fault == "malformed" and offset >= CHUNK_BYTES:
                await ws.send_bytes((500).to_bytes(2, "big") + b"Path:audio\r\n")
                break
            await ws.send_bytes(_audio_frame(request_id, mp3[offset:min(offset + CHUNK_BYTES, audio_end)], content_type))
            if request.fault == "slow":
                await asyncio.sleep(self.slow_frame_s)
            elif self.pace > 0:
                ahead = (offset + CHUNK_BYTES) / BYTES_PER_S / self.pace - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        if request.fault == "drop":
            http.transport.abort()  # type: ignore[union-attr]
            return
        if request.fault == "no_turn_end":
            await ws.close()
            return
        for word in words[sent_words:]:
            await ws.send_str(_text_frame("audio.metadata", _boundary(*word), request_id))
        await ws.send_bytes(_audio_frame(request_id, b"", None))
        await ws.send_str(_text_frame("turn.end", "{}", request_id))
        async for _ in ws:  # wait for the client to hang up
            pass


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate429", type=float, default=0.0)
    parser.add_argument("--pace", type=float, default=0.0)
    args = parser.parse_args()
    with EdgeEmulator(port=args.port, pace=args.pace, rates={"429": args.rate429} if args.rate429 else {}) as service:
        print(f"NARRO_EDGE_WSS_URL={service.url}\nNARRO_EDGE_VOICES_URL={service.voices_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
