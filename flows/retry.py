"""How the dashboard starts a retry: the course flow in this process, or a run of its deployment.

Embedded (the default): `render_course` runs on the dashboard's retry thread, against the
Prefect API that Prefect's settings name (PREFECT_API_URL), else a private one started for the
retry under narro.procs' guard, so that killing the dashboard leaves no server behind. With a
Prefect server and workers, set PREFECT_API_URL and the `dashboard.retry_deployment` setting
(NARRO_RETRY_DEPLOYMENT, e.g. `render-course/render-course`): the dashboard then creates a flow run
of that deployment and waits until a worker takes it; a run no worker takes within a minute is
cancelled and the retry reported as failed (narro.submit). Either way the flow gets the
dashboard's settings.
"""

from __future__ import annotations

from functools import partial

from narro.dashboard.retry import Launcher, RetryRequest
from narro.errors import DashboardError
from narro.settings import Settings, env_name


def parameters(request: RetryRequest, settings: Settings | None) -> dict:
    return {
        "manifest": request.manifest, "store": request.store, "catalogue": request.catalogue,
        "run_id": request.run_id, "only": request.only, "voice": request.voice, "tier": request.tier,
        "settings": settings,
    }


def run_embedded(request: RetryRequest, settings: Settings | None = None) -> None:
    """Render the clips here and now; returns when the flow has finished."""
    from flows.render_course import render_course
    from narro.prefect_api import prefect_api

    with prefect_api((settings or Settings()).log.dir):  # entered on this thread: Prefect's settings are per context
        render_course(**parameters(request, settings))


def deployment_launcher(name: str, settings: Settings, pickup_timeout_s: float | None = None) -> Launcher:
    """A launcher that creates a run of deployment `name` (FLOW/DEPLOYMENT) and returns once a worker has it.

    It raises SubmitError (the dashboard shows it, and marks the clips failed) when the pool has no
    live worker, or when no worker takes the run within `pickup_timeout_s` (default: a minute).
    """

    def run_deployment_for(request: RetryRequest) -> None:
        from narro import submit

        # As JSON: the Prefect API stores a run's parameters (the dump leaves secrets out).
        arguments = {**parameters(request, None), "settings": settings.model_dump(mode="json")}
        submit.run_deployment_now(name, arguments, run_name=f"retry-{request.course}-{request.run_id}",
                                  tags=["narro", "retry", f"course:{request.course}"],
                                  timeout_s=pickup_timeout_s or submit.PICKUP_TIMEOUT_S)

    return run_deployment_for


def launcher_for(settings: Settings) -> tuple[Launcher, str]:
    """The launcher the settings ask for, and a line that says which it is."""
    from prefect.settings import get_current_settings

    name = settings.dashboard.retry_deployment
    if name:
        api = get_current_settings().api.url
        if not api:
            raise DashboardError(f"{env_name('dashboard', 'retry_deployment')} is set but PREFECT_API_URL is not: "
                                 "a deployment needs a Prefect server")
        return deployment_launcher(name, settings), f"retries run as deployment {name} on {api}"
    return partial(run_embedded, settings=settings), "retries run in this process"
