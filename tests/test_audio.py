"""Post-processing post-conditions, on synthetic signals and on real piper speech through ffmpeg."""

from __future__ import annotations

import io

import numpy as np
import pytest

from narro import audio
from narro.audio import PostSettings
from narro.encode import decode, encode_mp3
from narro.engines import engine_for
from narro.errors import AudioError
from narro.plan import ClipSpec, content_key
from narro.render import post_process, synthesize
from narro.settings import Settings
from narro.voices import EngineVoice

RATE = 22050
PARAGRAPH = (
    "A neural codec compresses audio into discrete tokens, about seventy-five of them every second. "
    "A transformer predicts those tokens from the text and a short reference of the speaker. "
    "Decoding the tokens gives back a waveform you can listen to."
)


def spec_for(text: str, post: PostSettings | None = None) -> ClipSpec:
    spec = ClipSpec(course="tests", course_title="Tests", narration_id="clip", title="A clip", text=text,
                    voice="narrator", tier="fast", engine_voice=EngineVoice(engine="piper", model="joe-us-medium"),
                    post=post or PostSettings())
    return ClipSpec(**{**spec.__dict__, "content_key": content_key(spec)})


@pytest.fixture(scope="module")
def piper_take():
    synthesis, seconds = synthesize(spec_for(PARAGRAPH), Settings())
    return synthesis, seconds


def leading_silence_s(samples: np.ndarray, rate: int, threshold_db: float = -50.0) -> float:
    loud = np.flatnonzero(np.abs(samples) > audio.db_to_gain(threshold_db))
    return loud[0] / rate


def trailing_silence_s(samples: np.ndarray, rate: int, threshold_db: float = -50.0) -> float:
    loud = np.flatnonzero(np.abs(samples) > audio.db_to_gain(threshold_db))
    return (len(samples) - loud[-1]) / rate


def test_piper_audio_is_peaky_and_quiet_before_post_processing(piper_take):
    # The premise of the limiter: plain gain to -16 LUFS would clip this take.
    synthesis, _ = piper_take
    levels = audio.measure(synthesis.samples, synthesis.sample_rate)
    assert levels.integrated_lufs < -19
    assert levels.true_peak_dbtp - levels.integrated_lufs > 14.5


@pytest.mark.parametrize("target, ceiling", [(-16.0, -1.5), (-19.0, -1.0), (-14.0, -1.0)])
def test_published_mp3_meets_loudness_and_true_peak(piper_take, target, ceiling):
    synthesis, seconds = piper_take
    clip = post_process(spec_for(PARAGRAPH, PostSettings(target_lufs=target, true_peak_dbtp=ceiling)), synthesis, seconds)
    decoded = decode(clip.mp3, RATE)
    levels = audio.measure(decoded, RATE)
    assert abs(levels.integrated_lufs - target) <= 0.5
    assert levels.true_peak_dbtp <= ceiling
    assert np.max(np.abs(decoded)) < 1.0  # no clipped samples at all
    assert clip.loudness_lufs == pytest.approx(levels.integrated_lufs, abs=0.01)


def test_silence_is_trimmed_to_the_pad(piper_take):
    synthesis, seconds = piper_take
    padded = synthesis.__class__(
        np.concatenate([np.zeros(RATE * 2, np.float32), synthesis.samples, np.zeros(RATE * 3, np.float32)]),
        synthesis.sample_rate, synthesis.engine,
    )
    clip = post_process(spec_for(PARAGRAPH, PostSettings(pad_s=0.25)), padded, seconds)
    decoded = decode(clip.mp3, RATE)
    # The MP3 encoder adds about 50 ms of its own delay and padding.
    assert 0.2 <= leading_silence_s(decoded, RATE) <= 0.36
    assert 0.2 <= trailing_silence_s(decoded, RATE) <= 0.36
    assert clip.duration_s < synthesis.duration_s + 1.0


def test_same_spec_gives_identical_mp3():
    spec = spec_for("Same words, same voice, same bytes.")
    first = post_process(spec, *synthesize(spec, Settings()))
    second = post_process(spec, *synthesize(spec, Settings()))
    assert first.mp3 == second.mp3


def test_id3_tags_name_course_lesson_and_narration(piper_take):
    from mutagen.id3 import ID3

    synthesis, seconds = piper_take
    clip = post_process(spec_for(PARAGRAPH), synthesis, seconds)
    tags = ID3(io.BytesIO(clip.mp3))
    assert str(tags["TIT2"]) == "A clip"
    assert str(tags["TALB"]) == "Tests"
    assert str(tags["TXXX:narro_id"]) == "clip"
    assert str(tags["TXXX:narro_course"]) == "tests"


def test_limiter_holds_ceiling_on_full_scale_square_wave():
    t = np.arange(RATE) / RATE
    square = np.sign(np.sin(2 * np.pi * 997 * t)).astype(np.float32)
    limited = audio.limit_true_peak(square, RATE, -3.0)
    assert audio.gain_to_db(audio.true_peak(limited)) <= -3.0 + 0.05


def test_limiter_leaves_quiet_audio_untouched():
    quiet = (0.1 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.float32)
    assert audio.limit_true_peak(quiet, RATE, -1.0) is quiet


def test_true_peak_sees_intersample_overs():
    # A sine at a quarter of the rate, sampled 45° off its peaks: every sample is 0.707, the wave peaks at 1.
    n = np.arange(4096)
    samples = np.sin(np.pi / 2 * n + np.pi / 4).astype(np.float32)
    assert np.max(np.abs(samples)) == pytest.approx(0.7071, abs=1e-3)
    assert audio.true_peak(samples) > 0.95


def test_silent_take_is_an_error_not_a_file():
    with pytest.raises(AudioError, match="silent"):
        audio.finish(np.zeros(RATE * 2, np.float32), RATE, PostSettings())


def test_engine_loads_once_per_process():
    voice = EngineVoice(engine="piper", model="joe-us-medium")
    assert engine_for(voice, Settings()) is engine_for(voice, Settings())


def test_encode_rejects_what_ffmpeg_cannot_decode():
    with pytest.raises(AudioError, match="ffmpeg failed"):
        decode(b"this is not audio", RATE)


def test_encode_then_decode_keeps_duration():
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(RATE * 3) / RATE)).astype(np.float32)
    decoded = decode(encode_mp3(tone, RATE, 96, {}), RATE)
    assert len(decoded) / RATE == pytest.approx(3.0, abs=0.1)


def test_unreachable_loudness_target_fails_with_a_reason(piper_take):
    synthesis, seconds = piper_take
    impossible = PostSettings(target_lufs=-6.0, true_peak_dbtp=-6.0)
    with pytest.raises(AudioError, match="too peaky"):
        post_process(spec_for(PARAGRAPH, impossible), synthesis, seconds)
