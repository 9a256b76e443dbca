"""The progress bar `narro render` and `narro submit` show while a course renders, fed by the catalogue.

Twice a second it counts the run's clips by status with one grouped query (`Catalogue.run_counts`),
so following a 10,000-clip course costs the same as following a small one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from narro.catalogue import FAILED, RENDERED, Catalogue

POLL_S = 0.5


@contextmanager
def course_progress(console: Console, catalogue: Catalogue, course: str, run_id: str,
                    sizes: tuple[int, int] | None = None) -> Iterator[None]:
    """Show the run's bar until the block ends; the unchanged clips start it off as done.

    `sizes` is (clips to render, clips unchanged) when the caller planned the run itself; without it
    (a run planned by a worker elsewhere) both are read from the catalogue as the run registers its clips.
    """
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("[green]{task.fields[done]} done[/] [red]{task.fields[failed]} failed[/] {task.fields[cached]} cached"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )
    stop = threading.Event()

    def update(task_id: TaskID) -> None:
        counts = catalogue.run_counts(course, run_id)
        done, failed = counts.get(RENDERED, 0), counts.get(FAILED, 0)
        if sizes is None:
            to_render = sum(counts.values())
            cached = catalogue.status_counts(course).get(RENDERED, 0) - done
        else:
            to_render, cached = sizes
        progress.update(task_id, total=to_render + cached, completed=done + failed + cached, done=done,
                        failed=failed, cached=cached)

    def watch(task_id: TaskID) -> None:
        while not stop.wait(POLL_S):
            update(task_id)
        update(task_id)

    with progress:
        to_render, cached = sizes or (0, 0)
        task_id = progress.add_task("rendering", total=(to_render + cached) if sizes else None, completed=cached,
                                    done=0, failed=0, cached=cached)
        watcher = threading.Thread(target=watch, args=(task_id,), daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
