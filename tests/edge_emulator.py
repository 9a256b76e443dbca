"""A local emulator of the edge-tts read-aloud service, on loopback, for tests and the benchmark.

It speaks the service's WebSocket protocol to the unmodified `edge-tts` client: the client sends
`Path:speech.config` and `Path:ssml` text frames; the emulator answers `turn.start`, one
`audio.metadata` frame per word boundary (offsets in 100 ns ticks), binary audio frames (2-byte
big-endian header length, `Path:audio` / `Content-Type:audio/mpeg` headers, MP3 bytes; the
header length counts the headers' final CRLF, which is how the client slices them), an empty
end-of-audio frame, and `turn.end`.

The voice (`voice=`):
  piper   (default) intelligible speech: narro's offline piper voice, one utterance per
          sentence, so the quality gate's recogniser judges what a real edge voice would give
          it. Word boundaries are the model's own durations (piper's alignment output: samples
          per phoneme) summed over each word's phonemes, moved by the MP3 encoder's delay
          (measured once, `stream_delay_s`), so they time the decoded audio the client gets to
          the sample. Each word is phonemised on its own to know which phonemes are its own.
          `rate` divides piper's length_scale (its effect is milder than the service's: -20%
          makes speech about 1.15x as long, not 1.25x); `pitch` and `volume` are recorded in the
          request but not applied (piper has neither knob). Costs piper's CPU (RTF about 0.1 on a
          free core) the first time a (text, rate) is asked for; `warm` pays it ahead of time.
  tones   a harmonic buzz shaped by two formants, one syllable-timed burst per word (no words
          a recogniser could hear), for protocol tests that never run the quality gate; its
          rate stretches it and pitch moves its fundamental. Nearly free.
Either way the audio is real MP3 (24 kHz, 48 kbps CBR, raw frames with no header, as the
service sends).

Timing model: `first_audio_s` (a uniform delay between turn.start and the first audio frame)
and `pace` (seconds of audio streamed per wall second; 0 streams as fast as the socket takes
it). Word boundaries run up to 0.5 s ahead of the audio, as the service's do. A take not
warmed is synthesised when first asked for, on this machine's CPU, before turn.start: that time
counts as the service's latency, and `cold_takes` counts such requests so a benchmark can say
whether any fell in its timed runs.

Faults, chosen per connection from `queue` (FIFO) or at random by `rates`:
  429, 503        the handshake is refused with that status
  drop            the connection is cut mid-stream (no close frame, no turn.end)
  truncate        all word boundaries, 40% of the audio, then a proper turn.end
  no_turn_end     60% of audio and its boundaries, then the socket closes without turn.end
  silent          digital silence with plausible boundaries
  slow            the whole answer, one small frame every `slow_frame_s`
  malformed       a binary frame whose header length exceeds the frame
  wrong_type      audio frames with Content-Type audio/x-wav
Run alone: `python tests/edge_emulator.py [--port N] [--rate429 0.2] [--voice tones]` prints its URLs.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import re
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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


# --------------------------------------------------------------------------- voices

PIPER_MODEL = "joe-us-medium"
SENTENCE_PAUSE_S = 0.3
CLAUSE_MARKS = ",.;:!?"
WORD_STRIP = ".,;:!?\"'()[]…"


def _sentences(text: str) -> list[list[str]]:
    """The text's tokens (split at spaces) grouped into sentences, each ending at a token that ends one."""
    sentences: list[list[str]] = [[]]
    for token in text.split():
        sentences[-1].append(token)
        if token.rstrip("\"')]")[-1:] in (".", "!", "?", "…"):
            sentences.append([])
    return [s for s in sentences if s]


class PiperSpeaker:
    """narro's piper voice with the model's alignment output exposed: speech and its exact word timings.

    piper-tts's alignment patch marks the duration predictor's output (frames per phoneme id) as a
    graph output, in memory; the audio is those frames times the hop length, in order, so a word
    spans exactly the samples of its phoneme ids.
    """

    def __init__(self) -> None:
        import onnx
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig
        from piper.patch_voice_with_alignment import add_alignment_output
        from piper.voice import ESPEAK_DATA_DIR

        from narro.engines.piper import model_path
        from narro.voices import EngineVoice

        path = model_path(EngineVoice(engine="piper", model=PIPER_MODEL))
        model = onnx.load(str(path))
        add_alignment_output(model)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # as narro's engine: parallel requests use the cores, not one request
        options.enable_mem_pattern = False
        session = onnxruntime.InferenceSession(model.SerializeToString(), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text(encoding="utf-8")))
        self.voice = PiperVoice(config=config, session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR),
                                download_dir=path.parent)
        self.sample_rate = config.sample_rate
        self._config = SynthesisConfig
        self._ids = config.phoneme_id_map

    def speak(self, text: str, rate: float = 1.0) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
        """Speech for `text` at `rate` (1: normal) and (word, start_s, end_s) for each word with a letter or digit."""
        config = self._config(length_scale=1.0 / rate, noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
        pause = np.zeros(int(SENTENCE_PAUSE_S / rate * self.sample_rate), np.float32)
        pieces: list[np.ndarray] = []
        words: list[tuple[str, float, float]] = []
        position = 0
        for tokens in _sentences(text):
            ids, spans = self._phoneme_ids(tokens)
            if not spans:
                continue
            audio, samples = self.voice.phoneme_ids_to_audio(ids, config, include_alignments=True)
            if samples is None or len(samples) != len(ids):
                raise RuntimeError("piper gave no alignment: is the model's duration output patched in?")
            edges = np.concatenate([[0], np.cumsum(samples)])
            if pieces:
                pieces.append(pause)
                position += len(pause)
            words += [(word, (position + edges[first]) / self.sample_rate, (position + edges[last]) / self.sample_rate)
                      for word, first, last in spans if any(ch.isalnum() for ch in word)]
            pieces.append(np.clip(audio, -1.0, 1.0).astype(np.float32))
            position += len(audio)
        if not pieces:
            return np.zeros(int(0.2 * self.sample_rate), np.float32), []
        return np.concatenate(pieces), words

    def _phoneme_ids(self, tokens: list[str]) -> tuple[list[int], list[tuple[str, int, int]]]:
        """One sentence as piper's phoneme ids (BOS, then each phoneme and a pad, EOS; words apart by a space,
        clause marks kept for the prosody) and, per token, its word and the range of its phonemes' ids."""
        ids = self._ids
        sequence = [*ids["^"], *ids["_"]]
        spans: list[tuple[str, int, int]] = []
        for token in tokens:
            word = token.strip(WORD_STRIP)
            phonemes = [p for sentence in self.voice.phonemize(word) for p in sentence if p not in CLAUSE_MARKS]
            phonemes = [p for p in phonemes if p in ids]
            while phonemes and phonemes[-1] == " ":
                phonemes.pop()
            if not phonemes:
                continue
            if spans:
                sequence += [*ids[" "], *ids["_"]]
            first = len(sequence)
            for phoneme in phonemes:
                sequence += [*ids[phoneme], *ids["_"]]
            spans.append((word, first, len(sequence)))
            core = token.rstrip("\"')]")
            for mark in core[len(core.rstrip(CLAUSE_MARKS + "…")):]:  # a pause, or a question's rise
                sequence += [*ids["." if mark == "…" else mark], *ids["_"]]
        sequence += ids["$"]
        return sequence, spans


@functools.cache
def piper_speaker() -> PiperSpeaker:
    """One loaded speaker per process (loading patches a 60 MB model: seconds)."""
    return PiperSpeaker()


def encode_stream_mp3(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Raw MP3 frames (no ID3, no Xing header), 24 kHz mono 48 kbps CBR, as the service sends."""
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "f32le", "-ar", str(sample_rate),
         "-ac", "1", "-i", "pipe:0", "-ar", str(SAMPLE_RATE), "-c:a", "libmp3lame", "-b:a", "48k",
         "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", "pipe:1"],
        input=samples.astype("<f4").tobytes(), capture_output=True, check=True,
    )
    return done.stdout


@functools.cache
def stream_delay_s(sample_rate: int) -> float:
    """How much later a sound is heard in the decoded stream than in the samples encoded.

    The MP3 encoder's delay (libmp3lame: 1105 samples at 24 kHz), which a stream without a LAME
    header leaves in; measured on a noise burst through the same encoder and ffmpeg's decoder.
    """
    from scipy.signal import correlate, resample_poly

    from narro.encode import decode

    burst = np.zeros(sample_rate, np.float32)
    burst[sample_rate // 4: sample_rate // 4 + sample_rate // 10] = np.random.default_rng(0).uniform(
        -0.5, 0.5, sample_rate // 10)
    heard = decode(encode_stream_mp3(burst, sample_rate), SAMPLE_RATE)
    sent = resample_poly(burst, SAMPLE_RATE, sample_rate)
    lag = int(np.argmax(correlate(heard, sent, mode="full", method="fft"))) - (len(sent) - 1)
    return lag / SAMPLE_RATE


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


# Takes by (voice, text, rate, pitch), shared by every emulator in the process: tests start many.
_takes: dict[tuple[str, str, str, str], Take] = {}
_takes_lock = threading.Lock()


@dataclass
class EdgeEmulator:
    """The service on 127.0.0.1; `with EdgeEmulator() as service:` starts and stops it."""

    voice: str = "piper"
    """`piper` (intelligible speech) or `tones` (a cheap buzz for protocol tests); see the module's docstring."""
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
    cold_takes: int = 0
    """Requests whose take was not warmed: synthesised while the client waited."""

    def __post_init__(self) -> None:
        if self.voice not in ("piper", "tones"):
            raise ValueError(f"voice must be 'piper' or 'tones', not {self.voice!r}")
        self._random = random.Random(self.seed)
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

    def warm(self, texts: list[str]) -> None:
        """Render the takes narro's edge engine will ask for (each text split into its requests' parts) ahead
        of time, on every core, so a benchmark measures the protocol, not this emulator."""
        from narro.engines.edge import speakable, split_text

        parts = list(dict.fromkeys(part for text in texts for part in split_text(speakable(text))))
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(lambda part: self._take(part, "+0%", "+0Hz"), parts))

    # ------------------------------------------------------------------ audio
    def _take(self, text: str, rate: str, pitch: str, asked: bool = False) -> Take:
        """The take for a request (`asked`: a client is waiting for it), made once per (text, rate, pitch)."""
        key = (self.voice, text, rate, pitch if self.voice == "tones" else "")
        with _takes_lock:
            cached = _takes.get(key)
            self.cold_takes += asked and cached is None
        if cached is not None:
            return cached
        factor = max(0.25, 1 + int(rate.rstrip("%")) / 100)
        if self.voice == "piper":
            speaker = piper_speaker()
            samples, words = speaker.speak(text, factor)
            sample_rate = speaker.sample_rate
        else:
            samples, words = synthetic_speech(text, factor, float(pitch.removesuffix("Hz")), seed=len(text))
            sample_rate = SAMPLE_RATE
        delay = stream_delay_s(sample_rate)
        take = Take(encode_stream_mp3(samples, sample_rate), [(w, s + delay, e + delay) for w, s, e in words],
                    len(samples) / sample_rate + delay)
        with _takes_lock:
            _takes[key] = take
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
        take = await loop.run_in_executor(None, self._take, request.text, request.rate, request.pitch, True)
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
    parser.add_argument("--voice", choices=("piper", "tones"), default="piper")
    args = parser.parse_args()
    with EdgeEmulator(voice=args.voice, port=args.port, pace=args.pace,
                      rates={"429": args.rate429} if args.rate429 else {}) as service:
        print(f"NARRO_EDGE_WSS_URL={service.url}\nNARRO_EDGE_VOICES_URL={service.voices_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
