"""Benchmark: the bench course in embedded mode and in cluster mode with 1 and 2 workers, on this machine.

    .venv/bin/python bench/cluster.py [--manifest manifests/bench-course.yaml] [--limit N]
                                      [--modes embedded,cluster-1,cluster-2] [--out bench/results/cluster.json]

Each mode renders the same narrations into an empty store and catalogue with
`narro render MANIFEST --store TMP/store` (threads: `--concurrency 2`). Cluster modes first start
`narro cluster up --detach --workers N` (one thread per worker; Prefect server and catalogue on
the machine's PostgreSQL, in databases of their own that are dropped afterwards) and render with
the variables `narro cluster env` prints, so the clips run on the Dask workers.

Per mode, from the command and the catalogue's attempt rows:

  wall           the render command, start to exit (the cluster's own start is reported apart)
  span           first clip started to last clip finished
  fixed          wall - span: Prefect API start, planning, task submission, the course index and report
  clip time      a clip's body, first attempt started to last finished (synthesis, post-processing,
                 QA, watermark, publish), contention with everything else on the 2 cores included
  gap/clip       orchestration overhead per clip, in ms: how long a slot (thread or worker) that
                 finished a clip stayed idle before its next clip started (Prefect task-run
                 bookkeeping, Dask dispatch and hand-back), the clips laid out on `slots` slots in
                 start order; the first clip of each slot (ramp-up) and the idle tail are not gaps
  throughput     clips per minute of wall, and its ratio to embedded (goal for 2 workers: >= 0.9)

The environment passes through (e.g. NARRO_QA_ASR=false measures without the ASR round trip).
Exit 1 if a render fails or leaves a clip unrendered.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NARRO = str(Path(sys.executable).parent / "narro")
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
MODES = {"embedded": 0, "cluster-1": 1, "cluster-2": 2}
THREADS = 2
"""Embedded threads (narro render's default) and cores on the reference machine."""


def trimmed_manifest(manifest: Path, limit: int, workdir: Path) -> Path:
    """The first `limit` narrations as a manifest of their own, beside a copy of the manifest's folder."""
    import yaml

    folder = workdir / "manifest"
    shutil.copytree(manifest.parent, folder, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))
    data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    data["narrations"] = data["narrations"][:limit]
    target = folder / manifest.name
    target.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
    return target


def drop_databases(names: list[str]) -> None:
    import asyncpg

    async def drop() -> None:
        connection = await asyncpg.connect(f"{POSTGRES}/postgres")
        try:
            for name in names:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop())


def cluster_up(workers: int, state: Path, prefix: str, env: dict[str, str]) -> tuple[dict[str, str], float]:
    """Start a local cluster; returns the environment pointing at it and how long it took to start."""
    started = time.perf_counter()
    subprocess.run([NARRO, "cluster", "up", "--detach", "--state-dir", str(state), "--workers", str(workers),
                    "--db-prefix", prefix], env=env, check=True, capture_output=True, text=True, timeout=600)
    up_s = time.perf_counter() - started
    exported = subprocess.run([NARRO, "cluster", "env", "--state-dir", str(state)], env=env, check=True,
                              capture_output=True, text=True).stdout
    pointed = dict(env)
    for line in exported.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        pointed[name] = value.strip("'")
    return pointed, round(up_s, 1)


def dispatch_gaps(bodies: list[tuple[float, float]], slots: int) -> list[float]:
    """Idle time before each clip on the slot it most plausibly ran on: the one freed last before it started."""
    ends: list[float] = []
    gaps = []
    for start, end in sorted(bodies):
        if len(ends) < slots:  # ramp-up: the slot's first clip
            ends.append(end)
            continue
        freed = [e for e in ends if e <= start]
        previous = max(freed) if freed else min(ends)  # none freed yet: timestamps a few ms apart across processes
        gaps.append(max(0.0, start - previous))
        ends[ends.index(previous)] = end
    return gaps


def clip_figures(catalogue_url: str, course: str, slots: int) -> dict[str, float]:
    from narro.catalogue import Catalogue

    history = Catalogue(catalogue_url).course_attempts(course)
    bodies = []
    for tries in history.values():
        finished = [a.finished_at for a in tries if a.finished_at is not None]
        if len(finished) == len(tries):  # a clip whose render was cut short has no body to measure
            bodies.append((min(a.started_at for a in tries).timestamp(), max(finished).timestamp()))
    clips = len(bodies)
    span = max(end for _, end in bodies) - min(start for start, _ in bodies)
    busy = sum(end - start for start, end in bodies)
    gaps = sorted(dispatch_gaps(bodies, slots)) or [0.0]
    return {"clips": clips, "attempts": sum(len(tries) for tries in history.values()), "span_s": round(span, 2),
            "clip_time_s": round(busy, 2), "clip_time_per_clip_s": round(busy / clips, 3),
            "gap_per_clip_ms": round(sum(gaps) / len(gaps) * 1000, 1),
            "gap_median_ms": round(gaps[len(gaps) // 2] * 1000, 1)}


def measure(mode: str, manifest: Path, course: str, workdir: Path, env: dict[str, str]) -> dict[str, object]:
    workers = MODES[mode]
    store = workdir / f"store-{mode}"
    result: dict[str, object] = {"mode": mode, "workers": workers, "slots": workers or THREADS}
    prefix = f"narro_bench_{uuid.uuid4().hex[:8]}"
    state = workdir / f"cluster-{mode}"
    run_env = {**env, "NARRO_CATALOGUE": f"sqlite:///{workdir / f'catalogue-{mode}.db'}"}
    try:
        if workers:
            run_env, result["cluster_up_s"] = cluster_up(workers, state, prefix, env)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        render = subprocess.run([NARRO, "render", str(manifest), "--store", str(store), "--concurrency", str(THREADS)],
                                env=run_env, capture_output=True, text=True, timeout=4 * 3600)
        wall = time.perf_counter() - started
        result.update(returncode=render.returncode, wall_s=round(wall, 2), load_before=round(load, 2),
                      load_after=round(os.getloadavg()[0], 2), output_tail=(render.stdout + render.stderr)[-2000:])
        result.update(clip_figures(run_env["NARRO_CATALOGUE"], course, int(result["slots"])))  # type: ignore[call-overload]
        result["fixed_s"] = round(wall - float(result["span_s"]), 2)  # type: ignore[arg-type]
        result["clips_per_min"] = round(float(result["clips"]) / wall * 60, 2)  # type: ignore[arg-type]
    finally:
        if workers:
            subprocess.run([NARRO, "cluster", "down", "--state-dir", str(state)], env=env, capture_output=True,
                           timeout=300)
            drop_databases([prefix, f"{prefix}_prefect"])
    return result


def table(results: list[dict]) -> str:
    embedded = next((r for r in results if r["mode"] == "embedded"), None)
    columns = ("mode", "clips", "wall s", "span s", "fixed s", "clip s/clip", "gap ms/clip (median)", "clips/min",
               "vs embedded", "load")
    lines = [" | ".join(columns), " | ".join("---" for _ in columns)]
    for r in results:
        ratio = f"{r['clips_per_min'] / embedded['clips_per_min']:.2f}x" if embedded else ""
        lines.append(" | ".join(str(v) for v in (
            r["mode"], r["clips"], r["wall_s"], r["span_s"], r["fixed_s"], r["clip_time_per_clip_s"],
            f"{r['gap_per_clip_ms']} ({r['gap_median_ms']})", r["clips_per_min"], ratio,
            f"{r['load_before']}→{r['load_after']}")))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "manifests" / "bench-course.yaml")
    parser.add_argument("--limit", type=int, default=None, help="only the first N narrations (a quick run)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cluster.json")
    args = parser.parse_args()
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)  # embedded mode runs its own private API
    results: list[dict] = []
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "manifest": str(args.manifest), "limit": args.limit, "asr": env.get("NARRO_QA_ASR", "true"),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="narro-bench-cluster-") as temporary:
        workdir = Path(temporary)
        manifest = trimmed_manifest(args.manifest, args.limit, workdir) if args.limit else args.manifest.resolve()
        from narro.manifest import load_course

        course = load_course(manifest).slug
        for mode in modes:
            print(f"{mode}: rendering {manifest} ...", file=sys.stderr, flush=True)
            results.append(measure(mode, manifest, course, workdir, env))
            print(table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")  # each mode as it ends
    print(table(results))
    failed = [r["mode"] for r in results if r["returncode"] != 0]
    if failed:
        print(f"render failed in: {', '.join(failed)} (see output_tail in {args.out})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
