"""No-op at scale: what `narro render` costs when nothing changed, and what it asks of the store.

    python bench/noop.py [--clips 10000] [--runs 5] [--baseline-tree DIR]

1. The example course (manifests/example-course.yaml), rendered once for real into a fresh
   store, then `--runs` no-op renders, each a fresh `narro render` process (wall time). With
   `--baseline-tree DIR` (a copy of an older narro, e.g. `git archive COMMIT | tar -x -C DIR`),
   the same is done with that code, on a store it rendered itself, in the same run: the ratio.
2. A course of `--clips` narrations made from the bench course's texts (ids suffixed), on a
   local folder and on SeaweedFS (tests/seaweed_server.py). Its clips are stand-ins
   (tests/stand_ins.py: one MP3's bytes and a sidecar naming each clip's own content key),
   since rendering 10,000 clips takes hours and planning never decodes audio. One priming run
   per store records them in the catalogue (shared by both stores) and writes the store's index;
   then `--runs` timed no-op renders.
3. The S3 requests of one no-op, counted in this process with botocore's before-call event.

Any no-op that re-renders, re-tags or rewrites anything in the store fails the benchmark (exit 1).
Prints a table and writes bench/results/noop.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from narro.batch import conclude, prepare  # noqa: E402
from narro.catalogue import Catalogue  # noqa: E402
from narro.manifest import load_course  # noqa: E402
from narro.plan import plan  # noqa: E402
from narro.s3store import S3Store  # noqa: E402
from narro.settings import QaSettings  # noqa: E402
from narro.store import LocalStore, Store  # noqa: E402
from tests.seaweed_server import BUCKET, KEY, SECRET, running_seaweed  # noqa: E402
from tests.stand_ins import publish_stand_ins  # noqa: E402

NARRO = str(Path(sys.executable).parent / "narro")
TARGETS_S = {"example": 1.0, "local": 5.0, "s3": 5.0}
"""Issue 12, goal 3: the example course's no-op under 1 s; an unchanged 10,000-clip course under 5 s."""


class NotANoOp(AssertionError):
    """A run that should have changed nothing changed something."""


def big_course(folder: Path, clips: int) -> Path:
    """The bench course's narrations repeated, ids suffixed, up to `clips`; returns the manifest."""
    bench = yaml.safe_load((ROOT / "manifests" / "bench-course.yaml").read_text(encoding="utf-8"))
    narrations = [{**narration, "id": f"{narration['id']}-{copy:03d}", "title": f"{narration['title']} ({copy})"}
                  for copy in range(-(-clips // len(bench["narrations"]))) for narration in bench["narrations"]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "voices.yaml").write_text((ROOT / "manifests" / "voices.yaml").read_text(encoding="utf-8"))
    manifest = folder / "course.yaml"
    manifest.write_text(yaml.safe_dump({**bench, "course": "noop-scale", "narrations": narrations[:clips]},
                                       sort_keys=False, allow_unicode=True), encoding="utf-8")
    return manifest


def folder_state(store: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns) for p in store.rglob("*") if p.is_file()}


def bucket_state(store: S3Store) -> dict[str, tuple[int, str]]:
    return {f"{course}/{name}": value for course in ("noop-scale",) for name, value in store._listing(course).items()}


def timed_noops(label: str, command: list[str], env: dict[str, str], runs: int,
                state: Callable[[], dict]) -> list[float]:
    """Wall seconds of `runs` no-op renders; NotANoOp if one fails or changes anything in the store."""
    times = []
    for run in range(runs):
        before = state()
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise NotANoOp(f"{label}: run {run + 1} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        changed = sorted(name for name, value in state().items() if before.get(name) != value)
        changed += sorted(set(before) - set(state()))
        if changed or "retagged" in done.stdout or "to render" in done.stdout:
            raise NotANoOp(f"{label}: run {run + 1} was not a no-op; changed {changed[:5]}:\n{done.stdout[-2000:]}")
        print(f"  {label} no-op {run + 1}: {times[-1]:.2f} s", flush=True)
    return times


def figures(times: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3)}


def example(work: Path, runs: int, env: dict[str, str], tree: Path | None, label: str) -> dict[str, object]:
    """Render the example course for real (once), then time its no-op; `tree`: run that narro instead."""
    store, catalogue = work / f"{label}-store", f"sqlite:///{work / f'{label}.db'}"
    run_env = {**env, "PYTHONPATH": str(tree)} if tree else env
    command = [sys.executable, "-c", "from narro.cli import main; main()"] if tree else [NARRO]
    render = [*command, "render", str(ROOT / "manifests" / "example-course.yaml"), "--store", str(store),
              "--catalogue", catalogue]
    print(f"{label}: rendering the example course once (real synthesis) ...", flush=True)
    first = subprocess.run(render, env=run_env, capture_output=True, text=True, timeout=1800, check=False, cwd=tree or ROOT)
    if first.returncode != 0:
        raise SystemExit(f"{label}: the example render failed:\n{first.stdout[-3000:]}{first.stderr[-3000:]}")
    times = timed_noops(f"{label} example", render, run_env, runs, lambda: folder_state(store))
    return {"clips": len(plan(load_course(ROOT / "manifests" / "example-course.yaml"))), **figures(times)}


def count_requests(manifest: Path, store: S3Store, catalogue_url: str) -> dict[str, int]:
    """The S3 operations of one no-op (plan, record, close), sent from this process and counted."""
    calls: Counter[str] = Counter()
    store._client.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    catalogue = Catalogue(catalogue_url)
    batch = prepare(manifest, store, catalogue)
    summary = conclude(batch, store, catalogue, QaSettings(), store_wait_s=0)
    if batch.to_render or batch.retagged or summary.failed:
        raise NotANoOp(f"counted no-op rendered {len(batch.to_render)}, retagged {len(batch.retagged)}")
    return dict(sorted(calls.items()))


def at_scale(work: Path, clips: int, runs: int, env: dict[str, str], kind: str, store: Store, url: str,
             extra: list[str], state: Callable[[], dict]) -> dict[str, object]:
    manifest = big_course(work / f"{kind}-course", clips)
    # One catalogue for both stores (it keys clips by course, not store): the S3 run's priming then
    # finds every row as it would write it, as after a course moved to S3, and writes none again.
    catalogue = f"sqlite:///{work / f'scale-{clips}.db'}"
    specs = plan(load_course(manifest))
    print(f"{kind}: publishing {len(specs)} stand-in clips ...", flush=True)
    started = time.perf_counter()
    publish_stand_ins(store, specs, threads=8 if kind == "s3" else 4)
    render = [NARRO, "render", str(manifest), "--store", url, "--catalogue", catalogue, *extra]
    primed = time.perf_counter()
    print(f"{kind}: published in {primed - started:.0f} s; priming run (fresh catalogue, no index yet) ...", flush=True)
    first = subprocess.run(render, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if first.returncode != 0 or "to render" in first.stdout:
        raise NotANoOp(f"{kind}: priming run:\n{first.stdout[-3000:]}{first.stderr[-3000:]}")
    result: dict[str, object] = {"clips": len(specs), "priming_run_s": round(time.perf_counter() - primed, 1)}
    result.update(figures(timed_noops(f"{kind} {len(specs)}", render, env, runs, state)))
    if isinstance(store, S3Store):
        result["requests_per_noop"] = count_requests(manifest, store, catalogue)
        result["objects_listed"] = len(state())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="an older narro's source tree: its example no-op is timed in the same run")
    parser.add_argument("--skip-example", action="store_true", help="only the large course (no real synthesis)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "noop.json")
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="narro-noop-") as scratch:
        work = Path(scratch)
        env = {**os.environ, "NARRO_LOG_DIR": str(work / "logs")}
        try:
            if not args.skip_example:
                results["example"] = example(work, args.runs, env, None, "current")
                if args.baseline_tree:
                    results["example_baseline"] = example(work, args.runs, env, args.baseline_tree.resolve(), "baseline")
            local = LocalStore(work / "local-store")
            results["local"] = at_scale(work, args.clips, args.runs, env, "local", local, str(local.root), [],
                                        lambda: folder_state(local.root))
            with running_seaweed(work / "seaweed") as server:
                s3_env = {**env, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                          "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                          "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
                os.environ.update({k: v for k, v in s3_env.items() if k.startswith("AWS_")})  # this process's S3Store
                bucket = S3Store(f"s3://{BUCKET}/bench", server.endpoint)
                results["s3"] = at_scale(work, args.clips, args.runs, s3_env, "s3", bucket, bucket.url,
                                         ["--endpoint-url", server.endpoint], lambda: bucket_state(bucket))
        except NotANoOp as failure:
            print(f"FAILED: {failure}", file=sys.stderr)
            sys.exit(1)
    report(results, args)


def report(results: dict[str, object], args: argparse.Namespace) -> None:
    print(f"\n{'case':<18} {'clips':>6} {'median':>8} {'min':>7} {'max':>7} {'target':>7}")
    for case, figures_ in results.items():
        assert isinstance(figures_, dict)
        target = TARGETS_S.get(case.removesuffix("_baseline")) if not case.endswith("_baseline") else None
        print(f"{case:<18} {figures_['clips']:>6} {figures_['median_s']:>7.2f}s {figures_['min_s']:>6.2f}s "
              f"{figures_['max_s']:>6.2f}s {f'<{target:.0f} s' if target else '':>7}")
    if "example_baseline" in results:
        ratio = results["example"]["median_s"] / results["example_baseline"]["median_s"]  # type: ignore[index]
        results["example_ratio_to_baseline"] = round(ratio, 3)
        print(f"example no-op: {ratio:.2f}x the baseline tree's median, same machine, same run")
    s3 = results.get("s3")
    if isinstance(s3, dict):
        print(f"S3 requests of one no-op of {s3['clips']} clips ({s3['objects_listed']} objects listed): "
              f"{s3['requests_per_noop']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "noop", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": args.runs, "targets_s": TARGETS_S, "results": results,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
