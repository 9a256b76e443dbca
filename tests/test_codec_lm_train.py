"""`narro train` (datasets, codes cache, overfitting, resume) and `narro say`, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: E402,F401 (the test extra installs torch: this suite never skips)

from narro.encode import decode, encode_mp3  # noqa: E402
from narro.engines.codec_lm.checkpoint import load_checkpoint  # noqa: E402
from narro.engines.codec_lm.codec import load_codec  # noqa: E402
from narro.engines.codec_lm.train import extract_codes, load_dataset  # noqa: E402
from narro.errors import DatasetError  # noqa: E402
from narro.text import normalise  # noqa: E402
from tests.piper_speech import (  # noqa: E402
    SENTENCES,
    consented_clone,
    data_initialised_encodec,
    ljspeech_folder,
    piper_sentences,
    write_wav,
)

NARRO = Path(sys.executable).parent / "narro"


def narro(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    # One torch thread: on a shared 2-core machine, more threads spin against each other (10x slower, measured).
    return subprocess.run([str(NARRO), *args], capture_output=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def cli(*args: str):
    """The CLI in this process (no interpreter start): for what is refused before any training."""
    from click.testing import CliRunner

    from narro.cli import main

    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Ten piper utterances as an LJSpeech folder, and a tiny EnCodec with codebooks drawn from them."""
    folder = tmp_path_factory.mktemp("corpus")
    return ljspeech_folder(folder / "ljspeech"), data_initialised_encodec(folder / "encodec")


def test_every_bad_row_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    clips, rate = piper_sentences()
    for name in ("a", "b"):
        write_wav(tmp_path / "wavs" / f"{name}.wav", clips[0], rate)
    metadata = tmp_path / "metadata.csv"
    metadata.write_text("a|Hello there.\nno separator here\n|An empty id.\nb|\nc|Its audio is missing.\n"
                        "a|A second a.\n", encoding="utf-8")
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path)
    assert str(error.value).splitlines() == [
        f"{metadata}:2: text: expected 'id|text' (a '|' between id and text)",
        f"{metadata}:3: id: is empty",
        f"{metadata}:4: text: is empty for 'b'",
        f"{metadata}:5: audio: wavs/c.wav does not exist",
        f"{metadata}:6: id: 'a' is already used on line 1",
    ]
    refused = cli("train", str(tmp_path), "--out", str(tmp_path / "out"), "--codec", str(tmp_path))
    assert refused.exit_code == 2
    assert f"{metadata}:5: audio: wavs/c.wav does not exist" in refused.stderr
    assert "5 problems found; nothing was trained." in refused.stderr


def test_a_rendered_course_is_a_dataset_and_its_codes_are_extracted_once(tmp_path: Path, corpus) -> None:
    clips, rate = piper_sentences()
    course = tmp_path / "store" / "intro"
    for index in range(3):
        (course / f"n{index}.mp3").parent.mkdir(parents=True, exist_ok=True)
        (course / f"n{index}.mp3").write_bytes(encode_mp3(clips[index], rate, 96, {}))
        # A sidecar's text is the engine's, script markup tags included; the model learns the words only.
        spoken = SENTENCES[index] + (" [pause 1.5s]" if index == 0 else "")
        (course / f"n{index}.json").write_text(json.dumps({"text": spoken, "content_key": "k"}))
    (course / "index.json").write_text(json.dumps({"course": "intro", "clips": []}))
    (course / "n3.json").write_text(json.dumps({"content_key": "k"}))  # rendered before sidecars had the text
    with pytest.raises(DatasetError, match=r"n3.json: text: missing: rendered by an older narro"):
        load_dataset(course)
    (course / "n3.json").unlink()

    utterances = load_dataset(course)
    assert [(u.id, u.text) for u in utterances] == [(f"n{i}", normalise(SENTENCES[i])) for i in range(3)]
    codec = load_codec("encodec", corpus[1])
    grids, encoded = extract_codes(utterances, codec, tmp_path / "codes")
    assert encoded == 3 and all(g.shape[0] == codec.n_codebooks and g.dtype == np.int64 for g in grids)
    again, encoded = extract_codes(utterances, codec, tmp_path / "codes")
    assert encoded == 0 and all(np.array_equal(a, b) for a, b in zip(grids, again, strict=True))


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory: pytest.TempPathFactory, prefect_harness) -> tuple[Path, list[str]]:
    """`narro train` for 60 steps, then `--resume` to step 80: the output folder and both runs' stdout."""
    from prefect.settings import PREFECT_API_URL

    dataset, encodec = corpus
    out = tmp_path_factory.mktemp("training") / "out"
    api = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    common = ["--out", str(out), "--checkpoint-every", "30", "--batch-size", "10", "--learning-rate", "3e-3"]
    first = narro("train", str(dataset), "--config", "tiny", "--codec", str(encodec), "--steps", "60", *common, **api)
    assert first.returncode == 0, first.stderr.decode()[-3000:]
    resumed = narro("train", str(dataset), "--steps", "80", "--resume", *common, **api)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    return out, [first.stdout.decode(), resumed.stdout.decode()]


def test_a_tiny_model_overfits_ten_utterances_and_resumes_where_it_stopped(trained) -> None:
    out, (first, resumed) = trained
    assert "trained to step 60 on 10 utterances (10 encoded now" in first
    assert "trained to step 80, resumed from step 60 on 10 utterances (0 encoded now" in resumed
    log = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 81)), "the resumed run continues the step count"
    start, end = log[0], log[-10:]
    # The NAR loss jumps with the codebook stage drawn per step: compare the last ten steps' mean.
    assert np.mean([r["loss"] for r in end]) < start["loss"] / 2
    assert np.mean([r["ar"] for r in end]) < start["ar"] / 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000060", "step-000080"]  # keep=2
    assert (out / "checkpoints" / "step-000080" / "training.pt").is_file()
    assert (out / "loss.svg").read_text().startswith("<svg")
    loaded = load_checkpoint(out / "checkpoints" / "step-000080")
    assert loaded.training["step"] == 80 and loaded.training["preset"] == "tiny"


def test_resume_needs_a_checkpoint(tmp_path: Path, corpus) -> None:
    refused = cli("train", str(corpus[0]), "--out", str(tmp_path / "empty"), "--resume", "--steps", "5")
    assert refused.exit_code == 2 and "--resume: nothing to resume" in refused.stderr
    fresh = cli("train", str(corpus[0]), "--out", str(tmp_path / "empty"), "--steps", "5")
    assert fresh.exit_code == 2 and "--codec is needed" in fresh.stderr


def spoken_wav(data: bytes) -> np.ndarray:
    samples = decode(data, 16000)
    assert samples.size > 16000 * 0.5 and np.sqrt(np.mean(samples ** 2)) > 1e-3
    return samples


def test_narro_say_writes_a_playable_wav_with_piper_and_prints_ttfa_and_rtf(tmp_path: Path) -> None:
    target = tmp_path / "line.wav"
    said = narro("say", "Preview this line before the whole course renders.", "--out", str(target))
    assert said.returncode == 0, said.stderr.decode()
    report = said.stderr.decode()
    assert "TTFA " in report and " RTF " in report and "voice piper:joe-us-medium" in report
    from scipy.io import wavfile

    rate, samples = wavfile.read(target)
    assert rate == 22050 and samples.dtype == np.int16 and len(samples) > rate
    spoken_wav(target.read_bytes())

    piped = narro("say", "Piped to a player.")  # stdout is a pipe here: a WAV stream
    assert piped.returncode == 0 and piped.stdout[:4] == b"RIFF"
    spoken_wav(piped.stdout)
    raw = narro("say", "Piped to a player.", "--raw")
    assert raw.returncode == 0 and len(raw.stdout) == len(piped.stdout) - 44


def test_narro_say_refuses_an_unknown_voice(tmp_path: Path) -> None:
    refused = narro("say", "Hello.", "--voice", "nobody", "--out", str(tmp_path / "x.wav"))
    assert refused.returncode == 2 and b"no voice 'nobody'" in refused.stderr
    assert not (tmp_path / "x.wav").exists()


def test_narro_say_streams_the_quality_tier_from_a_trained_checkpoint(tmp_path: Path, trained) -> None:
    out, _ = trained
    clips, rate = piper_sentences()
    reference = write_wav(tmp_path / "ref.wav", np.concatenate(clips[1:3]), rate)
    manifest = consented_clone(tmp_path / "course", "ada", out / "checkpoints" / "step-000080", reference,
                               f"{SENTENCES[1]} {SENTENCES[2]}")
    target = tmp_path / "quality.wav"
    said = narro("say", "A short line.", "--manifest", str(manifest), "--tier", "quality", "--out", str(target),
                 "--store", str(tmp_path / "store"))
    assert said.returncode == 0, said.stderr.decode()[-2000:]
    report = said.stderr.decode()
    assert "voice codec-lm:" in report and "streamed in" in report and "at 24000 Hz" in report
    chunks = int(report.split("streamed in ")[1].split(" chunks")[0])
    assert chunks >= 2
    assert target.read_bytes()[:4] == b"RIFF" and len(decode(target.read_bytes(), 24000)) > 0
