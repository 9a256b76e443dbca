"""Retries from the dashboard: which clips may start, and handing them to a launcher.

narro knows nothing of Prefect: a launcher (flows/retry.py) is any callable that takes a
RetryRequest and starts the course flow for it, in this process or through a deployment.
Launches run one at a time on a background thread, so the page answers at once and retries
queue instead of competing for the CPU.

A clip is not started twice: the clips of a request are marked pending in the catalogue
(under the new run id) while holding a lock, and a clip that is pending or running, in the
catalogue or in this process's registry, is left out of the next request. A catalogue status
older than BUSY_EXPIRY_S is taken to be left over from a process that died, and may be retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from narro.batch import new_run_id
from narro.catalogue import FAILED, PENDING, RUNNING, Catalogue, now
from narro.errors import DashboardError

log = logging.getLogger(__name__)

BUSY_EXPIRY_S = 30 * 60


@dataclass(frozen=True)
class RetryRequest:
    """Everything a launcher needs: the course flow's parameters."""

    manifest: str
    store: str
    catalogue: str
    run_id: str
    course: str
    only: list[str]
    voice: str | None = None
    tier: str | None = None


Launcher = Callable[[RetryRequest], None]


@dataclass
class Started:
    run_id: str
    started: list[str]
    skipped: list[str] = field(default_factory=list)
    """Asked for but already pending or running."""


class Retries:
    def __init__(self, catalogue: Catalogue, store_url: str, launcher: Launcher):
        self.catalogue = catalogue
        self.store_url = store_url
        self.launcher = launcher
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], str] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="narro-retry")
        self.errors: dict[str, str] = {}
        """Run id → why its launch failed, for the page to show."""

    def busy(self, course: str, narration_id: str) -> bool:
        if (course, narration_id) in self._in_flight:
            return True
        state = self.catalogue.clip(course, narration_id)
        if state is None or state.status not in (PENDING, RUNNING):
            return False
        return now() - _aware(state.updated_at) < timedelta(seconds=BUSY_EXPIRY_S)

    def start(self, manifest: str, course: str, ids: list[str], voice: str | None = None,
              tier: str | None = None) -> Started:
        """Queue a course-flow run for `ids`; raises DashboardError when none of them may start."""
        if not ids:
            raise DashboardError("no clips to retry")
        run_id = new_run_id()
        with self._lock:
            started = [i for i in dict.fromkeys(ids) if not self.busy(course, i)]
            skipped = [i for i in ids if i not in started]
            if not started:
                raise DashboardError(f"already pending or running: {', '.join(skipped)}")
            self.catalogue.start_run(run_id, course)
            for narration_id in started:
                self.catalogue.mark_pending(course, narration_id, run_id)
                self._in_flight[(course, narration_id)] = run_id
        request = RetryRequest(manifest, self.store_url, self.catalogue.url, run_id, course, started, voice, tier)
        self._executor.submit(self._run, request)
        return Started(run_id, started, skipped)

    def _run(self, request: RetryRequest) -> None:
        try:
            self.launcher(request)
        except Exception as error:  # the launch itself failed: the clips must not stay pending
            reason = f"retry could not run: {type(error).__name__}: {error}"
            log.warning("%s (run %s)", reason, request.run_id)
            self.errors[request.run_id] = reason
            for narration_id in request.only:
                state = self.catalogue.clip(request.course, narration_id)
                if state is not None and state.run_id == request.run_id and state.status in (PENDING, RUNNING):
                    # The retry counts as an attempt, failed for this reason, in the clip's history.
                    number = self.catalogue.mark_running(request.course, narration_id, request.run_id)
                    self.catalogue.finish_attempt(request.course, narration_id, number, status=FAILED, error=reason)
                    self.catalogue.mark_failed(request.course, narration_id, reason, request.run_id)
            self.catalogue.finish_run(request.run_id, rendered=0, failed=len(request.only), cached=0)
        finally:
            with self._lock:
                for narration_id in request.only:
                    self._in_flight.pop((request.course, narration_id), None)

    def in_flight(self, course: str) -> dict[str, str]:
        """Clip id → run id of the retries this process has queued or is running for `course`."""
        with self._lock:
            return {i: run for (c, i), run in self._in_flight.items() if c == course}

    def shutdown(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=not wait)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

