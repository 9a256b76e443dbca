"""How the dashboard starts a retry: the course flow in this process, or a run of its deployment.

Embedded (the default): `render_course` runs on the dashboard's retry thread, against the
ephemeral Prefect API or the one PREFECT_API_URL names. With a Prefect server and workers,
set PREFECT_API_URL and NARRO_RETRY_DEPLOYMENT (e.g. `render-course/narro`): the dashboard
then only creates a flow run of that deployment, and a worker renders it.
"""

from __future__ import annotations

import os

from narro.dashboard.retry import Launcher, RetryRequest
from narro.errors import DashboardError

DEPLOYMENT_ENV = "NARRO_RETRY_DEPLOYMENT"


def parameters(request: RetryRequest) -> dict:
    return {
        "manifest": request.manifest, "store": request.store, "catalogue": request.catalogue,
        "run_id": request.run_id, "only": request.only, "voice": request.voice, "tier": request.tier,
    }


def run_embedded(request: RetryRequest) -> None:
    """Render the clips here and now; returns when the flow has finished."""
    from flows.render_course import render_course

    render_course(**parameters(request))


def deployment_launcher(name: str) -> Launcher:
    """A launcher that creates a run of deployment `name` (FLOW/DEPLOYMENT) and returns at once."""

    def run_deployment_for(request: RetryRequest) -> None:
        from prefect.deployments import run_deployment

        run_deployment(name=name, parameters=parameters(request), timeout=0,
                       flow_run_name=f"retry-{request.course}-{request.run_id}",
                       tags=["narro", "retry", f"course:{request.course}"])

    return run_deployment_for


def launcher_from_env() -> tuple[Launcher, str]:
    """The launcher the environment asks for, and a line that says which it is."""
    name = os.environ.get(DEPLOYMENT_ENV)
    if name:
        if not os.environ.get("PREFECT_API_URL"):
            raise DashboardError(f"{DEPLOYMENT_ENV} is set but PREFECT_API_URL is not: a deployment needs a Prefect server")
        return deployment_launcher(name), f"retries run as deployment {name} on {os.environ['PREFECT_API_URL']}"
    return run_embedded, "retries run in this process"
