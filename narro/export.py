"""A whole course as one file, for offline listening and learning platforms (`narro export`).

- `m4b`: an AAC audiobook with one chapter per narration, named by its title, in manifest order;
- `mp3`: one MP3 with the same chapters as ID3 CHAP frames;
- `zip`: the clips as published, their captions, and an M3U playlist in course order.

For `m4b` and `mp3` the clips (already normalised to the same loudness target) are decoded,
joined with `gap_s` of silence and encoded once, with no gain applied: joins keep their level,
and the whole is measured afterwards, an AudioError if it is off the target by more than
LOUDNESS_TOLERANCE_LU. Their captions become one WebVTT file, each cue moved to its clip's start.
Only published clips are exported; the course index (`{course}/index.json`) lists them.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from narro.audio import measure
from narro.encode import decode, ffmpeg_binary
from narro.errors import AudioError, StoreError
from narro.layout import INDEX_NAME
from narro.store import Store

FORMATS = ("m4b", "mp3", "zip")
SAMPLE_RATE = 44_100
GAP_S = 1.0
"""Silence between two narrations."""
LOUDNESS_TOLERANCE_LU = 1.0
BITRATE_KBPS = {"m4b": 96, "mp3": 128}
_TIMING = re.compile(r"^(\d+):(\d{2}):(\d{2})\.(\d{3}) --> (\d+):(\d{2}):(\d{2})\.(\d{3})(.*)$")


@dataclass(frozen=True)
class Chapter:
    id: str
    title: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Export:
    """What `export_course` made: the file, its captions (m4b and mp3), and where each narration starts."""

    data: bytes
    captions: bytes | None
    chapters: tuple[Chapter, ...]
    duration_s: float
    loudness_lufs: float | None


def published_clips(store: Store, course: str, order: list[tuple[str, str]] | None = None) -> list[dict]:
    """The course index's clips, in `order` (narration id, title: the manifest's) when given, else the index's.

    StoreError when the course has no index, or a narration of `order` is not published.
    """
    raw = store.read_object(course, INDEX_NAME)
    if raw is None:
        raise StoreError(f"no course '{course}' in the store {store.url} (no {course}/{INDEX_NAME}): render it first")
    clips = {clip["id"]: clip for clip in json.loads(raw)["clips"]}
    if order is None:
        return list(clips.values())
    missing = [narration_id for narration_id, _ in order if narration_id not in clips]
    if missing:
        raise StoreError(f"{course}: not published yet: {', '.join(missing)}; render the course first "
                         "(`narro status` says why a clip failed)")
    return [{**clips[narration_id], "title": title or clips[narration_id].get("title")} for narration_id, title in order]


def export_course(store: Store, course: str, fmt: str, *, title: str = "", order: list[tuple[str, str]] | None = None,
                  gap_s: float = GAP_S, target_lufs: float = -16.0) -> Export:
    """The course's published clips as one `fmt` file (see the module's docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; use one of: {', '.join(FORMATS)}")
    clips = published_clips(store, course, order)
    if not clips:
        raise StoreError(f"{course}: no published clip to export")
    mp3s = []
    for clip in clips:
        data = store.read_mp3(course, clip["id"])
        if data is None:
            raise StoreError(f"{course}/{clip['id']}.mp3 is listed in the index but missing from the store")
        mp3s.append(data)
    if fmt == "zip":
        return _zip(store, course, clips, mp3s)
    pieces, chapters, position = [], [], 0
    gap = np.zeros(int(round(gap_s * SAMPLE_RATE)), dtype=np.float32)
    for index, (clip, data) in enumerate(zip(clips, mp3s, strict=True)):
        if index:
            pieces.append(gap)
            position += len(gap)
        samples = decode(data, SAMPLE_RATE)
        chapters.append(Chapter(clip["id"], clip.get("title") or clip["id"], position / SAMPLE_RATE,
                                (position + len(samples)) / SAMPLE_RATE))
        pieces.append(samples)
        position += len(samples)
    joined = np.concatenate(pieces)
    encoded = _encode(joined, fmt, chapters, title or course)
    levels = measure(decode(encoded, SAMPLE_RATE), SAMPLE_RATE)
    if abs(levels.integrated_lufs - target_lufs) > LOUDNESS_TOLERANCE_LU:
        raise AudioError(f"the {fmt} export measures {levels.integrated_lufs:.1f} LUFS, off the {target_lufs:g} LUFS "
                         f"target by more than {LOUDNESS_TOLERANCE_LU:g} LU: re-render the clips that are off")
    captions = _joined_captions(store, course, clips, chapters)
    return Export(encoded, captions, tuple(chapters), position / SAMPLE_RATE, round(levels.integrated_lufs, 2))


def _encode(samples: np.ndarray, fmt: str, chapters: list[Chapter], title: str) -> bytes:
    """Encode once, with the chapters (ffmetadata) and album/title tags."""
    metadata = [";FFMETADATA1", f"title={_meta(title)}", f"album={_meta(title)}"]
    for chapter in chapters:
        metadata += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={round(chapter.start_s * 1000)}",
                     f"END={round(chapter.end_s * 1000)}", f"title={_meta(chapter.title)}"]
    codec = ["-c:a", "aac", "-b:a", f"{BITRATE_KBPS['m4b']}k", "-movflags", "+faststart", "-f", "mp4"] if fmt == "m4b" \
        else ["-c:a", "libmp3lame", "-b:a", f"{BITRATE_KBPS['mp3']}k", "-id3v2_version", "3", "-f", "mp3"]
    with tempfile.TemporaryDirectory(prefix="narro-export-") as folder:
        pcm, meta, out = Path(folder) / "audio.f32", Path(folder) / "chapters.txt", Path(folder) / f"out.{fmt}"
        pcm.write_bytes(np.clip(samples, -1.0, 1.0).astype("<f4").tobytes())
        meta.write_text("\n".join(metadata) + "\n", encoding="utf-8")
        done = subprocess.run(
            [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "f32le", "-ar", str(SAMPLE_RATE),
             "-ac", "1", "-i", str(pcm), "-f", "ffmetadata", "-i", str(meta), "-map", "0:a", "-map_metadata", "1",
             "-map_chapters", "1", *codec, str(out)],
            capture_output=True, check=False, timeout=3600)
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise AudioError(f"ffmpeg failed while encoding the {fmt} export: {detail[-1] if detail else done.returncode}")
        return out.read_bytes()


def _meta(value: str) -> str:
    """A value for an ffmetadata file: its special characters escaped."""
    return re.sub(r"([=;#\\\n])", r"\\\1", value)


def _joined_captions(store: Store, course: str, clips: list[dict], chapters: list[Chapter]) -> bytes | None:
    """Every clip's WebVTT cues in one file, each moved to its clip's start; None when no clip has captions."""
    lines, number, found = ["WEBVTT", ""], 0, False
    for clip, chapter in zip(clips, chapters, strict=True):
        name = clip.get("captions")
        vtt = store.read_object(course, name) if name else None
        if vtt is None:
            continue
        found = True
        for start, end, text in _cues(vtt.decode("utf-8")):
            number += 1
            lines += [str(number), f"{_stamp(start + chapter.start_s)} --> {_stamp(end + chapter.start_s)}", text, ""]
    return "\n".join(lines).encode("utf-8") if found else None


def _cues(vtt: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue of a WebVTT file (narro's own: one timing line, then its text lines)."""
    cues = []
    for block in re.split(r"\n\s*\n", vtt.replace("\r\n", "\n")):
        rows = block.strip("\n").split("\n")
        timing = next((i for i, row in enumerate(rows) if _TIMING.match(row)), None)
        if timing is None:
            continue
        h1, m1, s1, ms1, h2, m2, s2, ms2, _ = _TIMING.match(rows[timing]).groups()  # type: ignore[union-attr]
        start = int(h1) * 3600 + int(m1) * 60 + int(s1) + int(ms1) / 1000
        end = int(h2) * 3600 + int(m2) * 60 + int(s2) + int(ms2) / 1000
        cues.append((start, end, "\n".join(rows[timing + 1:])))
    return cues


def _stamp(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}.{millis % 1000:03d}"


def _zip(store: Store, course: str, clips: list[dict], mp3s: list[bytes]) -> Export:
    """The clips as published, with their captions and an M3U playlist (`{course}.m3u`) in course order."""
    buffer = io.BytesIO()
    playlist = ["#EXTM3U"]
    chapters, position = [], 0.0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # MP3s do not compress
        for clip, data in zip(clips, mp3s, strict=True):
            duration = float(clip.get("duration_s") or 0.0)
            title = clip.get("title") or clip["id"]
            archive.writestr(f"{course}/{clip['id']}.mp3", data)
            for name in (clip.get("captions"), f"{clip['id']}.srt" if clip.get("captions") else None):
                body = store.read_object(course, name) if name else None
                if body is not None:
                    archive.writestr(f"{course}/{name}", body)
            playlist += [f"#EXTINF:{round(duration)},{title}", f"{clip['id']}.mp3"]
            chapters.append(Chapter(clip["id"], title, position, position + duration))
            position += duration
        archive.writestr(f"{course}/{course}.m3u", "\n".join(playlist) + "\n")
    return Export(buffer.getvalue(), None, tuple(chapters), position, None)
