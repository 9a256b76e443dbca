"""Cluster mode against real processes: `narro cluster up` (Prefect server on PostgreSQL, a Dask
scheduler, CPU and GPU-role workers, a Prefect process worker), renders spread across workers,
GPU routing, a worker killed mid-render, overlapping runs, and no orphaned processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import write_manifest
from tests.test_engines import TONE_ENGINE, install

NARRO = Path(sys.executable).parent / "narro"
GPU_TONE_ENGINE = TONE_ENGINE.replace('    name = "tone"', '    name = "gpu-tone"\n    resources = {"GPU": 1}')
assert GPU_TONE_ENGINE != TONE_ENGINE

VOICES = """default: narrator
voices:
  narrator:
    fast: {engine: piper, model: joe-us-medium}
  gpu:
    fast: {engine: gpu-tone, model: sine, tone_hz: 330}
"""
SENTENCES = ["The codec turns audio into tokens.", "A model predicts the next token.",
             "The decoder turns tokens into sound.", "Each voice is prompted, not trained.",
             "Loudness is normalised before publishing.", "Every clip carries a watermark."]


def course(slug: str, gpu_clips: int = 0, clips: int = len(SENTENCES)) -> str:
    lines = [f"course: {slug}", "title: Cluster test", "narrations:"]
    for index, sentence in enumerate(SENTENCES[:clips]):
        lines += [f"  - id: c{index + 1:02d}", f"    text: {sentence}"]
    for index in range(gpu_clips):
        lines += [f"  - id: g{index + 1:02d}", "    voice: gpu", "    text: Hello from the graphics card."]
    return "\n".join(lines) + "\n"


def children(pid: int) -> list[int]:
    """Children of every thread of `pid` (a child started from a thread is listed under that thread only)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int], timeout_s: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.3)
    return [pid for pid in pids if alive(pid)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(tmp_path_factory.mktemp("site"), "narro-gpu-tone", {"narro_gpu_tone": GPU_TONE_ENGINE},
                   {"gpu-tone": "narro_gpu_tone:ToneKind"})


@pytest.fixture(scope="module")
def base_env(site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    logs = tmp_path_factory.mktemp("logs")
    return {**os.environ, "PYTHONPATH": str(site), "NARRO_QA_ASR": "false", "NARRO_LOG_DIR": str(logs),
            "PREFECT_LOGGING_LEVEL": "WARNING"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, base_env: dict[str, str]):
    state = tmp_path_factory.mktemp("cluster")
    prefix = f"narro_test_{uuid.uuid4().hex[:8]}"
    up = subprocess.run([str(NARRO), "cluster", "up", "--detach", "--state-dir", str(state), "--workers", "2",
                         "--gpu-workers", "1", "--db-prefix", prefix, "--s3"], env=base_env, capture_output=True, text=True,
                        timeout=400)
    assert up.returncode == 0, up.stdout + up.stderr
    exported = subprocess.run([str(NARRO), "cluster", "env", "--state-dir", str(state)], env=base_env,
                              capture_output=True, text=True, check=True).stdout
    env = dict(base_env)
    for line in exported.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    yield {"state": state, "env": env}
    subprocess.run([str(NARRO), "cluster", "down", "--state-dir", str(state)], env=base_env, timeout=120)


def status(cluster: dict) -> list[dict]:
    shown = subprocess.run([str(NARRO), "cluster", "status", "--json", "--state-dir", str(cluster["state"])],
                           env=cluster["env"], capture_output=True, text=True, timeout=60)
    return json.loads(shown.stdout)


def worker_pids(cluster: dict, role: str) -> list[int]:
    """The Dask worker processes themselves (each runs under a guard, whose child it is)."""
    return [child for row in status(cluster) if row["role"] == role for child in children(row["pid"])]


def restarted(cluster: dict, service: dict, timeout_s: float = 180) -> bool:
    """Whether the supervisor started `service` (a `cluster status` row) again: its role alive under a new PID."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = next(row for row in status(cluster) if row["role"] == service["role"])
        if now["pid"] != service["pid"] and now["alive"]:
            return True
        time.sleep(0.5)
    return False


def sidecars(store: Path, slug: str) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in (store / slug).glob("*.json") if path.stem != "index"}


def test_cluster_status_lists_every_process_and_env_points_at_it(cluster: dict):
    roles = [row["role"] for row in status(cluster)]
    assert roles.count("dask-worker") == 2 and roles.count("dask-worker-gpu") == 1
    assert {"supervisor", "prefect-server", "dask-scheduler", "prefect-worker"} <= set(roles)
    assert cluster["env"]["NARRO_CLUSTER_MODE"] == "cluster"
    assert cluster["env"]["PREFECT_API_URL"].startswith("http://127.0.0.1:")


def test_a_course_spreads_over_workers_and_gpu_clips_run_only_on_the_gpu_worker(cluster: dict, tmp_path: Path):
    manifest = write_manifest(tmp_path / "course", course("spread", gpu_clips=2), VOICES)
    store = tmp_path / "store"
    result = subprocess.run([str(NARRO), "render", str(manifest), "--store", str(store)], env=cluster["env"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    records = sidecars(store, "spread")
    assert len(records) == len(SENTENCES) + 2
    pid_of = {name: int(record["worker"].rsplit(":", 1)[1]) for name, record in records.items()}
    gpu = set(worker_pids(cluster, "dask-worker-gpu"))
    assert {pid_of["g01"], pid_of["g02"]} <= gpu, (pid_of, gpu)
    workers = set(worker_pids(cluster, "dask-worker")) | gpu
    assert set(pid_of.values()) <= workers
    assert len(set(pid_of.values())) >= 2, f"every clip ran in one process: {pid_of}"


def test_two_renders_of_one_course_at_once_synthesise_each_clip_once(base_env: dict[str, str], tmp_path: Path):
    manifest = write_manifest(tmp_path / "course", course("overlap"), VOICES)
    store = tmp_path / "store"
    env = {**base_env, "NARRO_CATALOGUE": f"sqlite:///{tmp_path / 'catalogue.db'}"}
    command = [str(NARRO), "render", str(manifest), "--store", str(store), "--concurrency", "1"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = [process.communicate(timeout=600)[0] for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    from narro.catalogue import Catalogue

    catalogue = Catalogue(env["NARRO_CATALOGUE"])
    history = catalogue.course_attempts("overlap")
    assert {clip: len(attempts) for clip, attempts in history.items()} == {
        f"c{i + 1:02d}": 1 for i in range(len(SENTENCES))}
    assert all(state.status == "rendered" for state in catalogue.clips("overlap"))


def test_a_killed_render_leaves_no_process_behind_and_its_clips_show_interrupted(base_env: dict[str, str],
                                                                                 tmp_path: Path):
    manifest = write_manifest(tmp_path / "course", course("killed"), VOICES)
    store = tmp_path / "store"
    env = {**base_env, "NARRO_CATALOGUE": f"sqlite:///{tmp_path / 'catalogue.db'}", "NARRO_CLUSTER_LEASE_TTL_S": "6"}
    render = subprocess.Popen([str(NARRO), "render", str(manifest), "--store", str(store), "--concurrency", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from narro.catalogue import Catalogue

    catalogue = Catalogue(env["NARRO_CATALOGUE"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(c.status == "running" for c in catalogue.clips("killed")):
        time.sleep(0.3)
    assert any(c.status == "running" for c in catalogue.clips("killed")), "the render never started a clip"
    started = descendants(render.pid)
    assert started, "narro render started no Prefect API process"
    render.send_signal(signal.SIGKILL)
    render.wait()
    assert wait_gone(started) == [], "processes outlived a killed `narro render`"
    time.sleep(7)
    statuses = {c.narration_id: c.status for c in catalogue.clips("killed")}
    assert "interrupted" in statuses.values() and "running" not in statuses.values(), statuses
    again = subprocess.run([str(NARRO), "render", str(manifest), "--store", str(store)], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {c.status for c in catalogue.clips("killed")} == {"rendered"}


def test_a_worker_killed_mid_render_still_publishes_every_clip_once(cluster: dict, tmp_path: Path):
    manifest = write_manifest(tmp_path / "course", course("worker-killed"), VOICES)
    store = tmp_path / "store"
    render = subprocess.Popen([str(NARRO), "render", str(manifest), "--store", str(store)], env=cluster["env"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    from narro.catalogue import Catalogue

    catalogue = Catalogue(cluster["env"]["NARRO_CATALOGUE"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(c.status in ("running", "rendered")
                                                  for c in catalogue.clips("worker-killed")):
        time.sleep(0.2)
    victim = worker_pids(cluster, "dask-worker")[0]
    os.kill(victim, signal.SIGKILL)
    output = render.communicate(timeout=600)[0]
    assert render.returncode == 0, output
    records = sidecars(store, "worker-killed")
    assert sorted(records) == [f"c{i + 1:02d}" for i in range(len(SENTENCES))]
    index = json.loads((store / "worker-killed" / "index.json").read_text())
    assert len(index["clips"]) == len(SENTENCES)
    leftovers = [path.name for path in (store / "worker-killed").iterdir()
                 if path.suffix not in (".mp3", ".json", ".vtt", ".srt", ".html")]
    assert leftovers == [], f"partial files in the store: {leftovers}"


def test_a_prefect_server_crash_mid_render_loses_nothing_and_renders_nothing_twice(cluster: dict, tmp_path: Path):
    manifest = write_manifest(tmp_path / "course", course("server-crash"), VOICES)
    store = tmp_path / "store"
    command = [str(NARRO), "render", str(manifest), "--store", str(store)]
    render = subprocess.Popen(command, env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    from narro.catalogue import Catalogue

    catalogue = Catalogue(cluster["env"]["NARRO_CATALOGUE"])
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and render.poll() is None and not list(store.glob("server-crash/*.json")):
        time.sleep(0.2)
    assert render.poll() is None, f"the render ended before any clip was published: {render.communicate()[0]}"
    server = next(row for row in status(cluster) if row["role"] == "prefect-server")
    for pid in children(server["pid"]):
        os.kill(pid, signal.SIGKILL)  # a crash: no clean shutdown
    published_before = {path.name: path.stat().st_mtime_ns for path in (store / "server-crash").glob("*.mp3")}
    assert published_before, "no clip was published before the crash"
    first = render.communicate(timeout=600)[0]
    assert restarted(cluster, server), "the supervisor did not restart the server"
    # The run either rode out the restart or stopped; a second render finishes whatever is missing.
    second = subprocess.run(command, env=cluster["env"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, first + second.stdout + second.stderr
    assert sorted(sidecars(store, "server-crash")) == [f"c{i + 1:02d}" for i in range(len(SENTENCES))]
    for name, mtime in published_before.items():
        assert (store / "server-crash" / name).stat().st_mtime_ns == mtime, f"{name} was published twice"
    assert {c.status for c in catalogue.clips("server-crash")} == {"rendered"}


def test_an_s3_crash_mid_render_in_cluster_mode_ends_with_a_summary_and_the_next_run_finishes(cluster: dict,
                                                                                                tmp_path: Path):
    """Cluster mode: the cluster's S3 server is killed after two clips; its supervisor starts it again."""
    manifest = write_manifest(tmp_path / "course", course("s3-crash", clips=4), VOICES)
    command = [str(NARRO), "render", str(manifest), "--store", "s3://narro/outage"]
    env = cluster["env"]
    render = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    from narro.catalogue import Catalogue

    catalogue = Catalogue(env["NARRO_CATALOGUE"])
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and render.poll() is None and \
            [c.status for c in catalogue.clips("s3-crash")].count("rendered") < 2:
        time.sleep(0.2)
    server = next(row for row in status(cluster) if row["role"] == "s3")
    for pid in children(server["pid"]):
        os.kill(pid, signal.SIGKILL)
    before = {c.narration_id for c in catalogue.clips("s3-crash") if c.status == "rendered"}
    assert len(before) >= 2, before
    output = render.communicate(timeout=600)[0]
    assert render.returncode in (0, 1), output
    assert "render failed" not in output and "s3-crash: run" in output, output  # a summary, not a crash
    assert restarted(cluster, server), "the supervisor did not restart the S3 server"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, output + again.stdout + again.stderr
    assert {c.status for c in catalogue.clips("s3-crash")} == {"rendered"}
    tries = attempts_per_clip(env["NARRO_CATALOGUE"], "s3-crash")
    assert all(tries[clip] == 1 for clip in before), tries  # published before the crash: not rendered again
    import boto3

    client = boto3.session.Session().client(
        "s3", endpoint_url=env["NARRO_S3_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    index = json.loads(client.get_object(Bucket="narro", Key="outage/s3-crash/index.json")["Body"].read())
    assert len(index["clips"]) == 4


def test_cluster_up_killed_outright_takes_every_service_with_it(base_env: dict[str, str], tmp_path: Path):
    state = tmp_path / "cluster"
    up = subprocess.Popen([str(NARRO), "cluster", "up", "--state-dir", str(state), "--workers", "1",
                           "--db-prefix", f"narro_test_{uuid.uuid4().hex[:8]}"], env=base_env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (state / "cluster.json").exists():
        assert up.poll() is None, "narro cluster up exited"
        time.sleep(0.5)
    started = descendants(up.pid)
    assert len(started) >= 8, started  # guards and the services under them
    up.send_signal(signal.SIGKILL)
    up.wait()
    assert wait_gone(started, timeout_s=40) == [], "services outlived a killed `narro cluster up`"


# ------------------------------------------------------------------ submit, schedules, retries, outages

def prefect_rest(api: str, method: str, path: str, body: dict | None = None) -> object:
    import httpx

    response = httpx.request(method, f"{api}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


def wait_flow_run(api: str, flow_run_id: str, timeout_s: float = 400) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = prefect_rest(api, "GET", f"/flow_runs/{flow_run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):  # type: ignore[index]
            return run  # type: ignore[return-value]
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not end within {timeout_s} s")


def attempts_per_clip(catalogue_url: str, course: str) -> dict[str, int]:
    from narro.catalogue import Catalogue

    return {clip: len(tries) for clip, tries in Catalogue(catalogue_url).course_attempts(course).items()}


def test_submit_renders_through_the_deployment_and_a_schedule_rerenders_only_the_edited_clip(cluster: dict,
                                                                                          tmp_path: Path):
    env, api = cluster["env"], cluster["env"]["PREFECT_API_URL"]
    folder = tmp_path / "course"
    body = course("submitted", clips=4).replace("    text: Each voice is prompted, not trained.",
                                                "    script: scripts/c04.md")
    manifest = write_manifest(folder, body, VOICES)
    (folder / "scripts").mkdir()
    (folder / "scripts" / "c04.md").write_text("Each voice is prompted, not trained.\n")
    store = tmp_path / "store"
    submitted = subprocess.run([str(NARRO), "submit", str(manifest), "--store", str(store)], env=env,
                               capture_output=True, text=True, timeout=600)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert f"{api.removesuffix('/api')}/runs/flow-run/" in submitted.stdout
    records = sidecars(store, "submitted")
    assert len(records) == 4
    # Rendered from the source uploaded to the store, not from the author's folder.
    assert all("/submitted/_source/" in record["manifest"]["path"] for record in records.values())
    # The run is visible in Prefect: tags by course, tier and voice, and a table of its clips.
    flow_run_id = submitted.stdout.split("/runs/flow-run/")[1].split()[0]
    run = prefect_rest(api, "GET", f"/flow_runs/{flow_run_id}")
    assert {"course:submitted", "tier:fast", "voice:narrator"} <= set(run["tags"])  # type: ignore[index]
    artifact = prefect_rest(api, "POST", "/artifacts/latest/filter",
                            {"artifacts": {"key": {"any_": ["narro-submitted"]}}})
    table = json.loads(artifact[0]["data"])  # type: ignore[index]
    assert sorted(row["clip"] for row in table) == sorted(records) and {row["status"] for row in table} == {"rendered"}
    assert all(row["audio"].endswith(f"/submitted/{row['clip']}.mp3") for row in table)

    added = subprocess.run([str(NARRO), "schedule", "add", str(manifest), "--cron", "0 3 * * *", "--name",
                            "nightly-submitted", "--store", str(store)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert added.returncode == 0, added.stdout + added.stderr
    listed = json.loads(subprocess.run([str(NARRO), "schedule", "list", "--json"], env=env, capture_output=True,
                                       text=True, timeout=300, check=True).stdout)
    mine = next(item for item in listed if item["name"] == "nightly-submitted")
    assert mine["course"] == "submitted" and mine["cron"] == "0 3 * * *" and len(mine["next_runs"]) == 3
    assert all(moment.endswith("T03:00:00+00:00") for moment in mine["next_runs"])

    # The author edits one narration and uploads again; the schedule's next run (started through
    # the REST API, as the scheduler would) re-renders that clip alone.
    manifest.write_text(manifest.read_text().replace("A model predicts the next token.",
                                                     "A model predicts the following token."))
    again = subprocess.run([str(NARRO), "schedule", "add", str(manifest), "--cron", "0 3 * * *", "--name",
                            "nightly-submitted", "--store", str(store)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    before = attempts_per_clip(env["NARRO_CATALOGUE"], "submitted")
    deployment = prefect_rest(api, "GET", "/deployments/name/render-course/nightly-submitted")
    created = prefect_rest(api, "POST", f"/deployments/{deployment['id']}/create_flow_run", {})  # type: ignore[index]
    assert wait_flow_run(api, created["id"])["state"]["type"] == "COMPLETED"  # type: ignore[index]
    after = attempts_per_clip(env["NARRO_CATALOGUE"], "submitted")
    assert {clip for clip in after if after[clip] != before.get(clip)} == {"c02"}, (before, after)
    assert "following token" in json.dumps(sidecars(store, "submitted")["c02"])

    removed = subprocess.run([str(NARRO), "schedule", "remove", "nightly-submitted"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert removed.returncode == 0, removed.stderr
    gone = subprocess.run([str(NARRO), "schedule", "remove", "nightly-submitted"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert gone.returncode == 2 and "no schedule named 'nightly-submitted'" in gone.stderr


def flow_processes(worker_pid: int, flow_run_id: str) -> list[int]:
    """The processes the Prefect worker started to run one flow run (each carries the run's id in its environment)."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    found = []
    for pid in descendants(worker_pid):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            pass
    return found


def test_a_submitted_run_whose_flow_process_is_killed_is_finished_by_a_second_submit(cluster: dict, tmp_path: Path):
    env, slug, clips = cluster["env"], "flow-killed", 24
    lines = [f"course: {slug}", "title: Flow killed", "narrations:"]
    for index in range(clips):
        first, second = SENTENCES[index % len(SENTENCES)], SENTENCES[(index + 1) % len(SENTENCES)]
        lines += [f"  - id: k{index + 1:02d}", f"    text: Part {index + 1}. {first} {second}"]
    manifest = write_manifest(tmp_path / "course", "\n".join(lines) + "\n", VOICES)
    store = tmp_path / "store"
    command = [str(NARRO), "submit", str(manifest), "--store", str(store)]
    worker = next(row for row in status(cluster) if row["role"] == "prefect-worker")
    detached = subprocess.run([*command, "--detach"], env=env, capture_output=True, text=True, timeout=300)
    assert detached.returncode == 0, detached.stdout + detached.stderr
    flow_run_id = detached.stdout.split("/runs/flow-run/")[1].split()[0]
    deadline = time.monotonic() + 400
    victims: list[int] = []
    while time.monotonic() < deadline and not (victims and sidecars(store, slug)):
        victims = victims or flow_processes(worker["pid"], flow_run_id)
        time.sleep(0.1)
    assert victims, "no process ran the flow"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    published_before = {path.name: path.stat().st_mtime_ns for path in (store / slug).glob("*.mp3")}
    assert 0 < len(published_before) < clips, f"the kill came too late to test anything: {sorted(published_before)}"
    from narro.catalogue import Catalogue

    # The dead run's leases lapse (the flow process renewed them), so its clips show interrupted, not running.
    catalogue = Catalogue(env["NARRO_CATALOGUE"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and {"pending", "running"} & {c.status for c in catalogue.clips(slug)}:
        time.sleep(1)
    assert not {"pending", "running"} & {c.status for c in catalogue.clips(slug)}, catalogue.clips(slug)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(sidecars(store, slug)) == [f"k{i + 1:02d}" for i in range(clips)]
    for name, mtime in published_before.items():
        assert (store / slug / name).stat().st_mtime_ns == mtime, f"{name} was rendered again"
    attempts = attempts_per_clip(env["NARRO_CATALOGUE"], slug)
    assert all(attempts[Path(name).stem] == 1 for name in published_before), attempts
    assert {c.status for c in catalogue.clips(slug)} == {"rendered"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_dashboard(env: dict[str, str], manifest: Path, store: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    dashboard = subprocess.Popen([str(NARRO), "dashboard", "--port", str(port), "--manifest", str(manifest), "--store",
                                  str(store)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert dashboard.poll() is None, dashboard.communicate()[1]
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return dashboard, base
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError("the dashboard did not answer")


def post_retry(base: str, course_slug: str, **fields: str) -> dict:
    import re

    import httpx

    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get(f"/courses/{course_slug}").text
        token = re.search(r'data-csrf="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        answer = client.post(f"/courses/{course_slug}/retry", data={"csrf_token": token, **fields},
                             headers={"accept": "application/json"})
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_a_dashboard_retry_in_cluster_mode_renders_through_the_deployment(cluster: dict, tmp_path: Path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from narro.catalogue import Catalogue
    from narro.submit import on_demand_deployment

    env = {**cluster["env"], "NARRO_RETRY_DEPLOYMENT": "render-course/render-course"}
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
        on_demand_deployment()
    manifest = write_manifest(tmp_path / "course", course("retried", clips=2), VOICES)
    store = tmp_path / "store"
    dashboard, base = start_dashboard(env, manifest, store)
    try:
        started = post_retry(base, "retried", ids="c01")
        catalogue = Catalogue(env["NARRO_CATALOGUE"])
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and getattr(catalogue.clip("retried", "c01"), "status", None) not in (
                "rendered", "failed"):
            time.sleep(0.5)
        state = catalogue.clip("retried", "c01")
        assert state is not None and state.status == "rendered" and state.run_id == started["run_id"], state
        runs = prefect_rest(env["PREFECT_API_URL"], "POST", "/flow_runs/filter",
                            {"flow_runs": {"tags": {"all_": ["retry", "course:retried"]}}})
        assert [run["name"] for run in runs] == [f"retry-retried-{started['run_id']}"]  # type: ignore[index]
        assert wait_flow_run(env["PREFECT_API_URL"], runs[0]["id"])["state"]["type"] == "COMPLETED"  # type: ignore[index]
        pid = int(sidecars(store, "retried")["c01"]["worker"].rsplit(":", 1)[1])
        assert pid in worker_pids(cluster, "dask-worker") + worker_pids(cluster, "dask-worker-gpu")  # on a Dask worker
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=60)


def test_a_retry_no_worker_takes_is_reported_not_left_pending(cluster: dict, tmp_path: Path):
    """A deployment on a pool no worker serves: refused at once; on a pool that looks served but whose worker
    never polls (a heartbeat, then silence), cancelled and reported when the pick-up time runs out."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.render_course import render_course
    from flows.retry import deployment_launcher
    from narro.catalogue import Catalogue
    from narro.dashboard.retry import Retries, RetryRequest
    from narro.settings import Settings

    pool = f"narro-idle-{uuid.uuid4().hex[:6]}"
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    manifest = write_manifest(tmp_path / "course", course("unserved"), VOICES)
    with temporary_settings(updates={PREFECT_API_URL: cluster["env"]["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        render_course.to_deployment(name=pool, work_pool_name=pool).apply()
        launch = deployment_launcher(f"render-course/{pool}", Settings(), pickup_timeout_s=5)

        def launcher(request: RetryRequest) -> None:  # on the retry thread, which has Prefect settings of its own
            with temporary_settings(updates={PREFECT_API_URL: cluster["env"]["PREFECT_API_URL"]}):
                launch(request)

        retries = Retries(catalogue, str(tmp_path / "store"), launcher)

        def reported(run_id: str, timeout_s: float) -> str:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and run_id not in retries.errors:
                time.sleep(0.2)
            return retries.errors.get(run_id, "")

        first = retries.start(str(manifest), "unserved", ["c01"])
        assert f"no worker is polling work pool '{pool}'" in reported(first.run_id, 30)
        with get_client(sync_client=True) as client:
            client.send_worker_heartbeat(pool, "a-worker-that-never-polls")
        second = retries.start(str(manifest), "unserved", ["c02"])
        assert "picked it up within 5 s" in reported(second.run_id, 60)
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs()
        cancelled = [run for run in runs if run.name == f"retry-unserved-{second.run_id}"]
        assert cancelled and cancelled[0].state.type.value == "CANCELLED"
        retries.shutdown()
    assert {c.narration_id: c.status for c in catalogue.clips("unserved")} == {"c01": "failed", "c02": "failed"}


def test_a_killed_dashboard_leaves_no_process_behind(base_env: dict[str, str], tmp_path: Path):
    manifest = write_manifest(tmp_path / "course", course("dash-killed"), VOICES)
    env = {**base_env, "NARRO_CATALOGUE": f"sqlite:///{tmp_path / 'catalogue.db'}"}
    dashboard, base = start_dashboard(env, manifest, tmp_path / "store")
    post_retry(base, "dash-killed", ids="c01")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not descendants(dashboard.pid):
        time.sleep(0.2)
    started = descendants(dashboard.pid)
    assert started, "the retry started no Prefect API process"
    dashboard.send_signal(signal.SIGKILL)
    dashboard.wait()
    assert wait_gone(started) == [], "processes outlived a killed `narro dashboard`"


def test_an_s3_outage_mid_render_ends_with_a_summary_and_the_next_run_finishes(base_env: dict[str, str],
                                                                              tmp_path: Path):
    """Embedded mode: the S3 server stops after two clips and starts again once every clip is accounted for."""
    from narro.catalogue import Catalogue
    from tests.s3_server import KEY, SECRET, SeaweedServer

    server = SeaweedServer.create(tmp_path / "s3")
    server.start("outage")
    manifest = write_manifest(tmp_path / "course", course("outage", clips=4), VOICES)
    env = {**base_env, "NARRO_CATALOGUE": f"sqlite:///{tmp_path / 'catalogue.db'}", "AWS_ACCESS_KEY_ID": KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1", "NARRO_S3_ENDPOINT_URL": server.endpoint,
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    command = [str(NARRO), "render", str(manifest), "--store", "s3://outage/courses", "--concurrency", "2"]
    catalogue = Catalogue(env["NARRO_CATALOGUE"])

    def indexed() -> set[str]:
        index = server.client().get_object(Bucket="outage", Key="courses/outage/index.json")["Body"].read()
        return {clip["id"] for clip in json.loads(index)["clips"]}

    try:
        render = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def statuses() -> list[str]:
            return [c.status for c in catalogue.clips("outage")]

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and statuses().count("rendered") < 2:
            time.sleep(0.2)
        server.stop()
        before = {c.narration_id for c in catalogue.clips("outage") if c.status == "rendered"}
        assert len(before) >= 2
        while time.monotonic() < deadline and not all(s in ("rendered", "failed") for s in statuses()):
            time.sleep(0.5)
        time.sleep(3)  # the run is now writing its index to a store that does not answer
        server.start("outage")
        output = render.communicate(timeout=300)[0]
        assert render.returncode in (0, 1), output
        assert "render failed" not in output and "outage: run" in output, output  # a summary, not a crash
        assert before <= indexed(), output  # the clips published before the outage stay published

        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        assert {c.status for c in catalogue.clips("outage")} == {"rendered"}
        assert len(indexed()) == 4
        tries = attempts_per_clip(env["NARRO_CATALOGUE"], "outage")
        assert all(tries[clip] == 1 for clip in before), tries  # published before the outage: not rendered again
    finally:
        server.stop()
