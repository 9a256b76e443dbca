"""`narro cluster up | status | env | down`: a local cluster of real services (narro.cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click

from narro import cluster, procs
from narro.errors import ClusterError

DEFAULT_STATE_DIR = Path("~/.local/state/narro/cluster")
state_option = click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), default=str(DEFAULT_STATE_DIR),
    show_default=True, help="Where the cluster keeps its state file, logs and data.")


def _fail(error: ClusterError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(2)


@click.group(name="cluster")
def cluster_group() -> None:
    """Run narro on real distributed services: Prefect server on PostgreSQL, Dask workers, S3."""


@cluster_group.command()
@state_option
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, 64), help="CPU Dask workers.")
@click.option("--gpu-workers", default=0, show_default=True, type=click.IntRange(0, 64),
              help="Dask workers offering GPU=1 (clips of engines that need a GPU run only there).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64), help="Clips at once per worker.")
@click.option("--postgres", default="postgresql://postgres@127.0.0.1:5432", show_default=True, metavar="URL",
              help="PostgreSQL server for the Prefect database (narro_prefect) and the catalogue (narro).")
@click.option("--db-prefix", default="narro", show_default=True, metavar="NAME",
              help="Databases NAME_prefect (Prefect) and NAME (catalogue) on that server.")
@click.option("--s3", is_flag=True, help="Also start a SeaweedFS S3 endpoint with a 'narro' bucket.")
@click.option("--detach", is_flag=True, help="Return once the cluster is up; `narro cluster down` stops it.")
def up(state_dir: Path, workers: int, gpu_workers: int, threads: int, postgres: str, db_prefix: str, s3: bool,
       detach: bool) -> None:
    """Start the cluster and keep it up until Ctrl-C (or `narro cluster down`)."""
    state_dir = state_dir.expanduser()
    if cluster.state_path(state_dir).exists():
        try:
            running = cluster.read_state(state_dir)
        except ClusterError:
            running = None
        if running is not None and procs.alive(running.supervisor_pid):
            _fail(ClusterError(f"a cluster is already running from {state_dir} (supervisor {running.supervisor_pid}); "
                               "`narro cluster down` first"))
        cluster.state_path(state_dir).unlink()
    if detach:
        _detach(state_dir, sys.argv)
        return
    config = cluster.ClusterConfig(state_dir, postgres=postgres, workers=workers, gpu_workers=gpu_workers,
                                   threads_per_worker=threads, s3=s3, database_prefix=db_prefix)

    def ready(state: cluster.ClusterState) -> None:
        _print_status(cluster.status(state_dir))
        click.echo(f'Cluster up. Point narro at it with: eval "$(narro cluster env --state-dir {state_dir})"', err=True)

    try:
        cluster.supervise(config, ready)
    except ClusterError as error:
        _fail(error)


def _detach(state_dir: Path, argv: list[str]) -> None:
    """Run `up` again without --detach in a session of its own, and wait until its state file appears."""
    command = [sys.executable, "-m", "narro.cli", *[arg for arg in argv[1:] if arg != "--detach"]]
    log = state_dir / "logs" / "supervisor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        supervisor = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
    deadline = time.monotonic() + cluster.START_TIMEOUT_S * 2
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            _fail(ClusterError(f"the cluster did not start (exit {supervisor.returncode}); see {log}"))
        if cluster.state_path(state_dir).exists():
            _print_status(cluster.status(state_dir))
            return
        time.sleep(0.5)
    _fail(ClusterError(f"the cluster did not come up in time; see {log}"))


@cluster_group.command()
@state_option
@click.option("--json", "as_json", is_flag=True, help="Print the processes as JSON.")
def status(state_dir: Path, as_json: bool) -> None:
    """Each process of the cluster: role, name, address, PID, alive."""
    try:
        rows = cluster.status(state_dir.expanduser())
    except ClusterError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _print_status(rows)
    if not all(row["alive"] for row in rows):
        sys.exit(1)


def _print_status(rows: list[dict[str, object]]) -> None:
    for row in rows:
        state = "up" if row["alive"] else "DOWN"
        click.echo(f"{row['role']:<16} {row['name']:<22} {state:<5} pid {row['pid']:<8} {row['address']}")


@cluster_group.command()
@state_option
def env(state_dir: Path) -> None:
    """`export` lines pointing narro and Prefect at the cluster: eval "$(narro cluster env)"."""
    try:
        click.echo("\n".join(cluster.env_lines(state_dir.expanduser())))
    except ClusterError as error:
        _fail(error)


@cluster_group.command()
@state_option
def down(state_dir: Path) -> None:
    """Stop every process of the cluster."""
    try:
        cluster.down(state_dir.expanduser())
    except ClusterError as error:
        _fail(error)
    click.echo("cluster stopped")
