"""The Prefect API a command talks to: the configured server, or a private one that dies with us.

Without PREFECT_API_URL, Prefect starts an ephemeral API server as a plain child process; when
the command is killed (SIGKILL, or a SIGTERM it does not get to handle) that server lives on,
orphaned (seen: still running 40 minutes after `narro render` was killed). So narro starts the
same server itself (Prefect's own app factory under uvicorn, on a free loopback port) under
narro.procs' guard, which stops it, and anything it started, when this process dies.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from narro import procs
from narro.errors import NarroError

START_TIMEOUT_S = 60.0


def quiet_prefect(verbose: bool = False) -> None:
    """Call before Prefect is first imported (it reads these then): its logs go to the run's log file, and
    it reports nothing home. Values the user set win."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def configured_api_url() -> str | None:
    """PREFECT_API_URL as Prefect itself resolves it (environment or Prefect profile)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def prefect_api(log_dir: Path) -> Iterator[str]:
    """Use the configured Prefect API, or run a private one for the duration of the block."""
    configured = configured_api_url()
    if configured:
        yield configured
        return
    import prefect
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
               "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "error"]
    # The same switches Prefect's own ephemeral server sets: API only, services for one client.
    env = procs.inherited_env({"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                               "PREFECT__SERVER_FINAL": "1"})
    server = procs.spawn(command, log=log_dir / "prefect-api.log", env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise NarroError(f"the local Prefect API did not start; see {log_dir / 'prefect-api.log'}")
            time.sleep(0.2)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                from prefect.logging.handlers import APILogWorker

                APILogWorker.drain_all(timeout=5)  # queued run logs go out while the server still answers
    finally:
        procs.stop(server)
