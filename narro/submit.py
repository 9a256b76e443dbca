"""Runs and schedules of the course flow on a Prefect server: what `narro submit` and `narro schedule` do.

Every run goes through a deployment of `flows/render_course.py:render_course` on a process work
pool (`narro-cpu`), so a Prefect worker renders it, with the settings of its own environment
(cluster mode, Dask scheduler, store credentials). The on-demand deployment, `render-course/render-course`,
is used as it is when the server has it (e.g. from `prefect deploy` with infra/prefect.yaml); when
it is missing it is created from this project's folder, which suits workers on this machine.

A schedule is a deployment of its own with one cron schedule, whose `manifest` parameter is the
course's latest uploaded source (narro.source): each scheduled run renders whatever was uploaded
last, and only the clips whose content key is not in the store, so an unchanged course costs nothing.

A run that no worker picks up is not left waiting: after PICKUP_TIMEOUT_S it is cancelled and
reported (SubmitError), as is a pool with no live worker before a run is created.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from narro.cluster import WORK_POOL
from narro.errors import SubmitError
from narro.source import parse_location

FLOW = "render-course"
ON_DEMAND = "render-course"
ENTRYPOINT = "flows.render_course.render_course"
"""A module path, not a file path: a flow loaded from a file path is a module Dask workers cannot import,
so its clips could not be sent to them (pickle: No module named 'render_course')."""
SCHEDULE_TAG = "narro-schedule"
PICKUP_TIMEOUT_S = 60.0
"""How long a new run may wait for a worker before it is cancelled and reported."""
POLL_S = 1.0


def full_name(name: str) -> str:
    """FLOW/DEPLOYMENT, as Prefect names deployments; a bare name is a deployment of the course flow."""
    return name if "/" in name else f"{FLOW}/{name}"


def project_dir() -> Path:
    """The folder holding flows/ and tasks/, which a process worker runs the flow from."""
    import flows

    return Path(flows.__file__).resolve().parent.parent


def _client():  # noqa: ANN202 (Prefect's sync client)
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _unreachable(error: Exception) -> SubmitError:
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    where = f"the Prefect API at {api}" if api else "a Prefect API (PREFECT_API_URL is not set)"
    return SubmitError(f"cannot reach {where}: {error}; start a cluster and run `eval \"$(narro cluster env)\"`")


def _deploy(name: str, description: str, tags: list[str], parameters: dict[str, Any] | None = None,
            cron: str | None = None, timezone: str | None = None) -> UUID:
    from prefect.flows import Flow
    from prefect.schedules import Cron

    # Both are sync here (Prefect's async_dispatch); mypy sees the async variants too.
    flow: Any = Flow.from_source(str(project_dir()), entrypoint=ENTRYPOINT)  # pull step: cd to this folder
    deployment: Any = flow.to_deployment(name=name, work_pool_name=WORK_POOL, description=description, tags=tags,
                                    parameters=parameters, schedules=[Cron(cron, timezone=timezone)] if cron else None)
    return UUID(str(deployment.apply()))  # create, or replace the one of that name (schedules included)


def on_demand_deployment(name: str = ON_DEMAND) -> UUID:
    """The id of the deployment that renders submitted courses, created from this project if missing."""
    from prefect.exceptions import ObjectNotFound

    try:
        with _client() as client:
            return client.read_deployment_by_name(full_name(name)).id
    except ObjectNotFound:
        pass
    except Exception as error:  # httpx and Prefect raise many kinds for a server that is not there
        raise _unreachable(error) from error
    if "/" in name and not name.startswith(f"{FLOW}/"):
        raise SubmitError(f"deployment {name} does not exist, and only deployments of {FLOW} can be created")
    return _deploy(full_name(name).split("/", 1)[1], "Render a course on demand (narro submit, dashboard retries); "
                   "only clips whose content key is not in the store are synthesised.", ["narro"])


def check_pool(pool: str = WORK_POOL) -> None:
    """Raise SubmitError unless a worker is polling `pool`: a run there would otherwise wait for ever."""
    from prefect.client.schemas.objects import WorkPoolStatus
    from prefect.exceptions import ObjectNotFound

    try:
        with _client() as client:
            status = client.read_work_pool(pool).status
    except ObjectNotFound:
        raise SubmitError(f"the Prefect server has no work pool '{pool}': start one with `narro cluster up`, "
                          f"or `prefect worker start --pool {pool} --type process`") from None
    except Exception as error:
        raise _unreachable(error) from error
    if status == WorkPoolStatus.PAUSED:
        raise SubmitError(f"work pool '{pool}' is paused: `prefect work-pool resume {pool}`")
    if status != WorkPoolStatus.READY:
        raise SubmitError(f"no worker is polling work pool '{pool}': start one with `narro cluster up`, "
                          f"or `prefect worker start --pool {pool} --type process`")


@dataclass(frozen=True)
class Run:
    id: UUID
    name: str
    pool: str
    url: str


def run_url(flow_run_id: UUID) -> str:
    """The run's page in the Prefect UI (the API's address without /api, unless PREFECT_UI_URL says otherwise)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    ui = settings.ui_url or (settings.api.url or "").removesuffix("/api")
    return f"{ui}/runs/flow-run/{flow_run_id}"


def start_run(deployment: UUID, parameters: dict[str, Any], *, name: str | None, tags: list[str]) -> Run:
    """Create a run of `deployment` with `parameters` (JSON-ready); it is queued for a worker of its pool."""
    try:
        with _client() as client:
            pool = client.read_deployment(deployment).work_pool_name or WORK_POOL
            check_pool(pool)
            flow_run = client.create_flow_run_from_deployment(deployment, parameters=parameters, name=name, tags=tags)
    except SubmitError:
        raise
    except Exception as error:
        raise _unreachable(error) from error
    return Run(flow_run.id, flow_run.name, pool, run_url(flow_run.id))


def await_pickup(run: Run, timeout_s: float = PICKUP_TIMEOUT_S) -> None:
    """Return once a worker has taken `run`; after `timeout_s` cancel it and raise SubmitError."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    deadline = time.monotonic() + timeout_s
    with _client() as client:
        while True:
            state = client.read_flow_run(run.id).state
            if state is not None and state.type != StateType.SCHEDULED:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        reason = f"no worker of work pool '{run.pool}' picked it up within {timeout_s:.0f} s"
        client.set_flow_run_state(run.id, Cancelled(message=reason), force=True)
    raise SubmitError(f"flow run {run.name} was cancelled: {reason}; is a Prefect worker polling that pool?")


def await_end(run: Run, on_poll: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Wait for the run to end; returns its final state's type (COMPLETED, FAILED, CRASHED, CANCELLED) and message."""
    with _client() as client:
        while True:
            state = client.read_flow_run(run.id).state
            if state is not None and state.is_final():
                return state.type.value, state.message or ""
            if on_poll is not None:
                on_poll(state.type.value if state is not None else "SCHEDULED")
            time.sleep(POLL_S)


def run_deployment_now(name: str, parameters: dict[str, Any], *, run_name: str | None, tags: list[str],
                       timeout_s: float = PICKUP_TIMEOUT_S) -> Run:
    """Start a run of deployment `name` and wait until a worker has it (the dashboard's retries)."""
    from prefect.exceptions import ObjectNotFound

    try:
        with _client() as client:
            deployment = client.read_deployment_by_name(full_name(name)).id
    except ObjectNotFound:
        raise SubmitError(f"the Prefect server has no deployment {full_name(name)}; "
                          "`narro submit` creates render-course/render-course") from None
    except Exception as error:
        raise _unreachable(error) from error
    run = start_run(deployment, parameters, name=run_name, tags=tags)
    await_pickup(run, timeout_s)
    return run


# --------------------------------------------------------------------------------------------- schedules

@dataclass(frozen=True)
class ScheduleInfo:
    name: str
    course: str
    cron: str
    timezone: str
    active: bool
    next_runs: list[datetime]


def check_cron(cron: str, timezone: str | None) -> None:
    """Raise SubmitError for a cron expression or time zone Prefect would refuse."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as error:
        problem = error.errors()[0]
        flag = "--timezone" if problem["loc"] and problem["loc"][0] == "timezone" else "--cron"
        value = timezone if flag == "--timezone" else cron
        raise SubmitError(f"{flag} '{value}': {problem['msg'].removeprefix('Value error, ')}") from None


def add_schedule(name: str, course: str, cron: str, timezone: str | None, parameters: dict[str, Any]) -> UUID:
    """Create or replace schedule `name`: a deployment whose runs on `cron` render with `parameters`."""
    check_cron(cron, timezone)
    try:
        return _deploy(name, f"Re-render course {course} on '{cron}': only what changed or went stale since the "
                       "last run.", ["narro", SCHEDULE_TAG, f"course:{course}"], parameters, cron, timezone)
    except SubmitError:
        raise
    except Exception as error:
        raise _unreachable(error) from error


def _next_runs(cron: str, timezone: str | None, count: int) -> list[datetime]:
    from prefect.server.schemas.schedules import CronSchedule

    return list(asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(n=count)))


def schedules(count: int = 3) -> list[ScheduleInfo]:
    """Every deployment of the course flow that has a cron schedule, with its next `count` run times."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    try:
        with _client() as client:
            deployments = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW])))
    except Exception as error:
        raise _unreachable(error) from error
    found = []
    for deployment in sorted(deployments, key=lambda d: d.name):
        tagged = next((tag.removeprefix("course:") for tag in deployment.tags if tag.startswith("course:")), None)
        for schedule in deployment.schedules:
            cron = getattr(schedule.schedule, "cron", None)
            if cron is None:
                continue
            manifest = str({**(deployment.parameters or {}), **(schedule.parameters or {})}.get("manifest", ""))
            location = parse_location(manifest)
            course = tagged or (location.course if location else manifest)
            timezone = getattr(schedule.schedule, "timezone", None) or "UTC"
            active = bool(schedule.active) and not deployment.paused
            found.append(ScheduleInfo(deployment.name, course, cron, timezone, active,
                                      _next_runs(cron, timezone, count) if active else []))
    return found


def remove_schedule(name: str) -> None:
    """Delete schedule `name` (a deployment `narro schedule add` made) and its queued runs."""
    from prefect.exceptions import ObjectNotFound

    try:
        with _client() as client:
            deployment = client.read_deployment_by_name(full_name(name))
            if SCHEDULE_TAG not in deployment.tags:
                raise SubmitError(f"{full_name(name)} was not made by `narro schedule add`; remove it with "
                                  f"`prefect deployment delete {full_name(name)}`")
            client.delete_deployment(deployment.id)
    except ObjectNotFound:
        raise SubmitError(f"no schedule named '{name}'; `narro schedule list` shows them") from None
    except SubmitError:
        raise
    except Exception as error:
        raise _unreachable(error) from error
