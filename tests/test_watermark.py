"""The watermark: round trips through the real ffmpeg encoders, unmarked audio, the publish gate, `narro verify`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from narro import watermark
from narro.audio import PostSettings
from narro.cli import main
from narro.encode import _run, decode, encode_mp3
from narro.errors import WatermarkError
from narro.plan import ClipSpec, content_key
from narro.render import RunContext, post_process, publish, synthesize
from narro.store import LocalStore
from narro.voices import EngineVoice

RATE = 22050
TEXT = ("A neural audio codec is an encoder and a decoder, trained together to squeeze audio into very few bits. "
        "The encoder turns each short slice of the waveform into a vector, and a quantiser snaps it to a codebook.")


def spec_for(text: str) -> ClipSpec:
    spec = ClipSpec(course="wm-test", course_title="Watermark test", narration_id="w1", title="W1", text=text,
                    voice="narrator", tier="fast", engine_voice=EngineVoice(engine="piper", model="joe-us-medium"),
                    post=PostSettings())
    return ClipSpec(**{**spec.__dict__, "content_key": content_key(spec)})


@pytest.fixture(scope="module")
def clip():
    spec = spec_for(TEXT)
    return spec, post_process(spec, *synthesize(spec))


def ffmpeg(data: bytes, *args: str) -> bytes:
    return _run(["-i", "pipe:0", *args, "pipe:1"], data, "test transcode")


def test_published_clip_carries_its_payload_and_the_sidecar_says_so(clip, tmp_path: Path):
    spec, finished = clip
    expected = watermark.payload_for(spec.content_key)
    assert finished.watermark is not None and finished.watermark.payload == expected
    record = publish(LocalStore(tmp_path), spec, finished, RunContext("run1", "m.yaml", "0" * 64))
    assert record["watermark"]["payload"] == expected.hex() and record["watermark"]["version"] == watermark.VERSION
    assert json.loads((tmp_path / "wm-test" / "w1.json").read_text())["watermark"]["payload"] == expected.hex()


@pytest.mark.parametrize("attack", ["mp3-64k", "mp3-128k", "16k", "44k", "gain+6", "gain-6", "cut10", "noise20"])
def test_mark_survives_attacks_through_real_ffmpeg(clip, attack: str):
    spec, finished = clip
    expected = watermark.payload_for(spec.content_key)
    mp3 = finished.mp3
    if attack.startswith("mp3"):
        samples = decode(encode_mp3(decode(mp3, RATE), RATE, int(attack[4:-1]), {}), RATE)
    elif attack in ("16k", "44k"):
        rate = {"16k": "16000", "44k": "44100"}[attack]
        samples = decode(ffmpeg(mp3, "-ar", rate, "-f", "wav"), RATE)
    elif attack.startswith("gain"):
        samples = decode(ffmpeg(mp3, "-af", f"volume={attack[4:]}dB", "-f", "wav"), RATE)
    elif attack == "cut10":
        decoded = decode(mp3, RATE)
        samples = decoded[len(decoded) // 10: -len(decoded) // 10]
    else:
        decoded = decode(mp3, RATE)
        rng = np.random.default_rng(7)
        samples = decoded + rng.standard_normal(len(decoded)).astype(np.float32) * np.sqrt(np.mean(decoded ** 2) / 100)
    found = watermark.detect(samples, RATE)
    assert found.payload == expected, found


def test_unmarked_audio_never_decodes(clip):
    spec, _ = clip
    synthesis, _ = synthesize(spec)
    rng = np.random.default_rng(3)
    t = np.arange(RATE * 6) / RATE
    candidates = [synthesis.samples, np.zeros(RATE * 5, np.float32), rng.standard_normal(RATE * 5) * 0.1,
                  0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 659 * t * (1 + 0.01 * np.sin(t)))]
    for samples in candidates:
        found = watermark.detect(np.asarray(samples, np.float32), RATE)
        assert not found.present and found.confidence < watermark.Z_MIN


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


def test_post_process_refuses_a_clip_whose_mark_is_lost(monkeypatch: pytest.MonkeyPatch):
    import narro.render

    monkeypatch.setattr(narro.render, "embed", lambda samples, rate, payload: samples)  # a broken embedder
    spec = spec_for("This take loses its mark on the way.")
    with pytest.raises(WatermarkError, match="no mark"):
        post_process(spec, *synthesize(spec))


def test_verify_command(clip, tmp_path: Path):
    spec, finished = clip
    marked, wav, plain, junk = (tmp_path / n for n in ("marked.mp3", "marked.wav", "plain.wav", "junk.mp3"))
    marked.write_bytes(finished.mp3)
    wav.write_bytes(ffmpeg(finished.mp3, "-f", "wav"))
    synthesis, _ = synthesize(spec)
    plain.write_bytes(ffmpeg(encode_mp3(synthesis.samples, RATE, 96, {}), "-f", "wav"))
    junk.write_bytes(b"not audio at all")
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", str(marked), str(wav), "--json"])
    assert ok.exit_code == 0, ok.output
    reports = [json.loads(line) for line in ok.output.splitlines()]
    assert all(r["present"] and r["payload"]["payload"] == finished.watermark.payload.hex() for r in reports)
    assert all(r["confidence"] >= watermark.Z_MIN for r in reports)
    mixed = runner.invoke(main, ["verify", str(marked), str(plain)])
    assert mixed.exit_code == 1 and "no narro watermark" in mixed.output
    bad = runner.invoke(main, ["verify", str(marked), str(junk)])
    assert bad.exit_code == 2 and "junk.mp3" in bad.output


def test_short_clip_is_marked_and_verified():
    spec = spec_for("A short line.")
    finished = post_process(spec, *synthesize(spec))
    assert watermark.detect(finished.decoded, RATE).payload == watermark.payload_for(spec.content_key)
