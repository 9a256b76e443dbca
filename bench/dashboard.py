"""Benchmark: the dashboard's course page for a 10,000-clip course, on SQLite and on PostgreSQL.

    .venv/bin/python bench/dashboard.py [--clips 10000] [--small 100] [--repeat 7] [--out bench/results/dashboard.json]

A catalogue is seeded with `--clips` rendered clips (2% failed, ~1% flagged, 1-3 attempts each
with QA metrics; tests/catalogue_seed.py) whose published keys are what a generated manifest of
the same narrations plans, so nothing is stale, as after a nightly render. The dashboard runs in
a real uvicorn server on loopback over the generated manifest (planned once, as the dashboard does at
start), and each page is fetched over HTTP `--repeat` times after one warm-up. Per page: median and slowest answer, SQL statements
run, sidecars read. On SQLite (a file) and on the machine's PostgreSQL (127.0.0.1:5432, database
`test`, a schema of its own dropped afterwards).

Ratios, each measured in the same run: the page at `--clips` against the same page at `--small`
clips (flat in clip count: ~1), and against the page with every clip on it (no paging: what the
page did before it was paged). Target: every page under 1 s. Exit 1 when a page misses it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from sqlalchemy import create_engine, event, update
from sqlalchemy.engine import Engine

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from narro.catalogue import Catalogue, ClipRow, VerdictRow  # noqa: E402
from narro.dashboard import overview  # noqa: E402
from narro.dashboard.app import create_app  # noqa: E402
from narro.dashboard.security import Guard  # noqa: E402
from narro.store import LocalStore  # noqa: E402
from tests.catalogue_seed import clip_id, postgres_schema, seed  # noqa: E402
from tests.dashboard_course import ServerThread, free_port  # noqa: E402

COURSE = "big"
PAGES = {
    "course page": f"/courses/{COURSE}",
    "page 100": f"/courses/{COURSE}?page=100",  # the last page of a smaller course
    "flagged": f"/courses/{COURSE}?show=flagged",
    "failed": f"/courses/{COURSE}?show=failed",
    "search": f"/courses/{COURSE}?q=narration%20123",
    "live rows": f"/courses/{COURSE}/rows",
    "courses list": "/",
}
TARGET_S = 1.0


def write_manifest(folder: Path, clips: int) -> tuple[overview.Manifests, dict[str, str], float]:
    """A manifest of `clips` narrations named as the seed names them, loaded and planned as the dashboard does
    at start (once: every server of the run shares it); its planned keys, and how long planning took."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "course.yaml"
    path.write_text(f"course: {COURSE}\ntitle: A course of {clips} narrations\nnarrations:\n" + "".join(
        f"  - id: {clip_id(i)}\n    text: Narration {i} is about codec tokens and how a model predicts them.\n"
        for i in range(clips)))
    started = time.perf_counter()
    manifests = overview.Manifests([path])
    planning = time.perf_counter() - started
    return manifests, {i: spec.content_key for i, spec in manifests.load(path).specs.items()}, planning


def seed_current(url: str, clips: int, keys: dict[str, str]) -> None:
    """Seed the catalogue, then make each clip's published audio the one the manifest plans (nothing stale)."""
    seed(url, COURSE, clips)
    engine = create_engine(url)
    with engine.begin() as connection:
        for narration_id, key in keys.items():
            connection.execute(update(ClipRow).where(ClipRow.course == COURSE, ClipRow.narration_id == narration_id)
                               .values(content_key=key, published_key=key))
            connection.execute(update(VerdictRow).where(VerdictRow.course == COURSE,
                                                        VerdictRow.narration_id == narration_id).values(content_key=key))
    engine.dispose()


class Counters:
    """SQL statements run and sidecars read while the counters are on."""

    def __init__(self) -> None:
        self.statements = 0
        self.sidecars = 0
        self._read_sidecar = LocalStore.read_sidecar

    def __enter__(self) -> Counters:
        counters = self

        def counting_read(store: LocalStore, course: str, narration_id: str):  # noqa: ANN202
            counters.sidecars += 1
            return counters._read_sidecar(store, course, narration_id)

        LocalStore.read_sidecar = counting_read  # type: ignore[method-assign,assignment]
        event.listen(Engine, "before_cursor_execute", self._count)
        return self

    def _count(self, *args: object) -> None:
        self.statements += 1

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._count)
        LocalStore.read_sidecar = self._read_sidecar  # type: ignore[method-assign]


def time_pages(server: ServerThread, repeat: int, pages: dict[str, str], warm_up: bool = True) -> dict[str, dict]:
    """Each page fetched over HTTP from a real server: median and slowest seconds, statements and sidecars per load."""
    figures = {}
    with httpx.Client(base_url=server.url, timeout=300) as client:
        for name, path in pages.items():
            if warm_up:
                assert client.get(path).status_code == 200, path
            times = []
            with Counters() as counters:
                for _ in range(repeat):
                    started = time.perf_counter()
                    answer = client.get(path)
                    times.append(time.perf_counter() - started)
                    assert answer.status_code == 200, (path, answer.status_code)
            figures[name] = {"median_s": statistics.median(times), "max_s": max(times),
                             "statements": counters.statements / repeat, "sidecars": counters.sidecars / repeat,
                             "bytes": len(answer.content)}
    return figures


def run(backend: str, urls: dict[int, str], store: Path, args: argparse.Namespace,
        manifests: dict[int, tuple[overview.Manifests, dict[str, str]]]) -> dict:
    """Every page at both sizes, then the course page with every clip on it at the large size, on one backend."""
    results: dict = {}
    for size, url in sorted(urls.items()):
        seeded = time.perf_counter()
        seed_current(url, size, manifests[size][1])
        print(f"{backend}: seeded {size} clips in {time.perf_counter() - seeded:.1f} s", flush=True)
        app = create_app(Catalogue(url), LocalStore(store), manifests[size][0], lambda request: None,
                         Guard(None, loopback_only=True))
        with ServerThread(app, free_port()) as server:
            results[size] = time_pages(server, args.repeat, PAGES)
            if size == args.clips:
                paged = overview.PAGE_SIZE
                overview.PAGE_SIZE = args.clips  # every clip on one page: the page before it was paged
                try:
                    results["unpaged"] = time_pages(server, 2, {"course page": PAGES["course page"]}, warm_up=False)
                finally:
                    overview.PAGE_SIZE = paged
        app.state.dashboard.retries.shutdown()
        app.state.dashboard.catalogue.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "dashboard.json")
    args = parser.parse_args()
    report: dict = {"clips": args.clips, "small": args.small, "repeat": args.repeat, "page_size": overview.PAGE_SIZE,
                    "machine": {"python": platform.python_version(), "platform": platform.platform()}, "backends": {}}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="narro-dash-bench-")))
        (work / "store").mkdir()
        manifests = {}
        for size in (args.small, args.clips):
            manifest, keys, planning = write_manifest(work / f"course-{size}", size)
            manifests[size] = (manifest, keys)
            report[f"plan_{size}_s"] = planning
            print(f"manifest of {size} narrations loaded and planned in {planning:.1f} s (once, at dashboard start)")
        sqlite = {size: f"sqlite:///{work / f'catalogue-{size}.db'}" for size in manifests}
        report["backends"]["sqlite"] = run("sqlite", sqlite, work / "store", args, manifests)
        postgres = {size: stack.enter_context(postgres_schema()) for size in manifests}
        report["backends"]["postgresql"] = run("postgresql", postgres, work / "store", args, manifests)
    failed = print_table(report, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.out}")
    return 1 if failed else 0


def print_table(report: dict, args: argparse.Namespace) -> bool:
    failed = False
    print(f"\nCourse page of a {args.clips:,}-clip course ({report['page_size']} clips a page), "
          f"{args.repeat} loads each over HTTP after a warm-up")
    header = (f"{'backend':<11}{'page':<14}{'median s':>9}{'max s':>8}{'SQL/load':>9}{'sidecars':>9}"
              f"{f'÷ {args.small} clips':>14}{'÷ unpaged':>11}  target")
    print(header)
    print("-" * len(header))
    for backend, results in report["backends"].items():
        unpaged = results["unpaged"]["course page"]["median_s"]
        for name, figures in results[args.clips].items():
            flat = figures["median_s"] / results[args.small][name]["median_s"]
            versus = f"{figures['median_s'] / unpaged:.3f}" if name == "course page" else ""
            ok = figures["max_s"] < TARGET_S
            failed |= not ok
            figures["vs_small"] = flat
            print(f"{backend:<11}{name:<14}{figures['median_s']:>9.3f}{figures['max_s']:>8.3f}"
                  f"{figures['statements']:>9.1f}{figures['sidecars']:>9.1f}{flat:>14.2f}{versus:>11}  "
                  f"{'PASS' if ok else 'MISS'} (< {TARGET_S:g} s)")
        print(f"{backend:<11}{'unpaged':<14}{unpaged:>9.3f}   (all {args.clips:,} clips on one page)")
    return failed


if __name__ == "__main__":
    sys.exit(main())
