"""The fast tier's online voice: Microsoft's read-aloud service through the `edge-tts` client.

The service is free, unofficial and fickle: it answers 429/503 under load, drops connections,
and has been seen to return audio cut short or silent. So each clip is split at sentence
boundaries into requests far below the service's limits, every request is retried with
exponential backoff and full jitter, and every answer is checked (duration against the word
boundaries and the text) before it is accepted. What still fails raises EngineUnavailable,
which is the cue for the tier's fallback voice (narro.engines.fallback).

Settings: the `edge` group of narro.settings (EdgeSettings, environment NARRO_EDGE_*), given to
`load` and `voices`; checked when the settings are built, so a typo is an error there, never
a silent switch to the fallback voice.

- `wss_url`: the WebSocket endpoint; edge-tts's own by default. Tests and the benchmark point
  it at an emulator. `voices_url`: the voice list endpoint.
- `retries` (default 5), `backoff_s` (first backoff, default 0.5), `backoff_max_s` (default 8):
  retries per request after the first try.
- `timeout_s` (default 20): socket connect/read timeout; a request also gets a deadline of that
  plus twice the speech it should return.
- `unreachable_hold_s` (default 60): once the service is found unreachable (DNS failure, or
  connection errors through every retry), later clips in this process skip straight to the
  fallback for this long instead of each waiting through the retries. A render probes the
  service once first (`EdgeKind.probe`) when its fallback voice spoke clips last time.

Every request holds a slot of the `narro-edge-tts` rate limit (`EdgeKind.rate_limit`) while it
runs, through narro.engines.rate_slot: a global concurrency limit that holds across workers
when tasks/ installs Prefect's, no gate otherwise.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict

from narro.engines import EngineKind, Synthesis, Variant, WordTiming, rate_slot
from narro.errors import EngineUnavailable
from narro.settings import EdgeSettings, Settings

if TYPE_CHECKING:
    from narro.voices import EngineVoice

SAMPLE_RATE = 24_000
OUTPUT_FORMAT = "audio-24khz-48kbitrate-mono-mp3"
# The client splits above 4096 bytes of escaped text and outputs have been cut at 10:00;
# parts this size are about a minute of speech.
MAX_PART_CHARS = 1200
# Silence between joined parts: the same as a sentence pause, so joins are inaudible.
PART_GAP_S = 0.35
FADE_S = 0.008
EDGE_VOICE = re.compile(r"^[a-z]{2,3}-[A-Z]{2}(-[A-Za-z]+)?-[A-Za-z]+Neural$")
TICKS_PER_SECOND = 10_000_000

# Sanity bounds on what a request returns (words per second of audio at rate +0%).
MAX_WORDS_PER_S = 6.0
BOUNDARY_SLACK_S = 0.15
MIN_WORD_COVERAGE = 0.6

# What `EdgeKind.probe` asks the service to say: one word, the cheapest request that proves the voice speaks.
PROBE_TEXT = "Hello."

_client_lock = threading.Lock()
_unreachable_until = 0.0
_unreachable_reason = ""


def _configure_client(settings: EdgeSettings) -> None:
    """Point edge-tts at the configured endpoints (it reads module globals at request time)."""
    import edge_tts.communicate
    import edge_tts.constants
    import edge_tts.voices

    with _client_lock:
        edge_tts.communicate.WSS_URL = settings.wss_url or edge_tts.constants.WSS_URL
        edge_tts.voices.VOICE_LIST = settings.voices_url or edge_tts.constants.VOICE_LIST


def check_voice(voice: EngineVoice) -> None:
    if not EDGE_VOICE.match(voice.model):
        raise EngineUnavailable(f"'{voice.model}' is not an edge voice name (like en-US-AriaNeural); see `narro voices`")


def _matching(pattern: str, example: str) -> AfterValidator:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"'{value}' is not like '{example}' (a sign, up to three digits, then the unit)")
        return value

    return AfterValidator(check)


class EdgeOptions(BaseModel):
    """edge's own voice options in voices.yaml, passed to the service as SSML prosody."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    rate: Annotated[str, _matching(r"[+-]\d{1,3}%", "+10%")] = "+0%"
    """Speaking rate relative to normal, `+10%` or `-20%`."""
    pitch: Annotated[str, _matching(r"[+-]\d{1,3}Hz", "-10Hz")] = "+0Hz"
    """Pitch shift, `+5Hz` or `-10Hz`."""
    volume: Annotated[str, _matching(r"[+-]\d{1,3}%", "-5%")] = "+0%"
    """Volume relative to normal (loudness is normalised afterwards anyway)."""


# Re-takes after a failed quality check: the rate nudged, in percentage points (slower, faster,
# slower still), like piper's pace variants; the rate is in the identity, so a take can be remade.
RATE_NUDGES = (-4, 4, -8)


class EdgeKind(EngineKind):
    name = "edge"
    Options = EdgeOptions
    rate_limit = "narro-edge-tts"
    pace_control = True  # the request's rate: a narration's pace, and a span's (one request per span)

    @classmethod
    def identity(cls, voice: EngineVoice) -> dict[str, object]:
        options = cls.options(voice)
        return {
            "engine": "edge",
            "engine_version": importlib.metadata.version("edge-tts"),
            "voice": voice.model,
            "rate": options.rate,
            "pitch": options.pitch,
            "volume": options.volume,
            "format": OUTPUT_FORMAT,
            "part_chars": MAX_PART_CHARS,
            "part_gap_s": PART_GAP_S,
        }

    @classmethod
    def voices(cls, settings: Settings) -> list[dict[str, str]]:
        """The service's voices (name, locale, gender); EngineUnavailable when it cannot be reached."""
        return list_voices(settings.edge)

    @classmethod
    def load(cls, voice: EngineVoice, settings: Settings) -> EdgeEngine:
        check_voice(voice)
        try:
            import edge_tts  # noqa: F401
        except ImportError:
            raise EngineUnavailable("the edge engine needs the 'edge-tts' package; pip install edge-tts") from None
        return EdgeEngine(voice, settings.edge)

    @classmethod
    def probe(cls, voice: EngineVoice, settings: Settings) -> None:
        """One short request, tried once: the service speaks, or EngineUnavailable says why.

        A connection that fails holds the service as unreachable (`unreachable_hold_s`), so this
        process's clips go to the fallback voice at once; an answer lifts the hold.
        """
        engine = cls.load(voice, settings)
        try:
            engine._request(PROBE_TEXT, engine.options.rate)
        except _Retryable as failure:
            if failure.connection:
                _hold(str(failure), settings.edge.unreachable_hold_s)
                raise EngineUnavailable(f"edge-tts service unreachable: {failure}") from None
            raise EngineUnavailable(f"edge-tts service does not answer: {failure}") from None
        reset_unreachable()

    @classmethod
    def paced(cls, voice: EngineVoice, speed: float) -> EngineVoice:
        """The rate that speaks at `speed` (0.9: "-10%"), in place of the voice's."""
        return voice.model_copy(update={"rate": _rate(speed)})

    @classmethod
    def variants(cls, voice: EngineVoice) -> list[Variant]:
        """The rate nudged by a few percentage points (edge has no pace knob of its own but its rate)."""
        rate = int(cls.options(voice).rate.rstrip("%"))
        nudged = [f"{rate + step:+d}%" for step in RATE_NUDGES if -100 < rate + step < 1000]  # a valid, moving rate
        return [Variant(f"rate {value}", voice.model_copy(update={"rate": value})) for value in nudged]


# --------------------------------------------------------------------------- text


def split_text(text: str, limit: int = MAX_PART_CHARS) -> list[str]:
    """Sentences packed greedily into parts of at most `limit` characters.

    A sentence longer than the limit is cut at the last comma or space before it.
    """
    sentences = [s for s in re.split(r"(?<=[.!?…])\s+", text.strip()) if s]
    parts: list[str] = []
    current = ""
    for sentence in sentences:
        while len(sentence) > limit:
            cut = max(sentence.rfind(", ", 0, limit), sentence.rfind(" ", 0, limit))
            cut = cut + 1 if cut > 0 else limit
            if current:
                parts.append(current)
                current = ""
            parts.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > limit:
            parts.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        parts.append(current)
    return parts


# Characters XML 1.0 forbids even escaped; the service rejects them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def speakable(text: str) -> str:
    """Text safe to place in SSML as character data: invalid XML characters become spaces.

    The edge-tts client escapes `&`, `<` and `>` itself before it builds the SSML, so markup in
    a script is spoken as text, never interpreted (tests assert this against the emulator).
    """
    return _XML_INVALID.sub(" ", text)


def _spoken_words(text: str) -> int:
    return sum(1 for token in text.split() if any(ch.isalnum() for ch in token))


def _tokens(text: str) -> list[str]:
    return [t for t in (re.sub(r"\W+", "", token).lower() for token in text.split()) if t]


def _uncovered_tail(text: str, words: list[WordTiming]) -> int:
    """How many of the text's last words come after the last word boundary that matches the text."""
    tokens = _tokens(text)
    position = -1
    for word in words:
        target = re.sub(r"\W+", "", word.word).lower()
        if not target:
            continue
        for index in range(position + 1, min(len(tokens), position + 6)):
            if tokens[index] == target or tokens[index].startswith(target) or target.startswith(tokens[index]):
                position = index
                break
    return len(tokens) - (position + 1)


def _rate_factor(rate: str) -> float:
    return max(0.25, 1.0 + int(rate.rstrip("%")) / 100.0)


def _rate(speed: float) -> str:
    """The service's rate for a speed relative to normal (1.2: "+20%"), within what it accepts."""
    return f"{min(200, max(-90, round((speed - 1) * 100))):+d}%"


# --------------------------------------------------------------------------- requests


class _Retryable(Exception):
    """A request failed in a way another try may not."""

    def __init__(self, message: str, retry_after: float | None = None, connection: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection


@dataclass
class _Part:
    samples: np.ndarray
    words: list[WordTiming]


class EdgeEngine:
    """One edge voice; thread-safe: every request runs its own event loop and connection."""

    def __init__(self, voice: EngineVoice, settings: EdgeSettings):
        self.voice = voice
        self.options = EdgeKind.options(voice)
        self.settings = settings
        self.identity = f"edge-tts-{importlib.metadata.version('edge-tts')}:{voice.model}"
        self.sample_rate = SAMPLE_RATE

    def synthesize(self, text: str, speed: float = 1.0) -> Synthesis:
        """`text` spoken; `speed` above 1 faster, over the voice's own rate (a [fast] span: its own requests)."""
        rate = self.options.rate if speed == 1.0 else _rate(_rate_factor(self.options.rate) * speed)
        parts = split_text(speakable(text))
        if not parts:
            raise EngineUnavailable("edge: nothing to speak")
        gap = np.zeros(int(PART_GAP_S * SAMPLE_RATE), dtype=np.float32)
        pieces: list[np.ndarray] = []
        words: list[WordTiming] = []
        position = 0
        retries = 0
        for part_text in parts:
            part, tries = self._request_with_retries(part_text, rate)
            retries += tries - 1
            if pieces:
                pieces.append(gap)
                position += len(gap)
            offset_s = position / SAMPLE_RATE
            words += [WordTiming(w.word, w.start_s + offset_s, w.end_s + offset_s) for w in part.words]
            pieces.append(part.samples)
            position += len(part.samples)
        return Synthesis(np.concatenate(pieces).astype(np.float32), SAMPLE_RATE, self.identity, words=words,
                         details={"parts": len(parts), "retries": retries})

    def _request_with_retries(self, text: str, rate: str | None = None) -> tuple[_Part, int]:
        rate = rate or self.options.rate
        if time.monotonic() < _unreachable_until:
            raise EngineUnavailable(f"edge-tts service unreachable: {_unreachable_reason}")
        retries, base, ceiling = self.settings.retries, self.settings.backoff_s, self.settings.backoff_max_s
        failures: list[str] = []
        all_connection = True
        for attempt in range(retries + 1):
            try:
                return self._request(text, rate), attempt + 1
            except _Retryable as failure:
                failures.append(str(failure))
                all_connection = all_connection and failure.connection
                if attempt == retries:
                    break
                # Full jitter: spread retries of many workers so they do not arrive together.
                delay = random.uniform(0, min(ceiling, base * 2**attempt))
                if failure.retry_after is not None:
                    delay = max(delay, min(ceiling, failure.retry_after))
                time.sleep(delay)
        summary = f"{failures[-1]} (after {len(failures)} tries)"
        if all_connection:
            _hold(summary, self.settings.unreachable_hold_s)
            raise EngineUnavailable(f"edge-tts service unreachable: {summary}")
        raise EngineUnavailable(f"edge-tts service keeps failing: {summary}")

    def _request(self, text: str, rate: str) -> _Part:
        """One request: stream, decode, check. Raises _Retryable or EngineUnavailable."""
        import aiohttp
        import edge_tts.exceptions

        timeout = self.settings.timeout_s
        expected_s = _spoken_words(text) / 2.5 / _rate_factor(rate)
        deadline = timeout + 2 * expected_s
        _configure_client(self.settings)
        try:
            with rate_slot(EdgeKind.rate_limit):
                audio, boundaries = _run(self._stream(text, int(timeout), rate), deadline)
        except aiohttp.ClientConnectorDNSError as exc:
            # No name resolution: the machine is offline. Retrying within a clip will not help.
            reason = f"cannot resolve the service's host {exc.host} ({_os_error(exc)})"
            _hold(reason, self.settings.unreachable_hold_s)
            raise EngineUnavailable(f"edge-tts service unreachable: {reason}") from None
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (429, 500, 502, 503, 504):
                retry_after = None
                if exc.headers and exc.headers.get("Retry-After", "").replace(".", "", 1).isdigit():
                    retry_after = float(exc.headers["Retry-After"])
                raise _Retryable(f"service answered {exc.status} {exc.message}".strip(), retry_after) from None
            raise EngineUnavailable(f"edge-tts service refused the request: {exc.status} {exc.message}") from None
        except aiohttp.ClientConnectorError as exc:
            raise _Retryable(f"cannot connect to {exc.host}:{exc.port} ({_os_error(exc)})", connection=True) from None
        except (aiohttp.ClientConnectionError, ConnectionError, OSError) as exc:
            raise _Retryable(f"connection lost: {type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise _Retryable(f"no complete answer within {deadline:.0f} s") from None
        except (edge_tts.exceptions.EdgeTTSException, aiohttp.ClientError, ValueError, KeyError) as exc:
            raise _Retryable(f"bad answer from the service: {type(exc).__name__}: {exc}") from None
        return self._checked(text, audio, boundaries, rate)

    async def _stream(self, text: str, timeout: int, rate: str) -> tuple[bytes, list[WordTiming]]:
        import edge_tts

        options = self.options
        communicate = edge_tts.Communicate(
            text, self.voice.model, rate=rate, pitch=options.pitch, volume=options.volume,
            boundary="WordBoundary", connect_timeout=timeout, receive_timeout=timeout,
        )
        audio = bytearray()
        words: list[WordTiming] = []
        async for chunk in communicate.stream():
            if chunk["type"] == "audio":
                audio += chunk["data"]
            elif chunk["type"] == "WordBoundary":
                start = chunk["offset"] / TICKS_PER_SECOND
                words.append(WordTiming(chunk["text"], start, start + chunk["duration"] / TICKS_PER_SECOND))
        return bytes(audio), words

    def _checked(self, text: str, audio: bytes, words: list[WordTiming], rate: str) -> _Part:
        """Decode one answer and reject audio that is cut short or silent."""
        from narro.encode import decode
        from narro.errors import AudioError

        if not audio:
            raise _Retryable("the answer held no audio")
        try:
            samples = decode(audio, SAMPLE_RATE)
        except AudioError as exc:
            raise _Retryable(f"the answer's audio does not decode: {exc}") from None
        duration = len(samples) / SAMPLE_RATE
        expected_words = _spoken_words(text)
        if words and words[-1].end_s > duration + BOUNDARY_SLACK_S:
            raise _Retryable(f"audio truncated: it ends at {duration:.2f} s, before the last word "
                             f"boundary at {words[-1].end_s:.2f} s")
        if expected_words >= 5 and len(words) < MIN_WORD_COVERAGE * expected_words:
            raise _Retryable(f"audio truncated: word boundaries for {len(words)} of {expected_words} words")
        missing = _uncovered_tail(text, words)
        if words and missing > max(2, expected_words // 10):
            raise _Retryable(f"audio truncated: the last {missing} words of the text have no word boundary")
        shortest = expected_words / (MAX_WORDS_PER_S * _rate_factor(rate))
        if duration < shortest:
            raise _Retryable(f"audio truncated: {duration:.2f} s is far below the {shortest:.1f} s the text needs")
        if samples.size == 0 or float(np.max(np.abs(samples))) < 1e-3:
            raise _Retryable("the answer's audio is silent")
        frame = SAMPLE_RATE // 50
        frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
        voiced = float(np.mean(np.sqrt(np.mean(frames**2, axis=1)) > 0.01)) if len(frames) else 0.0
        if expected_words >= 5 and voiced < 0.15:
            raise _Retryable(f"the answer is mostly silence ({voiced:.0%} voiced)")
        return _Part(*_tidy(samples, words))


def _tidy(samples: np.ndarray, words: list[WordTiming]) -> tuple[np.ndarray, list[WordTiming]]:
    """Cut the part to its speech (plus 50 ms), with short fades, so every join sounds the same."""
    frame = SAMPLE_RATE // 100
    frames = len(samples) // frame
    rms = np.sqrt(np.mean(samples[: frames * frame].reshape(frames, frame) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(20 * np.log10(rms) > 20 * np.log10(rms.max()) - 45)
    start = max(0, (int(loud[0]) - 5) * frame) if loud.size else 0
    end = min(len(samples), (int(loud[-1]) + 6) * frame) if loud.size else len(samples)
    if words:  # never cut into a word the service timed
        start = min(start, max(0, int(words[0].start_s * SAMPLE_RATE)))
        end = max(end, min(len(samples), int(np.ceil(words[-1].end_s * SAMPLE_RATE))))
    piece = samples[start:end].astype(np.float32).copy()
    fade = min(len(piece) // 2, int(FADE_S * SAMPLE_RATE))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        piece[:fade] *= ramp
        piece[-fade:] *= ramp[::-1]
    shift = start / SAMPLE_RATE
    return piece, [WordTiming(w.word, max(0.0, w.start_s - shift), max(0.0, w.end_s - shift)) for w in words]


def _run(coroutine, deadline: float):  # noqa: ANN001, ANN202 (a coroutine and its result)
    """Run a coroutine to completion in a fresh event loop, within `deadline` seconds."""

    async def bounded():  # noqa: ANN202
        return await asyncio.wait_for(coroutine, deadline)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    # Called from inside an event loop (a notebook, an async worker): use a thread of our own.
    result: list[object] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(bounded()))
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# --------------------------------------------------------------------------- voices


def list_voices(settings: EdgeSettings, timeout_s: float = 10.0) -> list[dict[str, str]]:
    """The service's voice list (ShortName, Locale, Gender), or EngineUnavailable."""
    import aiohttp
    import edge_tts

    _configure_client(settings)
    try:
        voices = _run(edge_tts.list_voices(), timeout_s)
    except aiohttp.ClientConnectorError as exc:
        raise EngineUnavailable(f"edge-tts voice list unreachable: cannot connect to {exc.host}:{exc.port} "
                                f"({_os_error(exc)})") from None
    except aiohttp.ClientResponseError as exc:  # its text carries the request's URL with the client's tokens
        raise EngineUnavailable(f"edge-tts voice list unavailable: the service answered {exc.status} "
                                f"{exc.message}".rstrip()) from None
    except TimeoutError:
        raise EngineUnavailable(f"edge-tts voice list unreachable: no answer within {timeout_s:g} s") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise EngineUnavailable(f"edge-tts voice list unreachable: {type(exc).__name__}: {exc}") from None
    return [{"name": v["ShortName"], "locale": v["Locale"], "gender": v.get("Gender", "")} for v in voices]


def _os_error(exc: Any) -> str:
    """The OS's words for a failed connection, without aiohttp's internals (its SSL context object)."""
    error = exc.os_error
    return (error.strerror if isinstance(error, OSError) and error.strerror else str(error)) or type(exc).__name__


def _hold(reason: str, seconds: float) -> None:
    """Treat the service as unreachable for `seconds` in this process: its clips go to the fallback at once."""
    global _unreachable_until, _unreachable_reason
    _unreachable_until, _unreachable_reason = time.monotonic() + seconds, reason


def reset_unreachable() -> None:
    """Forget that the service was found unreachable (tests; a long-lived worker after an outage)."""
    global _unreachable_until, _unreachable_reason
    _unreachable_until, _unreachable_reason = 0.0, ""
