"""MP3 encoding and decoding through ffmpeg, in memory (pipes, no temporary files)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from narro.errors import AudioError, EngineUnavailable


def ffmpeg_binary() -> str:
    binary = shutil.which("ffmpeg")
    if binary is None:
        raise EngineUnavailable("ffmpeg is not installed; on Debian/Ubuntu: apt-get install ffmpeg")
    return binary


def _run(args: list[str], stdin: bytes, what: str) -> bytes:
    try:
        done = subprocess.run([ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", *args],
                              input=stdin, capture_output=True, check=False, timeout=600)
    except subprocess.TimeoutExpired:
        raise AudioError(f"ffmpeg timed out while {what}") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(f"ffmpeg failed while {what}: {detail[-1] if detail else 'exit ' + str(done.returncode)}")
    return done.stdout


def encode_mp3(samples: np.ndarray, sample_rate: int, bitrate_kbps: int, tags: dict[str, str]) -> bytes:
    """Mono float PCM to MP3 bytes with ID3v2.3 tags; deterministic for the same input."""
    metadata: list[str] = []
    for key, value in tags.items():
        metadata += ["-metadata", f"{key}={value}"]
    pcm = np.clip(samples, -1.0, 1.0).astype("<f4").tobytes()
    return _run(
        ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
         "-codec:a", "libmp3lame", "-b:a", f"{bitrate_kbps}k", "-id3v2_version", "3",
         *metadata, "-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", "mp3", "pipe:1"],
        pcm, "encoding MP3",
    )


def decode(data: bytes, sample_rate: int) -> np.ndarray:
    """Any audio ffmpeg reads to mono float32 PCM at `sample_rate`."""
    raw = _run(["-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(sample_rate), "pipe:1"], data, "decoding audio")
    return np.frombuffer(raw, dtype="<f4").copy()
