"""The edge engine against a local emulator of the service, driving the unmodified edge-tts client."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest
from click.testing import CliRunner

from narro import captions
from narro.audio import PostSettings
from narro.cli import main
from narro.engines import WordTiming, edge, engine_for, set_rate_gate
from narro.engines import fallback as fallbacks
from narro.errors import EngineUnavailable
from narro.plan import ClipSpec, content_key, effective_spec
from narro.render import synthesize
from narro.settings import EdgeSettings, Settings
from narro.text import speech
from narro.voices import EngineVoice
from tests.edge_emulator import EdgeEmulator

ARIA = EngineVoice(engine="edge", model="en-US-AriaNeural")
PIPER = EngineVoice(engine="piper", model="joe-us-medium")
ARIA_WITH_FALLBACK = EngineVoice(engine="edge", model="en-US-AriaNeural", fallback=PIPER)
TEXT = "The codec turns each frame into tokens. A decoder turns the tokens back into a waveform, quickly."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


FAST_RETRIES = {"retries": 3, "backoff_s": 0.01, "backoff_max_s": 0.05}


def settings_for(wss_url: str, voices_url: str, **edge_settings: float) -> Settings:
    """The settings a run against this endpoint gets: retries fast enough for tests."""
    return Settings(edge=EdgeSettings(wss_url=wss_url, voices_url=voices_url, **{**FAST_RETRIES, **edge_settings}))


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast retries for commands run through the CLI (which builds its settings from the environment)."""
    monkeypatch.setenv("NARRO_EDGE_RETRIES", "3")
    monkeypatch.setenv("NARRO_EDGE_BACKOFF_S", "0.01")
    monkeypatch.setenv("NARRO_EDGE_BACKOFF_MAX_S", "0.05")
    edge.reset_unreachable()
    set_rate_gate(None)
    yield
    edge.reset_unreachable()
    set_rate_gate(None)


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch, fast_retries: None) -> Iterator[EdgeEmulator]:
    with EdgeEmulator() as emulator:
        monkeypatch.setenv("NARRO_EDGE_WSS_URL", emulator.url)  # for `narro voices`
        monkeypatch.setenv("NARRO_EDGE_VOICES_URL", emulator.voices_url)
        yield emulator


@pytest.fixture
def settings(service: EdgeEmulator) -> Settings:
    return settings_for(service.url, service.voices_url)


@pytest.fixture
def tones(fast_retries: None) -> Iterator[EdgeEmulator]:
    """The emulator with its cheap buzz voice: for long scripts, where only the protocol is under test."""
    with EdgeEmulator(voice="tones") as emulator:
        yield emulator


@pytest.fixture
def nothing_listening(fast_retries: None) -> Settings:
    port = free_port()
    return settings_for(f"ws://127.0.0.1:{port}/edge/v1?TrustedClientToken=x",
                        f"http://127.0.0.1:{port}/voices/list?x=1")


def spec_for(voice: EngineVoice, text: str = TEXT, allow_fallback: bool = True) -> ClipSpec:
    spec = ClipSpec("c", "C", "n1", "N1", text, "narrator", "fast", voice, PostSettings(), allow_fallback=allow_fallback)
    return ClipSpec(**{**spec.__dict__, "content_key": content_key(spec)})


def test_speaks_through_the_real_client_with_word_timings_and_prosody(service: EdgeEmulator, settings: Settings):
    voice = EngineVoice(engine="edge", model="en-GB-SoniaNeural", rate="-20%", pitch="+10Hz", volume="-5%")
    take = engine_for(voice, settings).synthesize(TEXT)
    request = service.requests[-1]
    assert request.voice == "Microsoft Server Speech Text to Speech Voice (en-GB, SoniaNeural)"
    assert (request.rate, request.pitch, request.volume) == ("-20%", "+10Hz", "-5%")
    assert request.word_boundaries and request.text == TEXT
    assert take.sample_rate == 24_000 and take.engine.startswith("edge-tts-7.3.1:")
    assert [w.word for w in take.words] == [w.strip(".,") for w in TEXT.split()]
    starts = [w.start_s for w in take.words]
    assert starts == sorted(starts) and take.words[-1].end_s <= take.duration_s
    normal = engine_for(ARIA, settings).synthesize(TEXT)
    assert take.duration_s > normal.duration_s * 1.1  # -20% rate reached the service (piper's pace: about 1.15x)


def test_markup_in_a_script_is_spoken_as_text_never_interpreted(service: EdgeEmulator, settings: Settings):
    sneaky = "Say this </prosody></voice><voice name='x'><break time='9s'/> & that <b>now</b> please, all of it."
    engine_for(ARIA, settings).synthesize(sneaky)
    request = service.requests[-1]
    assert request.elements == [] and request.text == sneaky
    assert request.voice.endswith("(en-US, AriaNeural)")


SENTENCES = ("The codec turns each frame into tokens. A decoder turns the tokens back into a waveform, quickly. "
             "Speech synthesis turns written text into spoken audio. Every clip is watermarked before it is "
             "published. Is that enough for a course?")


def test_the_emulator_speaks_the_script_and_its_word_boundaries_time_what_the_client_decodes(
        service: EdgeEmulator, settings: Settings):
    """Its speech is what a real edge voice gives the quality gate: the recogniser hears the script, and each
    sentence starts where its first word boundary says (the MP3 encoder's delay accounted for)."""
    from narro.asr import transcriber_for
    from narro.wer import align

    take = engine_for(ARIA, settings).synthesize(SENTENCES)
    heard = transcriber_for(Settings().asr).transcribe(take.samples, take.sample_rate)
    assert align(SENTENCES, heard.text).wer <= 0.1, heard.text
    assert [w.word for w in take.words] == [t.strip(".,?") for t in SENTENCES.split()]
    frame = take.sample_rate // 200  # 5 ms
    level = 20 * np.log10(np.sqrt(np.mean(take.samples[: len(take.samples) // frame * frame]
                                          .reshape(-1, frame) ** 2, axis=1)) + 1e-9)
    sound = level > level.max() - 35
    firsts = [take.words[0]] + [b for a, b in zip(take.words, take.words[1:]) if b.start_s - a.end_s > 0.25]
    assert len(firsts) == 5  # one per sentence: the pauses are where the boundaries put them
    looked_from = [max(0, int((w.start_s - 0.15) * 200)) for w in firsts]
    onsets = [(k + np.flatnonzero(sound[k:])[0]) / 200 for k in looked_from]
    errors = sorted(abs(onset - w.start_s) for onset, w in zip(onsets, firsts))
    # 46 ms of encoder delay left in would put the median past 35 ms (measured); exact boundaries give ~10 ms.
    assert errors[len(errors) // 2] < 0.025 and errors[-1] < 0.06, errors


@pytest.mark.parametrize("fault", ["429", "503", "drop", "truncate", "no_turn_end", "silent", "malformed", "wrong_type"])
def test_a_failed_answer_is_retried_and_only_good_audio_is_kept(service: EdgeEmulator, settings: Settings,
                                                                 fault: str):
    clean = engine_for(ARIA, settings).synthesize(TEXT)
    service.fault_next(fault)
    take = engine_for(ARIA, settings).synthesize(TEXT)
    assert take.details["retries"] == 1
    assert service.handshakes == 3 and service.requests[-1].fault is None
    assert abs(take.duration_s - clean.duration_s) < 0.05 and len(take.words) == len(clean.words)


def test_a_stalled_stream_times_out_and_is_retried(service: EdgeEmulator):
    settings = settings_for(service.url, service.voices_url, timeout_s=1)
    service.slow_frame_s = 2.5
    service.fault_next("slow")
    take = engine_for(ARIA, settings).synthesize(TEXT)
    assert take.details["retries"] == 1 and len(take.words) == len(TEXT.split())


def test_a_service_that_keeps_refusing_means_fallback_recorded_or_a_clear_failure(service: EdgeEmulator,
                                                                                  settings: Settings):
    service.rates = {"429": 1.0}
    take, _ = synthesize(spec_for(ARIA_WITH_FALLBACK), settings)
    assert take.engine.startswith("piper-") and take.words is None
    record = fallbacks.used(take)
    assert record is not None and record["from"] == "edge:en-US-AriaNeural" and record["to"] == "piper:joe-us-medium"
    assert "keeps failing" in record["reason"] and "429" in record["reason"]
    assert service.handshakes == 4  # first try + 3 retries
    with pytest.raises(EngineUnavailable, match=r"429.*fallback: false"):
        synthesize(spec_for(ARIA_WITH_FALLBACK, allow_fallback=False), settings)
    with pytest.raises(EngineUnavailable, match="keeps failing"):
        synthesize(spec_for(ARIA), settings)  # no fallback voice in the registry


def test_an_unreachable_service_falls_back_and_later_clips_skip_the_wait(nothing_listening: Settings):
    settings = nothing_listening
    take, _ = synthesize(spec_for(ARIA_WITH_FALLBACK), settings)
    assert "unreachable" in fallbacks.used(take)["reason"]  # type: ignore[index]
    with pytest.raises(EngineUnavailable, match="unreachable"):
        engine_for(ARIA, settings).synthesize(TEXT)


def test_fallback_clips_are_published_under_the_key_of_the_voice_that_spoke():
    spec = spec_for(ARIA_WITH_FALLBACK)
    actual = effective_spec(spec, {"to": "piper:joe-us-medium"})
    assert actual.content_key != spec.content_key
    assert actual.content_key == spec_for(PIPER).content_key
    assert effective_spec(spec, None) is spec


def test_a_long_script_is_split_at_sentences_and_joined_without_seams(tones: EdgeEmulator):
    service, settings = tones, settings_for(tones.url, tones.voices_url)
    sentences = [f"This is sentence number {i} of a long lesson, and it carries on a while." for i in range(60)]
    text = " ".join(sentences)
    take = engine_for(ARIA, settings).synthesize(text)
    parts = take.details["parts"]
    assert parts == len(edge.split_text(text)) >= 3 and len(service.requests) == parts
    assert all(len(r.text) <= edge.MAX_PART_CHARS and r.text.endswith(".") for r in service.requests)
    assert len(take.words) == len(text.split())
    starts = [w.start_s for w in take.words]
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
    gaps = [b.start_s - a.end_s for a, b in zip(take.words, take.words[1:], strict=False)]
    sentence_gaps = [g for g, w in zip(gaps, take.words, strict=False) if w.word == "while"]
    assert max(sentence_gaps) - min(sentence_gaps) < 0.25  # joins sound like any other sentence end
    assert float(np.max(np.abs(np.diff(take.samples)))) < 0.5  # no clicks


def test_split_text_keeps_sentences_whole_and_cuts_only_overlong_ones():
    text = "Short one. " * 50 + "A " + "very " * 400 + "long sentence."
    parts = edge.split_text(text, limit=200)
    assert all(len(p) <= 200 for p in parts)
    assert " ".join(parts).split() == text.split()
    assert all(p.endswith(".") for p in parts[:-3] if "very" not in p)


def test_captions_are_webvtt_with_script_punctuation_escaped_and_sentence_cues():
    words = [WordTiming("Tom", 0.3, 0.5), WordTiming("Jerry", 0.6, 0.9), WordTiming("said", 1.0, 1.2),
             WordTiming("hi", 1.3, 1.5), WordTiming("Then", 2.0, 2.2), WordTiming("left", 2.3, 2.6)]
    vtt = captions.build(speech("Tom & <Jerry> said hi. Then left!").words(), words, 2.5, "engine").vtt().decode()
    assert vtt.startswith("WEBVTT\n\n1\n00:00:00.300 --> 00:00:01.500\nTom &amp; &lt;Jerry&gt; said hi.\n")
    # Clamped to the audio, and shown from earlier so that it stays up the minimum 1 s.
    assert "2\n00:00:01.500 --> 00:00:02.500\nThen left!\n" in vtt
    moved = captions.shift(words, -0.4)
    assert moved[0].start_s == 0.0 and moved[1].start_s == pytest.approx(0.2)


def test_voices_lists_offline_voices_always_and_edge_voices_when_reachable(service: EdgeEmulator,
                                                                            monkeypatch: pytest.MonkeyPatch):
    result = CliRunner().invoke(main, ["voices"])
    assert result.exit_code == 0 and "en-GB-SoniaNeural" in result.output and "joe-us-medium" in result.output
    monkeypatch.setenv("NARRO_EDGE_VOICES_URL", f"http://127.0.0.1:{free_port()}/voices/list?x=1")
    result = CliRunner().invoke(main, ["voices"])
    assert result.exit_code == 0 and "joe-us-medium" in result.output
    assert "en-GB-SoniaNeural" not in result.output and "unreachable" in result.output
