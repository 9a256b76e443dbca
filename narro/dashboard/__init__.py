"""The narro dashboard: see every clip of a course, listen, and retry the failed ones.

`build_app` assembles the web app; `serve` checks the bind rules and runs it with uvicorn.
"""

from __future__ import annotations

from pathlib import Path

from narro.catalogue import Catalogue
from narro.dashboard.overview import Manifests
from narro.dashboard.retry import Launcher
from narro.dashboard.security import Guard, check_bind, is_loopback
from narro.post import PostSettings
from narro.settings import Settings
from narro.store import open_store

__all__ = ["build_app", "serve"]


def build_app(catalogue_url: str, store_url: str, manifests: list[Path], launcher: Launcher, *,
              host: str = "127.0.0.1", token: str | None = None, mode: str = "",
              endpoint_url: str | None = None, post: PostSettings | None = None):  # noqa: ANN201 (Starlette)
    """The dashboard app over a catalogue and store, watching `manifests` (files or folders) for staleness."""
    from narro.dashboard.app import create_app

    check_bind(host, token)
    guard = Guard(token, loopback_only=token is None)
    return create_app(Catalogue(catalogue_url), open_store(store_url, endpoint_url), Manifests(manifests, post), launcher,
                      guard, mode)


def serve(settings: Settings, store_url: str, manifests: list[Path], launcher: Launcher, *,
          host: str = "127.0.0.1", port: int = 8080, mode: str = "") -> None:
    """Run the dashboard until interrupted, with the CLI's settings. Raises DashboardError for an unsafe bind."""
    import uvicorn

    secret = settings.dashboard.token
    app = build_app(settings.catalogue.url, store_url, manifests, launcher, host=host, mode=mode,
                    token=secret.get_secret_value() if secret else None, endpoint_url=settings.s3.endpoint_url,
                    post=PostSettings.of(settings))
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False,
                proxy_headers=False, access_log=False)
    app.state.dashboard.retries.shutdown(wait=False)


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + ("" if is_loopback(host) else "  (token required)")
