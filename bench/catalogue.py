"""`narro status` on a 10,000-clip course, on SQLite and PostgreSQL (issue 12, goal 4).

    python bench/catalogue.py [--clips 10000] [--repeat 7] [--backends sqlite,postgresql]
                              [--out bench/results/catalogue.json]

Seeds a course of --clips clips (2% failed, 2.5% spoken by the fallback voice, 1-3 attempts
each with full QA metrics, 20 runs, a few reviewers' flags: tests/catalogue_seed.py) and a
50-clip course (one page) beside it, then times, median of --repeat runs:

- `page query`: one page (50 clips from the middle), its attempts and verdicts, as `narro
  status` reads them (narro.status.read_page), against the whole-course read the status command
  made before pages (every clip, every attempt, figures for all): `old read`;
- `status in-process`: the `narro status` command through click (catalogue opened each time),
  default, --failed, --wide, and --json complete (every clip, for scripts), each against the same
  options on the 50-clip course;
- `status command`: `narro status COURSE` as a new process (COLUMNS=80), against the same
  command on the 50-clip course and against `narro --version` (the interpreter and imports alone).

PostgreSQL is the loopback server (127.0.0.1:5432, trust auth, database `test`), in a schema of
its own that is dropped afterwards. Prints a table; writes JSON.
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
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from click.testing import CliRunner  # noqa: E402

from narro.catalogue import Catalogue  # noqa: E402
from narro.cli import main as narro_main  # noqa: E402
from narro.report import published_figures  # noqa: E402
from narro.status import read_page  # noqa: E402
from tests.catalogue_seed import postgres_schema, seed  # noqa: E402

NARRO = Path(sys.executable).with_name("narro")
BACKENDS = ("sqlite", "postgresql")


def median_s(action: Callable[[], object], repeat: int) -> float:
    """Median wall time of `action` over `repeat` runs, after one warm-up run."""
    action()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def old_read(catalogue: Catalogue, course: str) -> None:
    """What `narro status` read before pages: every clip, every attempt, the figures of all."""
    published_figures(catalogue.clips(course), catalogue.course_attempts(course))


def in_process(url: str, *args: str) -> Callable[[], object]:
    def run() -> object:
        result = CliRunner().invoke(narro_main, ["status", *args, "--catalogue", url])
        if result.exit_code not in (0, 1):
            raise SystemExit(f"narro status {' '.join(args)} failed ({result.exit_code}): {result.output}")
        return result
    return run


def command(url: str, *args: str) -> Callable[[], object]:
    environment = {**os.environ, "COLUMNS": "80", "NARRO_CATALOGUE": url}

    def run() -> object:
        ran = subprocess.run([str(NARRO), *args], capture_output=True, text=True, env=environment, timeout=300)
        if ran.returncode not in (0, 1):
            raise SystemExit(f"narro {' '.join(args)} failed ({ran.returncode}): {ran.stderr}")
        return ran
    return run


def measure(backend: str, url: str, clips: int, repeat: int) -> dict:
    started = time.perf_counter()
    seed(url, "large", clips)
    seed(url, "small", 50)
    seeded_s = time.perf_counter() - started
    catalogue = Catalogue(url)
    middle = (clips // 2 // 50) * 50
    figures = {
        "page_query_s": median_s(lambda: read_page(catalogue, "large", offset=middle, limit=50, failed_only=False),
                                 repeat),
        "old_read_s": median_s(lambda: old_read(catalogue, "large"), max(3, repeat // 2)),
        "status_in_process_s": median_s(in_process(url, "large"), repeat),
        "status_failed_in_process_s": median_s(in_process(url, "large", "--failed"), repeat),
        "status_wide_in_process_s": median_s(in_process(url, "large", "--wide"), repeat),
        "status_small_in_process_s": median_s(in_process(url, "small"), repeat),
        "status_failed_small_in_process_s": median_s(in_process(url, "small", "--failed"), repeat),
        "status_wide_small_in_process_s": median_s(in_process(url, "small", "--wide"), repeat),
        "status_json_small_in_process_s": median_s(in_process(url, "small", "--json"), repeat),
        "status_json_complete_in_process_s": median_s(in_process(url, "large", "--json"), max(3, repeat // 2)),
        "status_command_s": median_s(command(url, "status", "large"), repeat),
        "status_command_small_s": median_s(command(url, "status", "small"), repeat),
        "version_command_s": median_s(command(url, "--version"), repeat),
    }
    catalogue.dispose()
    return {"backend": backend, "clips": clips, "seed_s": round(seeded_s, 2),
            **{name: round(value, 4) for name, value in figures.items()}}


def table(results: list[dict]) -> str:
    small = "same, 50-clip course"
    rows = [
        ("page query (50 clips, attempts, verdicts)", "page_query_s", "old_read_s", "old whole-course read"),
        ("status in-process, default", "status_in_process_s", "status_small_in_process_s", small),
        ("status in-process, --failed", "status_failed_in_process_s", "status_failed_small_in_process_s", small),
        ("status in-process, --wide", "status_wide_in_process_s", "status_wide_small_in_process_s", small),
        ("status in-process, --json (every clip)", "status_json_complete_in_process_s",
         "status_json_small_in_process_s", small),
        ("status command (new process, 80 cols)", "status_command_s", "status_command_small_s", small),
        ("status command (new process, 80 cols)", "status_command_s", "version_command_s", "narro --version"),
    ]
    lines = ["backend | measure | median ms | baseline | baseline ms | ratio", "---|---|---|---|---|---"]
    for result in results:
        for label, key, base, base_label in rows:
            value, baseline = result[key], result[base]
            lines.append(f"{result['backend']} | {label} | {value * 1000:.1f} | {base_label} | "
                         f"{baseline * 1000:.1f} | {value / baseline:.2f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, of {', '.join(BACKENDS)}")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "catalogue.json")
    args = parser.parse_args()
    backends = args.backends.split(",")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    results: list[dict] = []
    report = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_before": os.getloadavg()[0]},
              "clips": args.clips, "repeat": args.repeat, "results": results}
    with ExitStack() as stack:
        for backend in backends:
            if backend == "sqlite":
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="narro-bench-catalogue-")))
                url = f"sqlite:///{folder / 'catalogue.db'}"
            else:
                url = stack.enter_context(postgres_schema())
            print(f"{backend}: seeding {args.clips} clips and timing ...", file=sys.stderr, flush=True)
            results.append(measure(backend, url, args.clips, args.repeat))
    report["machine"]["load_after"] = os.getloadavg()[0]
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
