"""A local cluster of real services: Prefect server on PostgreSQL, Dask, workers, optional S3.

`narro cluster up` starts, each under a guard (narro.procs) so none outlives it:

- a Prefect server whose database is a PostgreSQL database of its own (SQLite locks up under
  several writers: back-to-back runs slowed from 3 s to 17 s with `database is locked`);
- a Dask scheduler and `workers` CPU workers, plus `gpu_workers` started with `--resources GPU=1`
  (clips of engines that declare `resources = {"GPU": 1}` run only there);
- a Prefect process worker on the `narro-cpu` work pool, for deployments (submit, schedules,
  dashboard retries);
- with `s3`, a SeaweedFS S3 endpoint with its own credentials and a `narro` bucket.

What it started is written to a state file (`status`, `env` and `down` read it). The command
that ran `up` stays the services' supervisor: it starts a service that exits again on its own
address (a crashed Prefect server comes back where runs and workers look for it; Dask workers are
left to Dask), stops them all
on SIGTERM/SIGINT, and if it is killed outright, the guards stop them.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from narro import procs
from narro.errors import ClusterError

STATE_FILENAME = "cluster.json"
WORK_POOL = "narro-cpu"
S3_BUCKET = "narro"
START_TIMEOUT_S = 120.0
"""Prefect's first start runs its migrations (15 s here) and SeaweedFS took 20 s under load."""


@dataclass(frozen=True)
class ClusterConfig:
    state_dir: Path
    """Where the state file, service logs, the Dask worker space and S3 data live."""
    postgres: str = "postgresql://postgres@127.0.0.1:5432"
    """PostgreSQL server for the Prefect database and the catalogue (no database name)."""
    workers: int = 2
    gpu_workers: int = 0
    threads_per_worker: int = 1
    s3: bool = False
    host: str = "127.0.0.1"
    database_prefix: str = "narro"
    """Databases `{prefix}_prefect` (Prefect's) and `{prefix}` (the catalogue) are created if missing."""


RESTARTED_ROLES = frozenset({"prefect-server", "dask-scheduler", "prefect-worker", "s3"})
"""Services started again when they exit. Not Dask workers: Dask re-runs a lost worker's tasks on the
others, and a new worker under the dead one's name raced that recovery (a clip left unfinished)."""
MAX_RESTARTS = 3
RESTART_WINDOW_S = 600.0
"""A service that exits is started again (a crashed Prefect server or worker comes back on its
address, so runs and workers reconnect), unless it exited MAX_RESTARTS times in the window."""


@dataclass(frozen=True)
class _Launch:
    command: list[str]
    env: dict[str, str]
    stop_signal: int
    ready: Callable[[], bool]


@dataclass
class ServiceRecord:
    role: str
    name: str
    pid: int
    address: str
    log: str


@dataclass
class ClusterState:
    supervisor_pid: int
    started_at: float
    env: dict[str, str]
    services: list[ServiceRecord] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        data = json.loads(text)
        return cls(data["supervisor_pid"], data["started_at"], data["env"],
                   [ServiceRecord(**service) for service in data["services"]])


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILENAME


def read_state(state_dir: Path) -> ClusterState:
    path = state_path(state_dir)
    try:
        return ClusterState.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClusterError(f"no cluster is running from {state_dir} (no {STATE_FILENAME}); start one with `narro cluster up`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"{path}: not a narro cluster state file ({exc}); remove it and run `narro cluster up`") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_grpc_port(host: str = "127.0.0.1") -> int:
    """A free port whose +10000 sibling is free too (SeaweedFS puts its gRPC port there)."""
    for _ in range(200):
        port = secrets.randbelow(15_000) + 15_000
        if _port_free(host, port) and _port_free(host, port + 10_000):
            return port
    raise ClusterError("no free port pair for SeaweedFS between 15000 and 40000")


def _bin(name: str) -> str:
    """A console script of this environment (prefect, dask, weed), wherever narro runs from."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return str(candidate)
    raise ClusterError(f"'{name}' is not installed beside {sys.executable}; reinstall narro (pip install -e .)")


def _database_url(postgres: str, database: str, driver: str) -> str:
    scheme, rest = postgres.split("://", 1)
    return f"{scheme.split('+')[0]}+{driver}://{rest.rstrip('/')}/{database}"


async def _ensure_databases(postgres: str, names: list[str]) -> None:
    import asyncpg

    connection = await asyncpg.connect(_database_url(postgres, "postgres", "x").replace("postgresql+x", "postgresql"))
    try:
        for name in names:
            if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def ensure_databases(postgres: str, names: list[str]) -> None:
    try:
        asyncio.run(_ensure_databases(postgres, names))
    except (OSError, Exception) as exc:  # asyncpg raises its own hierarchy for refused logins
        raise ClusterError(f"cannot prepare PostgreSQL databases {', '.join(names)} on {postgres}: {exc}") from exc


def _wait_until(ready: Callable[[], bool], process: Any, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterError(f"{what} exited at start (code {process.returncode}); see {log}")
        if ready():
            return
        time.sleep(0.3)
    raise ClusterError(f"{what} did not answer within {START_TIMEOUT_S:.0f} s; see {log}")


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(200 <= response.status < 300)
        except (urllib.error.URLError, OSError):
            return False
    return check


def _tcp_open(host: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False
    return check


class Cluster:
    """Starts the services in order, recording each; `stop_all` stops them in reverse order."""

    def __init__(self, config: ClusterConfig):
        self.config = config
        self.processes: list[tuple[ServiceRecord, Any]] = []
        self.launches: dict[str, _Launch] = {}
        self.env: dict[str, str] = {}
        self.state = ClusterState(os.getpid(), time.time(), {})
        config.state_dir.mkdir(parents=True, exist_ok=True)

    def _log(self, name: str) -> Path:
        return self.config.state_dir / "logs" / f"{name}.log"

    def _start(self, role: str, name: str, command: list[str], address: str, ready: Callable[[], bool],
               env: dict[str, str] | None = None, stop_signal: int = signal.SIGTERM) -> None:
        launch = _Launch(command, procs.inherited_env(env or {}), stop_signal, ready)
        log = self._log(name)
        process = procs.spawn(command, log=log, env=launch.env, stop_signal=stop_signal)
        record = ServiceRecord(role, name, process.pid, address, str(log))
        self.processes.append((record, process))
        self.launches[name] = launch
        _wait_until(ready, process, f"{role} {name}", log)

    def restart(self, record: ServiceRecord) -> None:
        """Start a service that exited again, as it was started (same command, port and environment)."""
        launch = self.launches[record.name]
        index = next(i for i, (known, _) in enumerate(self.processes) if known is record)
        process = procs.spawn(launch.command, log=Path(record.log), env=launch.env, stop_signal=launch.stop_signal)
        record.pid = process.pid
        self.processes[index] = (record, process)
        _wait_until(launch.ready, process, f"{record.role} {record.name}", Path(record.log))
        self.write_state()

    def write_state(self) -> None:
        """The state file `status`, `env` and `down` read, replaced whole."""
        temporary = state_path(self.config.state_dir).with_suffix(".tmp")
        temporary.write_text(self.state.to_json(), encoding="utf-8")
        temporary.replace(state_path(self.config.state_dir))

    def up(self) -> ClusterState:
        config = self.config
        host = config.host
        prefix = config.database_prefix
        ensure_databases(config.postgres, [f"{prefix}_prefect", prefix])
        catalogue = _database_url(config.postgres, prefix, "psycopg")
        prefect_home = config.state_dir / "prefect"
        api_port = free_port(host)
        api_url = f"http://{host}:{api_port}/api"
        prefect_env = {
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_API_DATABASE_CONNECTION_URL": _database_url(config.postgres, f"{prefix}_prefect", "asyncpg"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
        }
        self._start("prefect-server", "prefect-server",
                    [_bin("prefect"), "server", "start", "--host", host, "--port", str(api_port), "--no-ui"],
                    api_url, _http_ok(f"{api_url}/health"), prefect_env)

        scheduler_port = free_port(host)
        scheduler = f"tcp://{host}:{scheduler_port}"
        self._start("dask-scheduler", "dask-scheduler",
                    [_bin("dask"), "scheduler", "--host", host, "--port", str(scheduler_port),
                     "--dashboard-address", f"{host}:{free_port(host)}"],
                    scheduler, _tcp_open(host, scheduler_port))

        self.env = {
            "PREFECT_API_URL": api_url,
            "NARRO_CLUSTER_SCHEDULER": scheduler,
            "NARRO_CATALOGUE": catalogue,
        }
        if config.s3:
            self.env.update(self._start_s3())
        worker_env = {**self.env, "PREFECT_HOME": str(prefect_home)}
        space = config.state_dir / "dask-space"
        for index in range(config.workers + config.gpu_workers):
            gpu = index >= config.workers
            name = f"{'gpu' if gpu else 'cpu'}-worker-{index + 1}"
            command = [_bin("dask"), "worker", scheduler, "--name", name, "--nthreads", str(config.threads_per_worker),
                       "--nworkers", "1", "--no-nanny", "--local-directory", str(space)]
            if gpu:
                command += ["--resources", "GPU=1"]
            self._start("dask-worker-gpu" if gpu else "dask-worker", name, command, scheduler,
                        self._worker_joined(scheduler, name), worker_env)
        self._start("prefect-worker", "prefect-worker",
                    [_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
                     "--name", "narro-process-worker"],
                    WORK_POOL, self._pool_has_worker(api_url),
                    # The runs it starts send their clips to the Dask workers (flows/render_course.py).
                    {**worker_env, "PREFECT_WORKER_QUERY_SECONDS": "2", "NARRO_CLUSTER_MODE": "cluster"},
                    stop_signal=signal.SIGINT)  # it ignores one SIGTERM for over 15 s
        self.state = ClusterState(os.getpid(), time.time(), self.env, [record for record, _ in self.processes])
        self.write_state()
        return self.state

    def _worker_joined(self, scheduler: str, name: str) -> Callable[[], bool]:
        def check() -> bool:
            from distributed import Client

            try:
                with Client(scheduler, timeout=3) as client:
                    return any(info.get("name") == name for info in client.scheduler_info()["workers"].values())
            except OSError:
                return False
        return check

    def _pool_has_worker(self, api_url: str) -> Callable[[], bool]:
        def check() -> bool:
            request = urllib.request.Request(f"{api_url}/work_pools/{WORK_POOL}/workers/filter", data=b"{}",
                                             headers={"Content-Type": "application/json"}, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    return bool(json.loads(response.read()))
            except (urllib.error.URLError, OSError, ValueError):
                return False
        return check

    def _start_s3(self) -> dict[str, str]:
        host = self.config.host
        key, secret = "narro", secrets.token_hex(16)
        identities = self.config.state_dir / "s3-identities.json"
        identities.write_text(json.dumps({"identities": [{"name": "narro", "credentials": [
            {"accessKey": key, "secretKey": secret}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        identities.chmod(0o600)
        data = self.config.state_dir / "s3-data"
        data.mkdir(exist_ok=True)
        ports = {name: free_grpc_port(host) for name in ("s3", "master", "volume", "filer")}
        endpoint = f"http://{host}:{ports['s3']}"
        self._start("s3", "seaweedfs",
                    [_bin("weed"), "server", "-ip", host, "-ip.bind", host, "-dir", str(data),
                     "-master.port", str(ports["master"]), "-volume.port", str(ports["volume"]),
                     "-filer", "-filer.port", str(ports["filer"]), "-s3", "-s3.port", str(ports["s3"]),
                     "-s3.config", str(identities),
                     # Its Iceberg and Lance endpoints have fixed ports that clash with any other SeaweedFS.
                     "-s3.port.iceberg", "0", "-s3.port.lance", "0"],
                    endpoint, _tcp_open(host, ports["s3"]), stop_signal=signal.SIGKILL)  # it ignores SIGTERM
        env = {"NARRO_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
               "AWS_DEFAULT_REGION": "us-east-1", "NARRO_STORE_URL": f"s3://{S3_BUCKET}/courses"}
        self._create_bucket(endpoint, key, secret)
        return env

    @staticmethod
    def _create_bucket(endpoint: str, key: str, secret: str) -> None:
        import boto3
        import botocore.exceptions

        client = boto3.session.Session().client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                                                aws_secret_access_key=secret, region_name="us-east-1")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.create_bucket(Bucket=S3_BUCKET)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)  # the filer answers before its volume server has registered

    def stop_all(self) -> None:
        for _record, process in reversed(self.processes):
            procs.stop(process)
        state_path(self.config.state_dir).unlink(missing_ok=True)


def supervise(config: ClusterConfig, on_ready: Callable[[ClusterState], None]) -> None:
    """Start the cluster, call `on_ready`, and keep it up until SIGTERM/SIGINT; then stop it all."""
    cluster = Cluster(config)
    stop_requested = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        state = cluster.up()
        on_ready(state)
        restarts: dict[str, list[float]] = {}
        while not stop_requested:
            for record, process in list(cluster.processes):
                if stop_requested or process.poll() is None:
                    continue
                print(f"narro cluster: {record.role} {record.name} exited (code {process.returncode}); "
                      f"see {record.log}", file=sys.stderr)
                if record.role not in RESTARTED_ROLES:
                    cluster.processes.remove((record, process))
                    continue
                recent = [at for at in restarts.get(record.name, []) if at > time.monotonic() - RESTART_WINDOW_S]
                if len(recent) >= MAX_RESTARTS:
                    print(f"narro cluster: {record.name} exited {MAX_RESTARTS} times in {RESTART_WINDOW_S:.0f} s; "
                          "left stopped", file=sys.stderr)
                    cluster.processes.remove((record, process))
                    continue
                restarts[record.name] = [*recent, time.monotonic()]
                try:
                    cluster.restart(record)
                    print(f"narro cluster: restarted {record.name} (pid {record.pid})", file=sys.stderr)
                except ClusterError as error:
                    print(f"narro cluster: {error}", file=sys.stderr)
            time.sleep(0.5)
    finally:
        cluster.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def status(state_dir: Path) -> list[dict[str, object]]:
    state = read_state(state_dir)
    rows = [{"role": "supervisor", "name": "narro cluster up", "address": "", "pid": state.supervisor_pid,
             "alive": procs.alive(state.supervisor_pid)}]
    rows += [{**asdict(service), "alive": procs.alive(service.pid)} for service in state.services]
    return rows


def env_lines(state_dir: Path) -> list[str]:
    state = read_state(state_dir)
    if not procs.alive(state.supervisor_pid):
        raise ClusterError(f"the cluster recorded in {state_path(state_dir)} is not running (supervisor "
                           f"{state.supervisor_pid} is gone); start it with `narro cluster up`")
    return [f"export {name}={shlex.quote(value)}" for name, value in sorted({**state.env, "NARRO_CLUSTER_MODE": "cluster"}.items())]


def down(state_dir: Path) -> None:
    """Stop the cluster's supervisor (which stops every service), and any service it left behind."""
    state = read_state(state_dir)
    procs.stop_pid(state.supervisor_pid, timeout_s=60)
    for service in state.services:
        if procs.alive(service.pid):
            procs.stop_pid(service.pid)
    state_path(state_dir).unlink(missing_ok=True)
