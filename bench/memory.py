"""Benchmark: a render's memory against the clips it has done, for a 125- and a 1,000-clip course.

    .venv/bin/python bench/memory.py [--clips 125] [--label NAME] [--env KEY=VALUE ...]
                                     [--stop-at HH:MM] [--out bench/results/memory.json]
    .venv/bin/python bench/memory.py --plot-only

Runs `narro render COURSE --store TMP/store --catalogue sqlite:///TMP/cat.db --concurrency 2`
with everything on (watermark, QA with ASR, up to 3 takes) in a child process and samples, every
half second, the RSS of the render process (the largest of its tree; Prefect's API server is a
process of its own) and how many clips are done (sidecars in the store plus failed clips in the
catalogue); its high-water RSS (VmHWM) catches spikes between samples. `--clips 125` is the
bench course; more clips are made from its texts, ids suffixed
`-rNN`: copy r > 0 of a narration ends with the first sentence of the narration r places on, so
takes have lengths of their own (a copy of the same audio would repeat every shape and hide
growth that depends on input shapes). `--env` passes settings to the render (for toggles, e.g.
`NARRO_QA_ASR=false`). `--stop-at` stops the render at that UTC time and keeps the curve so far.

Each run is stored under its label in the JSON (samples, peak RSS, RSS at 10% and at the end of
the clips, growth per clip over the second half) and `bench/results/memory.svg` plots RSS against
clips done for every run in the file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAGE = os.sysconf("SC_PAGE_SIZE")
BENCH_COURSE = REPO / "manifests" / "bench-course.yaml"
SAMPLE_S = 0.5


def course_manifest(clips: int, workdir: Path) -> Path:
    """The bench course, or `clips` narrations made from its texts, in a copy of its folder."""
    import yaml

    folder = workdir / "manifest"
    shutil.copytree(BENCH_COURSE.parent, folder, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))
    data = yaml.safe_load(BENCH_COURSE.read_text(encoding="utf-8"))
    originals = data["narrations"]
    firsts = [re.split(r"(?<=[.!?])\s+", n["text"].strip(), maxsplit=1)[0] for n in originals]
    narrations = []
    for index in range(clips):
        copy, which = divmod(index, len(originals))
        narration = dict(originals[which])
        if copy:
            narration["id"] = f"{narration['id']}-r{copy:02d}"
            narration["text"] = f"{narration['text'].strip()}\n{firsts[(which + copy) % len(originals)]}\n"
        narrations.append(narration)
    data["narrations"] = narrations
    target = folder / BENCH_COURSE.name
    target.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
    return target


def _rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def _peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of the process's RSS (VmHWM): spikes between samples count."""
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration, ValueError):
        return 0.0


def _tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        tree += children
        frontier += children
    return tree


def _failed(catalogue: Path, course: str) -> int:
    if not catalogue.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{catalogue}?mode=ro", uri=True, timeout=0.2) as db:
            return int(db.execute("SELECT count(*) FROM clips WHERE course = ? AND status = 'failed'",
                                  (course,)).fetchone()[0])
    except sqlite3.Error:
        return 0


def render_and_sample(manifest: Path, workdir: Path, env: dict[str, str], stop_at: dt.datetime | None) -> dict:
    """Run the render; return its samples (seconds, clips done, render RSS MB, tree RSS MB) and outcome."""
    store, catalogue = workdir / "store", workdir / "cat.db"
    course = "bench-speech"
    command = [str(BIN / "narro"), "render", str(manifest), "--store", str(store),
               "--catalogue", f"sqlite:///{catalogue}", "--concurrency", "2"]
    samples: list[tuple[float, int, float, float]] = []
    high_water = 0.0
    started = time.perf_counter()
    stopped = False
    with (workdir / "render.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        failed_seen, last_failed_check = 0, 0.0
        while process.poll() is None:
            now = time.perf_counter() - started
            rss = {pid: _rss_mb(pid) for pid in _tree(process.pid)}
            biggest = max(rss, key=lambda pid: rss[pid], default=process.pid)
            high_water = max(high_water, _peak_rss_mb(biggest))
            published = sum(1 for p in (store / course).glob("*.json") if p.name != "index.json") \
                if (store / course).is_dir() else 0
            if now - last_failed_check > 10:
                failed_seen, last_failed_check = _failed(catalogue, course), now
            samples.append((round(now, 2), published + failed_seen, round(max(rss.values(), default=0.0), 1),
                            round(sum(rss.values()), 1)))
            if stop_at and dt.datetime.now(dt.UTC) >= stop_at:
                process.terminate()
                stopped = True
                process.wait(60)
                break
            time.sleep(SAMPLE_S)
    published = sum(1 for p in (store / course).glob("*.json") if p.name != "index.json") if (store / course).is_dir() else 0
    return {"command": command, "returncode": process.returncode, "wall_s": round(time.perf_counter() - started, 1),
            "stopped_early": stopped, "published": published, "high_water_rss_mb": round(high_water, 1),
            "failed": _failed(catalogue, course),
            "log_tail": (workdir / "render.log").read_text(errors="replace").splitlines()[-15:],
            "samples": samples}


def summarise(run: dict, clips: int) -> dict:
    """Peak RSS, RSS once 10% and all clips are done, and growth per clip over the second half."""
    samples = run["samples"]
    done = max((s[1] for s in samples), default=0)

    def rss_at(count: int) -> float | None:
        """The highest RSS sampled while exactly `count` clips were done (else the next sample)."""
        at = [s[2] for s in samples if s[1] == count] or [s[2] for s in samples if s[1] > count][:1]
        return max(at) if at else None

    half, end = max(1, done // 2), done
    at_half, at_end = rss_at(half), rss_at(end)
    growth = (at_end - at_half) / (end - half) if at_half is not None and at_end is not None and end > half else None
    return {"clips": clips, "clips_done": done, "peak_rss_mb": max((s[2] for s in samples), default=0.0),
            "peak_tree_rss_mb": max((s[3] for s in samples), default=0.0),
            "rss_at_10pct_mb": rss_at(max(1, clips // 10)), "rss_at_end_mb": at_end,
            "growth_mb_per_clip_second_half": round(growth, 3) if growth is not None else None}


def plot(runs: dict[str, dict], path: Path) -> None:
    """RSS of the render process against clips done, one line per run, as an SVG."""
    width, height, left, bottom, top, right = 900, 420, 60, 40, 30, 290
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    max_x = max((max((s[1] for s in r["samples"]), default=1) for r in runs.values()), default=1) or 1
    max_y = max((max((s[2] for s in r["samples"]), default=1.0) for r in runs.values()), default=1.0)
    max_y = max(1400.0, (int(max_y / 200) + 1) * 200)

    def x(v: float) -> float:
        return left + (width - left - right) * v / max_x

    def y(v: float) -> float:
        return height - bottom - (height - bottom - top) * v / max_y

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="18" font-size="13">narro render: RSS of the render process vs clips done '
             '(everything on, concurrency 2)</text>']
    for mb in range(0, int(max_y) + 1, 200):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(mb):.1f}" y2="{y(mb):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y(mb) + 4:.1f}" text-anchor="end">{mb}</text>')
    step = max(1, round(max_x / 10 / 25) * 25) if max_x > 50 else 5
    for n in range(0, max_x + 1, step):
        parts.append(f'<text x="{x(n):.1f}" y="{height - bottom + 15}" text-anchor="middle">{n}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(1200):.1f}" y2="{y(1200):.1f}" stroke="#888" '
                 f'stroke-dasharray="4 3"/><text x="{width - right + 4}" y="{y(1200) + 4:.1f}">1.2 GB goal</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">clips done</text>'
                 f'<text x="14" y="{(top + height - bottom) / 2}" transform="rotate(-90 14 {(top + height - bottom) / 2})" '
                 'text-anchor="middle">RSS (MB)</text>')
    for index, (label, run) in enumerate(runs.items()):
        colour = colours[index % len(colours)]
        best: dict[int, float] = {}  # the highest RSS seen at each count of clips done
        for _, done, rss, _tree_rss in run["samples"]:
            best[done] = max(best.get(done, 0.0), rss)
        points = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in sorted(best.items()))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
        legend_y = top + 16 * index + 10
        parts.append(f'<line x1="{width - right + 8}" x2="{width - right + 24}" y1="{legend_y}" y2="{legend_y}" '
                     f'stroke="{colour}" stroke-width="2"/><text x="{width - right + 28}" y="{legend_y + 4}">'
                     f'{label}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=125)
    parser.add_argument("--label", help="name of the run in the JSON (default: '{clips} clips')")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="setting for the render")
    parser.add_argument("--stop-at", help="UTC time HH:MM to stop the render and keep the curve so far")
    parser.add_argument("--out", type=Path, default=Path("bench/results/memory.json"))
    parser.add_argument("--plot-only", action="store_true", help="redraw the SVG from the JSON")
    args = parser.parse_args(argv)
    out = args.out if args.out.is_absolute() else REPO / args.out
    report = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {"runs": {}}
    if not args.plot_only:
        env = dict(item.split("=", 1) for item in args.env)
        stop_at = None
        if args.stop_at:
            hour, minute = (int(part) for part in args.stop_at.split(":"))
            stop_at = dt.datetime.now(dt.UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
        label = args.label or f"{args.clips} clips"
        workdir = Path(tempfile.mkdtemp(prefix="narro-memory-"))
        try:
            manifest = course_manifest(args.clips, workdir)
            print(f"{label}: rendering {args.clips} clips ({workdir})", flush=True)
            run = render_and_sample(manifest, workdir, env, stop_at)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        run.update(summarise(run, args.clips), env=env, date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                   nproc=len(os.sched_getaffinity(0)), loadavg_at_end=os.getloadavg())
        report["runs"][label] = run
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"{'run':<42} {'clips done':>10} {'peak RSS MB':>12} {'high water':>10} {'at 10% MB':>10} {'at end MB':>10} "
          f"{'MB/clip 2nd half':>17}")
    for label, run in report["runs"].items():
        print(f"{label:<42} {run['clips_done']:>10} {run['peak_rss_mb']:>12.0f} {run.get('high_water_rss_mb', 0):>10.0f} "
              f"{run['rss_at_10pct_mb'] or 0:>10.0f} "
              f"{run['rss_at_end_mb'] or 0:>10.0f} {run['growth_mb_per_clip_second_half'] or 0:>17.2f}")
    plot(report["runs"], out.with_suffix(".svg"))
    print(f"JSON: {out}\nplot: {out.with_suffix('.svg')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
