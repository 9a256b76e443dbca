"""`narro export`: a whole course as one M4B or MP3 with chapters, or a zip with a playlist, read back with ffprobe."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from narro.audio import PostSettings, finish, measure
from narro.cli import main
from narro.encode import decode, encode_mp3
from narro.export import GAP_S, export_course
from narro.store import LocalStore
from tests.conftest import write_manifest
from tests.edge_emulator import SAMPLE_RATE, synthetic_speech

COURSE = "export-test"
CLIPS = [("b-second", "Second lesson", "The second lesson is a little longer than the first one was."),
         ("a-first", "First lesson", "The first lesson is short."),
         ("c-third", "Third & last", "And the third one ends the course.")]
# The manifest's order (a-first, b-second, c-third) is not the index's: the export follows the manifest.
MANIFEST = "course: export-test\ntitle: Export test\nnarrations:\n" + "".join(
    f"  - id: {i}\n    title: {t}\n    text: {x}\n" for i, t, x in sorted(CLIPS))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """Three published clips (speech-like audio at the loudness target, captions, sidecars) and the index."""
    target = LocalStore(tmp_path_factory.mktemp("export") / "store")
    index = []
    for narration_id, title, text in CLIPS:
        speech, words = synthetic_speech(text)
        mp3 = encode_mp3(finish(speech, SAMPLE_RATE, PostSettings()), SAMPLE_RATE, 64, {"title": title})
        duration = len(decode(mp3, SAMPLE_RATE)) / SAMPLE_RATE
        vtt = f"WEBVTT\n\n1\n00:00:00.100 --> 00:00:01.000\n{text.split()[0]}\n".encode()
        target.publish(COURSE, narration_id, mp3, {"content_key": narration_id, "duration_s": duration,
                                                   "mp3": {"bytes": len(mp3), "sha256": hashlib.sha256(mp3).hexdigest()}},
                       captions=vtt, srt=b"1\n00:00:00,100 --> 00:00:01,000\nx\n")
        index.append({"id": narration_id, "title": title, "mp3": f"{narration_id}.mp3", "captions": f"{narration_id}.vtt",
                      "duration_s": duration})
    target.write_index(COURSE, {"course": COURSE, "clips": index})
    return target


def probe(path: Path) -> dict:
    answer = subprocess.run(["ffprobe", "-v", "error", "-show_chapters", "-show_format", "-of", "json", str(path)],
                            capture_output=True, text=True, check=True)
    return json.loads(answer.stdout)


@pytest.mark.parametrize("fmt", ["m4b", "mp3"])
def test_chapters_duration_and_loudness_read_back(store: LocalStore, tmp_path: Path, fmt: str):
    manifest = write_manifest(tmp_path / "m", MANIFEST)
    result = CliRunner().invoke(main, ["export", str(manifest), "--format", fmt, "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    assert "exported 3 narrations" in result.output
    path = store.root / COURSE / f"{COURSE}.{fmt}"
    found = probe(path)
    assert [c["tags"]["title"] for c in found["chapters"]] == ["First lesson", "Second lesson", "Third & last"]
    clips = {i: json.loads((store.root / COURSE / f"{i}.json").read_text())["duration_s"] for i, _, _ in CLIPS}
    starts = [float(c["start_time"]) for c in found["chapters"]]
    expected = [0.0, clips["a-first"] + GAP_S, clips["a-first"] + clips["b-second"] + 2 * GAP_S]
    assert starts == pytest.approx(expected, abs=0.05)
    assert float(found["format"]["duration"]) == pytest.approx(sum(clips.values()) + 2 * GAP_S, abs=0.1)
    levels = measure(decode(path.read_bytes(), 44_100), 44_100)
    assert abs(levels.integrated_lufs - PostSettings().target_lufs) <= 1.0
    vtt = (store.root / COURSE / f"{COURSE}.vtt").read_text()
    # One cue per clip, each moved to its clip's start.
    assert "00:00:00.100 --> 00:00:01.000\nThe" in vtt
    second = expected[1] + 0.1
    assert f"00:00:{int(second):02d}.{round(second % 1 * 1000):03d} --> " in vtt and vtt.count(" --> ") == 3


def test_zip_holds_the_clips_captions_and_a_playlist_in_course_order(store: LocalStore):
    made = export_course(store, COURSE, "zip", order=[("a-first", "First lesson"), ("b-second", "Second lesson"),
                                                     ("c-third", "Third & last")])
    archive = zipfile.ZipFile(io.BytesIO(made.data))
    names = archive.namelist()
    assert {f"{COURSE}/{i}.{ext}" for i, _, _ in CLIPS for ext in ("mp3", "vtt", "srt")} <= set(names)
    playlist = archive.read(f"{COURSE}/{COURSE}.m3u").decode().splitlines()
    assert playlist[0] == "#EXTM3U" and [line for line in playlist if line.endswith(".mp3")] == [
        "a-first.mp3", "b-second.mp3", "c-third.mp3"]
    assert archive.read(f"{COURSE}/a-first.mp3") == (store.root / COURSE / "a-first.mp3").read_bytes()


def test_what_cannot_be_exported_is_said(store: LocalStore, tmp_path: Path):
    unknown = CliRunner().invoke(main, ["export", "nope", "--format", "m4b", "--store", str(store.root)])
    assert unknown.exit_code == 2 and "no course 'nope' in the store" in unknown.output
    manifest = write_manifest(tmp_path / "m", MANIFEST + "  - id: d-fourth\n    text: Not rendered yet.\n")
    missing = CliRunner().invoke(main, ["export", str(manifest), "--format", "mp3", "--store", str(store.root)])
    assert missing.exit_code == 2 and "not published yet: d-fourth" in missing.output
    out = tmp_path / "course.mp3"
    local = CliRunner().invoke(main, ["export", COURSE, "--format", "mp3", "--store", str(store.root), "--out", str(out)])
    assert local.exit_code == 0 and len(probe(out)["chapters"]) == 3 and out.with_suffix(".vtt").is_file()
