"""The watermark: round trips through real ffmpeg (codecs, speed, tempo, pitch), unmarked audio, the
publish gate, version-1 clips, another organisation's marks, `narro verify`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from narro import watermark
from narro.audio import PostSettings
from narro.catalogue import Catalogue
from narro.cli import main
from narro.clip import render_clip
from narro.encode import _run, decode, encode_mp3
from narro.errors import WatermarkError
from narro.plan import ClipSpec, content_key
from narro.render import RunContext, post_process, publish, synthesize, verify_watermark
from narro.settings import QaSettings, Settings, WatermarkSettings
from narro.store import LocalStore
from narro.verify import verify_file
from narro.voices import EngineVoice
from narro.watermark import v1, v2

RATE = 22050
TEXT = ("A neural audio codec is an encoder and a decoder, trained together to squeeze audio into very few bits. "
        "The encoder turns each short slice of the waveform into a vector, and a quantiser snaps it to a codebook.")


def spec_for(text: str, post: PostSettings | None = None) -> ClipSpec:
    spec = ClipSpec(course="wm-test", course_title="Watermark test", narration_id="w1", title="W1", text=text,
                    voice="narrator", tier="fast", engine_voice=EngineVoice(engine="piper", model="joe-us-medium"),
                    post=post or PostSettings())
    return ClipSpec(**{**spec.__dict__, "content_key": content_key(spec)})


@pytest.fixture(scope="module")
def clip():
    """A take marked as the pipeline marks it (version 2), encoded and checked after encoding."""
    spec = spec_for(TEXT)
    return spec, verify_watermark(spec, post_process(spec, *synthesize(spec, Settings())))


@pytest.fixture(scope="module")
def unmarked(clip) -> np.ndarray:
    """The same take as `clip`, never marked."""
    synthesis, _ = synthesize(clip[0], Settings())
    return synthesis.samples


def ffmpeg(data: bytes, *args: str) -> bytes:
    return _run(["-i", "pipe:0", *args, "pipe:1"], data, "test transcode")


def test_published_clip_carries_its_payload_and_the_sidecar_says_so(clip, tmp_path: Path):
    spec, finished = clip
    expected = watermark.payload_for(spec.content_key)
    assert finished.watermark is not None and finished.watermark.payload == expected
    record = publish(LocalStore(tmp_path), spec, finished, RunContext("run1", "m.yaml", "0" * 64))
    assert record["watermark"]["payload"] == expected.hex() and record["watermark"]["version"] == 2
    assert json.loads((tmp_path / "wm-test" / "w1.json").read_text())["watermark"]["payload"] == expected.hex()


def _speed(factor: float) -> str:
    """Speed and pitch together (a tape played faster), through ffmpeg's asetrate."""
    return f"asetrate={RATE * factor:.0f},aresample={RATE}"


ATTACKS = {
    "mp3-32k": ["-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3"],
    "opus-24k": ["-ar", "48000", "-c:a", "libopus", "-b:a", "24k", "-f", "ogg"],
    "telephone": ["-af", "highpass=f=300,lowpass=f=3400", "-ar", "8000", "-f", "wav"],
    "tempo+10%": ["-af", "atempo=1.1", "-f", "wav"],
    "tempo-10%": ["-af", "atempo=0.9", "-f", "wav"],
    "speed+10%": ["-af", _speed(1.1), "-f", "wav"],
    "speed-10%": ["-af", _speed(0.9), "-f", "wav"],
    "pitch+10%": ["-af", f"{_speed(1.1)},atempo={1 / 1.1:.6f}", "-f", "wav"],
    "pitch-8%,tempo+10%,mp3-32k": ["-af", f"{_speed(0.92)},atempo=1.1", "-c:a", "libmp3lame", "-b:a", "32k",
                                   "-f", "mp3"],
}


RETIMED = {"tempo+10%": (1.1, 1.0), "tempo-10%": (0.9, 1.0), "speed+10%": (1.1, 1.1), "speed-10%": (0.9, 0.9),
           "pitch+10%": (1.0, 1.1)}
"""Playback speed and pitch factor each attack applies."""


@pytest.mark.parametrize("attack", list(ATTACKS) + ["cut-middle", "noise-20dB"])
def test_mark_survives_attacks_through_real_ffmpeg(clip, attack: str):
    spec, finished = clip
    decoded = decode(finished.mp3, RATE)
    if attack == "cut-middle":
        third = len(decoded) // 3
        samples = np.concatenate([decoded[:third], decoded[-third:]])
    elif attack == "noise-20dB":
        rng = np.random.default_rng(7)
        samples = decoded + rng.standard_normal(len(decoded)).astype(np.float32) * np.sqrt(np.mean(decoded ** 2) / 100)
    else:
        samples = decode(ffmpeg(finished.mp3, *ATTACKS[attack]), RATE)
    found = watermark.detect(samples, RATE)
    assert found.payload == watermark.payload_for(spec.content_key) and found.version == 2, found
    if attack in RETIMED:  # the detector also says how the clip was re-timed
        speed, pitch = RETIMED[attack]
        assert abs(1 / found.tempo - speed) < 0.01 and abs(found.pitch - pitch) < 0.02, found


def test_unmarked_audio_never_decodes(unmarked):
    rng = np.random.default_rng(3)
    t = np.arange(RATE * 6) / RATE
    plain = encode_mp3(unmarked, RATE, 96, {})
    candidates = [unmarked, decode(ffmpeg(plain, *ATTACKS["tempo+10%"]), RATE),
                  decode(ffmpeg(plain, *ATTACKS["pitch+10%"]), RATE), np.zeros(RATE * 5, np.float32),
                  rng.standard_normal(RATE * 5) * 0.1,
                  0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 659 * t * (1 + 0.01 * np.sin(t)))]
    for samples in candidates:
        found = watermark.detect(np.asarray(samples, np.float32), RATE)
        assert not found.present and found.version is None and found.confidence < v2.Z_MIN


def test_another_payload_does_not_verify(clip):
    spec, finished = clip
    with pytest.raises(WatermarkError, match="expected payload"):
        watermark.verify_encoded(finished.mp3, finished.decoded, RATE, watermark.payload_for("another key"))


def test_unverified_clips_cannot_be_published(clip, tmp_path: Path):
    spec, finished = clip
    context = RunContext("run1", "m.yaml", "0" * 64)
    store = LocalStore(tmp_path)
    unmarked = dataclasses.replace(finished, watermark=None)
    with pytest.raises(WatermarkError, match="not verified"):
        publish(store, spec, unmarked, context)
    forged = dataclasses.replace(finished, watermark=dataclasses.replace(finished.watermark, seal="0" * 64))
    with pytest.raises(WatermarkError, match="does not belong"):
        publish(store, spec, forged, context)
    swapped = dataclasses.replace(finished, mp3=encode_mp3(finished.decoded, RATE, 96, {}))
    with pytest.raises(WatermarkError, match="does not belong"):
        publish(store, spec, swapped, context)
    assert not (tmp_path / "wm-test").exists()


def test_a_clip_whose_mark_is_lost_is_refused(monkeypatch: pytest.MonkeyPatch):
    import narro.render

    monkeypatch.setattr(narro.render, "embed", lambda samples, rate, payload, version=None: samples)  # a broken embedder
    spec = spec_for("This take loses its mark on the way.")
    with pytest.raises(WatermarkError, match="no mark"):
        verify_watermark(spec, post_process(spec, *synthesize(spec, Settings())))


def test_verify_command(clip, unmarked, tmp_path: Path):
    spec, finished = clip
    marked, wav, plain, junk = (tmp_path / n for n in ("marked.mp3", "marked.wav", "plain.wav", "junk.mp3"))
    marked.write_bytes(finished.mp3)
    wav.write_bytes(ffmpeg(finished.mp3, "-f", "wav"))
    plain.write_bytes(ffmpeg(encode_mp3(unmarked, RATE, 96, {}), "-f", "wav"))
    junk.write_bytes(b"not audio at all")
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", str(marked), str(wav), "--json"])
    assert ok.exit_code == 0, ok.output
    reports = [json.loads(line) for line in ok.output.splitlines()]
    assert all(r["status"] == "watermarked" and r["payload"] == finished.watermark.payload.hex() for r in reports)
    assert all(r["version"] == 2 and r["confidence"] >= v2.Z_MIN for r in reports)
    mixed = runner.invoke(main, ["verify", str(marked), str(plain)])
    assert mixed.exit_code == 1 and "no narro watermark" in mixed.output
    bad = runner.invoke(main, ["verify", str(marked), str(junk)])
    assert bad.exit_code == 2 and "junk.mp3" in bad.output


@pytest.mark.parametrize("version", [1, 2])
def test_short_clip_is_marked_and_verified(version: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(watermark, "VERSION", version)
    spec = spec_for("A short line.")
    finished = verify_watermark(spec, post_process(spec, *synthesize(spec, Settings())))
    expected = watermark.payload_for(spec.content_key)
    assert finished.watermark.payload == expected and finished.watermark.version == version
    found = watermark.detect(finished.decoded, RATE, search=False)
    assert (found.payload, found.version) == (expected, version)


def test_one_word_clip_is_verified_against_its_own_payload(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Too few tiles to read 48 bits blind: the pipeline and a catalogue still know which payload to test."""
    monkeypatch.setattr(watermark, "VERSION", 2)
    spec = spec_for("Thank you.")
    finished = verify_watermark(spec, post_process(spec, *synthesize(spec, Settings())))
    expected = watermark.payload_for(spec.content_key)
    assert finished.watermark.payload == expected and finished.watermark.confidence >= v2.Z_MIN_KNOWN
    others = [watermark.payload_for(f"another clip {i}") for i in range(200)]
    found = watermark.detect_among(finished.decoded, RATE, [*others, expected])
    assert (found.payload, found.version) == (expected, 2)
    assert not watermark.detect_among(finished.decoded, RATE, others).present
    with pytest.raises(WatermarkError, match="expected payload"):
        watermark.verify_encoded(finished.mp3, finished.decoded, RATE, others[0])
    # `narro verify` asks the catalogue's clips when it cannot read the payload blind.
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    catalogue.register("wm-test", "w1", title="W1", voice="narrator", tier="fast", content_key=spec.content_key)
    path = tmp_path / "w1.mp3"
    path.write_bytes(finished.mp3)
    report = verify_file(path, catalogue)
    assert report.status == "watermarked" and "wm-test/w1" in report.meaning


def test_another_organisations_mark_is_watermarked_not_ours(clip, unmarked, tmp_path: Path):
    spec, _ = clip
    theirs = watermark.payload_for(spec.content_key, org=0x12)
    path = tmp_path / "theirs.mp3"
    path.write_bytes(encode_mp3(watermark.embed(unmarked, RATE, theirs), RATE, 96, {}))
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(path)])
    assert result.exit_code == 1 and "watermarked, not ours" in result.output and "0x12" in result.output
    report = json.loads(runner.invoke(main, ["verify", str(path), "--json"]).output)
    assert (report["status"], report["org"], report["payload"]) == ("watermarked, not ours", 0x12, theirs.hex())
    # The organisation that counts as ours is a setting.
    ours = runner.invoke(main, ["verify", str(path), "--json"], env={"NARRO_WATERMARK_ORG_ID": "0x12"})
    assert ours.exit_code == 0 and json.loads(ours.output)["status"] == "watermarked"


def test_version_1_clips_still_verify_and_say_so(clip, unmarked, tmp_path: Path):
    spec, _ = clip
    payload = watermark.payload_for(spec.content_key)
    path = tmp_path / "v1.mp3"
    path.write_bytes(encode_mp3(v1.embed(unmarked.astype(np.float64), payload), RATE, 96, {}))
    found = watermark.detect(decode(path.read_bytes(), RATE), RATE)
    assert (found.payload, found.version) == (payload, 1)
    result = CliRunner().invoke(main, ["verify", str(path)])
    assert result.exit_code == 0 and "watermarked (version 1)" in result.output


def test_the_pipeline_marks_a_short_clip_with_the_configured_organisation(tmp_path: Path):
    """The issue's short clip through the whole clip pipeline (MP3 at the pipeline's bitrate, checked
    after encoding, published): the mark is version 2 and carries settings.watermark.org_id."""
    assert watermark.VERSION == 2
    settings = Settings(watermark=WatermarkSettings(org_id=0x12), qa=QaSettings(asr=False))
    spec = spec_for("The first clip is short.", PostSettings.of(settings))
    assert spec.content_key != spec_for("The first clip is short.").content_key  # another organisation: another mark
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'clips.db'}")
    context = RunContext("run1", "m.yaml", "0" * 64)
    catalogue.start_run(context.run_id, spec.course)
    catalogue.register(spec.course, spec.narration_id, title=spec.title, voice=spec.voice, tier=spec.tier,
                       content_key=spec.content_key)
    sidecar = render_clip(spec, context, LocalStore(tmp_path / "store"), catalogue, settings)
    theirs = watermark.payload_for(spec.content_key, org=0x12)
    assert (sidecar["watermark"]["version"], sidecar["watermark"]["payload"]) == (2, theirs.hex())
    published = tmp_path / "store" / "wm-test" / "w1.mp3"
    found = watermark.detect(decode(published.read_bytes(), RATE), RATE)
    assert (found.payload, found.version) == (theirs, 2)
    runner, where = CliRunner(), ["--catalogue", f"sqlite:///{tmp_path / 'clips.db'}"]
    ours = runner.invoke(main, ["verify", str(published), *where, "--json"], env={"NARRO_WATERMARK_ORG_ID": "0x12"})
    assert ours.exit_code == 0 and json.loads(ours.output)["status"] == "watermarked", ours.output
    assert "wm-test/w1" in json.loads(ours.output)["meaning"]
    other = runner.invoke(main, ["verify", str(published), *where])
    assert other.exit_code == 1 and "watermarked, not ours" in other.output


def test_audio_that_cannot_carry_version_2_carries_version_1_and_says_so():
    """Version 2 lives in the 400-3600 Hz bands; a pure 330 Hz tone (an outside engine's test double) has
    nothing there, so the pipeline marks it with version 1 instead of failing the clip."""
    from narro.engines import Synthesis
    from narro.render import marked_and_verified

    spec = spec_for("One two three four five six.")
    time = np.arange(int(4.0 * RATE)) / RATE
    tone = Synthesis((0.4 * np.sin(2 * np.pi * 330 * time)).astype(np.float32), RATE, "tone")
    with pytest.raises(WatermarkError):
        verify_watermark(spec, post_process(spec, tone))  # version 2 alone fails on it
    finished = marked_and_verified(spec, tone, 0.0)
    assert finished.watermark is not None and finished.watermark.version == 1
    found = watermark.detect(decode(finished.mp3, RATE), RATE)
    assert (found.payload, found.version) == (watermark.payload_for(spec.content_key), 1)
