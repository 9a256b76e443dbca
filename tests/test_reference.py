"""The quality tier's speaker reference: refusals, trimming with a matching transcript, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: E402,F401 (the test extra installs torch: this suite never skips)

from narro.engines.codec_lm import reference  # noqa: E402
from narro.engines.codec_lm.codec import load_codec, make_tiny_encodec  # noqa: E402
from narro.errors import ReferenceAudioError  # noqa: E402
from narro.text import normalise  # noqa: E402
from narro.wer import align  # noqa: E402
from tests.piper_speech import SENTENCES, piper_sentences, write_wav  # noqa: E402


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory):
    return load_codec("encodec", make_tiny_encodec(tmp_path_factory.mktemp("codec") / "encodec"))


@pytest.fixture(scope="module")
def asr():
    from narro.asr import transcriber_for
    from narro.settings import AsrSettings

    transcriber = transcriber_for(AsrSettings())
    return lambda samples, rate: transcriber.transcribe(samples, rate).text


def speech(*indices: int, gap_s: float = 0.4) -> tuple[np.ndarray, int, list[tuple[int, int]]]:
    """Piper sentences joined by pauses, and each sentence's sample range."""
    clips, rate = piper_sentences()
    gap = np.zeros(int(gap_s * rate), dtype=np.float32)
    pieces, spans, at = [], [], 0
    for index in indices:
        pieces += [clips[index], gap]
        spans.append((at, at + len(clips[index])))
        at += len(clips[index]) + len(gap)
    return np.concatenate(pieces), rate, spans


def test_a_clean_reference_is_encoded_with_its_transcript(tmp_path: Path, codec) -> None:
    samples, rate, _ = speech(1, 3)
    path = write_wav(tmp_path / "ref.wav", samples, rate)
    ref = reference.prepare_reference(path, SENTENCES[1] + " " + SENTENCES[3], codec)
    assert ref.text == normalise(SENTENCES[1] + " " + SENTENCES[3])
    assert ref.sha256 == reference.file_sha256(path)
    assert ref.codes.dtype == np.int64 and ref.codes.shape[0] == codec.n_codebooks
    assert 5.0 < ref.duration_s <= len(samples) / rate
    assert abs(ref.codes.shape[1] - ref.duration_s * codec.frame_rate) <= 2


def bad_references() -> dict[str, tuple[np.ndarray, int, str]]:
    clips, rate = piper_sentences()
    noise = np.random.default_rng(0).normal(0, 0.1, 5 * rate).astype(np.float32)
    bursts = noise * np.repeat(np.random.default_rng(1).random(50) > 0.5, rate // 10)
    return {
        "short": (clips[0][: int(2.2 * rate)], rate, "of speech, at least 3 s is needed"),
        "silent": (np.zeros(5 * rate, dtype=np.float32), rate, "reference is silent"),
        "clipped": (np.clip(np.concatenate(clips[:2]) * 4, -1, 1), rate, "reference is clipped"),
        "noise": (noise, rate, "reference is mostly non-speech"),
        "noise bursts": (bursts, rate, "reference is mostly non-speech"),
    }


@pytest.mark.parametrize("case", ["short", "silent", "clipped", "noise", "noise bursts"])
def test_a_bad_reference_is_refused_with_its_reason(tmp_path: Path, codec, case: str) -> None:
    samples, rate, message = bad_references()[case]
    path = write_wav(tmp_path / "ref.wav", samples, rate)
    with pytest.raises(ReferenceAudioError, match=message) as refused:
        reference.prepare_reference(path, "Some words.", codec)
    assert str(refused.value).startswith(f"{path}: ") and "\n" not in str(refused.value)


def test_a_file_that_is_not_audio_is_refused(tmp_path: Path, codec) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("not audio")
    with pytest.raises(ReferenceAudioError, match="not an audio file ffmpeg can read"):
        reference.prepare_reference(path, "Some words.", codec)


def test_a_long_reference_is_trimmed_at_pauses_with_the_matching_part_of_its_transcript(
        tmp_path: Path, codec, asr) -> None:
    order = list(range(len(SENTENCES))) * 2
    samples, rate, spans = speech(*order)
    assert len(samples) / rate > 40
    path = write_wav(tmp_path / "long.wav", samples, rate)
    heard: list[np.ndarray] = []

    def recorded(excerpt: np.ndarray, excerpt_rate: int) -> str:
        heard.append(excerpt)
        return asr(excerpt, excerpt_rate)

    ref = reference.prepare_reference(path, " ".join(SENTENCES[i] for i in order), codec, recorded)
    assert reference.MIN_WINDOW_S <= ref.duration_s <= reference.MAX_WINDOW_S
    # The excerpt is a slice of the file: find it, and the sentences it holds whole.
    (excerpt,) = heard
    mono = reference.read_channels(path)[0].mean(axis=0)
    loud = int(np.argmax(np.abs(excerpt)))
    start = next(at - loud for at in np.flatnonzero(mono == excerpt[loud])
                 if np.array_equal(mono[at - loud: at - loud + len(excerpt)], excerpt))
    end = start + len(excerpt)
    inside = [i for i, (a, b) in zip(order, spans, strict=True) if start <= a and b <= end]
    cut = [i for i, (a, b) in zip(order, spans, strict=True) if a < end and b > start and not (start <= a and b <= end)]
    assert inside and not cut, "the excerpt must start and end in pauses between sentences"
    assert ref.text == normalise(" ".join(SENTENCES[i] for i in inside))


def test_without_a_transcript_the_recogniser_supplies_it(tmp_path: Path, codec, asr) -> None:
    samples, rate, _ = speech(0, 2, 4)
    path = write_wav(tmp_path / "ref.wav", samples, rate)
    ref = reference.prepare_reference(path, None, codec, asr)
    assert align(" ".join(SENTENCES[i] for i in (0, 2, 4)), ref.text).wer < 0.2


def test_trimming_or_a_missing_transcript_needs_the_recogniser(tmp_path: Path, codec) -> None:
    samples, rate, _ = speech(*range(len(SENTENCES)))
    path = write_wav(tmp_path / "long.wav", samples, rate)
    with pytest.raises(ReferenceAudioError, match="needs speech recognition to cut its transcript"):
        reference.prepare_reference(path, " ".join(SENTENCES), codec)
    short = write_wav(tmp_path / "short.wav", *speech(1, 2)[:2])
    with pytest.raises(ReferenceAudioError, match="has no transcript"):
        reference.prepare_reference(short, None, codec)


def test_a_transcript_of_something_else_is_refused_when_trimming(tmp_path: Path, codec, asr) -> None:
    samples, rate, _ = speech(*range(len(SENTENCES)))
    path = write_wav(tmp_path / "long.wav", samples, rate)
    with pytest.raises(ReferenceAudioError, match="transcript does not match the reference"):
        reference.prepare_reference(path, "Completely different words about cooking pasta at home. " * 8, codec, asr)


def test_a_reference_is_encoded_once_per_worker(tmp_path: Path, codec, monkeypatch: pytest.MonkeyPatch) -> None:
    samples, rate, _ = speech(5, 6)
    path = write_wav(tmp_path / "ref.wav", samples, rate)
    calls = []
    original = codec.encode
    monkeypatch.setattr(codec, "encode", lambda audio: calls.append(len(audio)) or original(audio))
    first = reference.prepare_reference(path, "Loudness and short lines.", codec)
    again = reference.prepare_reference(path, "Loudness and short lines.", codec)
    assert again is first and len(calls) == 1
    write_wav(path, samples[: len(samples) * 3 // 4], rate)  # the file changed: a new digest, a new encode
    changed = reference.prepare_reference(path, "Loudness and short lines.", codec)
    assert changed.sha256 != first.sha256 and len(calls) == 2


def test_the_transcript_match_widens_over_misheard_words_at_the_edges() -> None:
    transcript = "One two three. The quick brown fox jumps. Over the lazy dog today."
    assert reference.match_transcript(transcript, "The quick brown fox jumps.") == "The quick brown fox jumps."
    assert reference.match_transcript(transcript, "Da quick brown fox jumps ova") == "The quick brown fox jumps. Over"
    assert reference.match_transcript(transcript, "seventy five bananas are yellow") is None
