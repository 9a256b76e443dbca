"""The dashboard's routes and security rules, over a course rendered for real (one clip failed)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from narro.batch import prepare
from narro.catalogue import Catalogue
from narro.cli import main
from narro.dashboard import build_app
from narro.dashboard.retry import RetryRequest
from narro.dashboard.security import COOKIE, Guard, check_bind, is_loopback
from narro.errors import DashboardError, ManifestError
from narro.store import open_store
from tests.dashboard_course import Rendered, render_course_once

TOKEN = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def rendered_once(tmp_path_factory: pytest.TempPathFactory, prefect_harness) -> Path:  # noqa: ANN001
    root = tmp_path_factory.mktemp("dashboard")
    render_course_once(root)
    return root


@pytest.fixture
def course(rendered_once: Path, tmp_path: Path) -> Rendered:
    """A private copy of the rendered course, catalogue and store, for tests that change them."""
    root = tmp_path / "copy"
    shutil.copytree(rendered_once, root)
    return Rendered(root / "course" / "course.yaml", str(root / "store"), f"sqlite:///{root / 'catalogue.db'}")


class Launches:
    """A launcher that only records what it was asked to start (the flow is tested elsewhere)."""

    def __init__(self, fail: bool = False):
        self.requests: list[RetryRequest] = []
        self.fail = fail

    def __call__(self, request: RetryRequest) -> None:
        self.requests.append(request)
        if self.fail:
            raise RuntimeError("no workers")


def client_for(course: Rendered, launcher=None, token: str | None = None, manifests=None) -> TestClient:  # noqa: ANN001
    app = build_app(course.catalogue, course.store, [course.manifest] if manifests is None else manifests,
                    launcher or Launches(), token=token)
    return TestClient(app, base_url="http://127.0.0.1:8080", follow_redirects=False)


def csrf_of(page: str) -> str:
    return re.search(r'data-csrf="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def retry(client: TestClient, **fields: str) -> object:
    token = csrf_of(client.get("/courses/dash-test").text)
    return client.post("/courses/dash-test/retry", data={"csrf_token": token, **fields})


def wait_for(predicate, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


# --- pages ---------------------------------------------------------------------------------

def test_courses_page_counts(course: Rendered):
    page = client_for(course).get("/")
    assert page.status_code == 200
    row = re.search(r'href="/courses/dash-test".*?</tr>', page.text, re.S).group(0)  # type: ignore[union-attr]
    cells = re.findall(r'data-label="(\w[\w ]*)" class="num">(?:<a[^>]*>)?([\d:.?]+)', row)
    assert dict(cells)["Rendered"] == "2" and dict(cells)["Failed"] == "1" and dict(cells)["Stale"] == "0"
    assert "Dashboard test" in page.text


def test_course_page_lists_clips_and_escapes_script_text(course: Rendered):
    page = client_for(course).get("/courses/dash-test").text
    assert re.findall(r'<tr id="clip-([\w-]+)"', page) == ["intro", "broken", "outro"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "Intro &lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    assert "engine refused the text" in page  # last error shown
    assert page.count("<audio") == 2  # the failed clip has nothing to play
    assert 'src="/audio/dash-test/intro.mp3?v=' in page


def test_filters_and_search(course: Rendered):
    client = client_for(course)
    failed = client.get("/courses/dash-test?show=failed").text
    assert re.findall(r'<tr id="clip-([\w-]+)"', failed) == ["broken"]
    assert re.findall(r'<tr id="clip-([\w-]+)"', client.get("/courses/dash-test?show=stale").text) == []
    found = client.get("/courses/dash-test", params={"q": "ALL FOR NOW"}).text
    assert re.findall(r'<tr id="clip-([\w-]+)"', found) == ["outro"]


def test_stale_against_the_current_manifest(course: Rendered):
    course.manifest.write_text(course.manifest.read_text().replace("Welcome to", "Hello and welcome to"))
    client = client_for(course)
    stale = client.get("/courses/dash-test?show=stale").text
    assert re.findall(r'<tr id="clip-([\w-]+)"', stale) == ["intro"]
    data = client.get("/courses/dash-test/clips.json").json()
    assert data["counts"]["stale"] == 1
    assert {c["narration_id"]: c["stale"] for c in data["clips"]} == {"intro": True, "broken": False, "outro": False}


def point_sidecars_at(course: Rendered, manifest: Path) -> None:
    """Rewrite the manifest path the copied sidecars record (they name the original's)."""
    for sidecar in (Path(course.store) / "dash-test").glob("*.json"):
        data = json.loads(sidecar.read_text())
        if "manifest" in data:
            data["manifest"]["path"] = str(manifest)
            sidecar.write_text(json.dumps(data))


def test_without_a_manifest_staleness_is_unknown_and_retry_is_off(course: Rendered):
    point_sidecars_at(course, course.manifest)
    shutil.rmtree(course.manifest.parent)
    client = client_for(course, manifests=[])
    data = client.get("/courses/dash-test/clips.json").json()
    assert {c["stale"] for c in data["clips"]} == {None}
    assert "retries are off" in client.get("/courses/dash-test").text
    refused = client.post("/courses/dash-test/retry", data={"csrf_token": csrf_of(client.get("/").text), "ids": "broken"})
    assert refused.status_code == 409


def test_manifest_found_from_sidecars(course: Rendered):
    point_sidecars_at(course, course.manifest)
    course.manifest.write_text(course.manifest.read_text().replace("That is all", "That is everything"))
    client = client_for(course, manifests=[])
    assert client.get("/courses/dash-test/clips.json").json()["counts"]["stale"] == 1
    assert 'id="retry-form"' in client.get("/courses/dash-test").text


def test_rows_fragment_and_clip_json(course: Rendered):
    client = client_for(course)
    rows = client.get("/courses/dash-test/rows").text
    assert rows.count("<tr id=") == 3 and 'id="live-counts"' in rows
    state = client.get("/courses/dash-test/clips/broken/state.json").json()
    assert state["status"] == "failed" and state["busy"] is False


def test_clip_page_history_and_waveform(course: Rendered):
    client = client_for(course)
    intro = client.get("/courses/dash-test/clips/intro").text
    assert '<svg class="waveform"' in intro and "<polygon points=" in intro
    assert "loudness_lufs" in intro and "Welcome to the dashboard test." in intro
    broken = client.get("/courses/dash-test/clips/broken").text
    assert "engine refused the text" in broken and "<svg" not in broken and "Nothing is published" in broken
    assert client.get("/courses/dash-test/clips/nope").status_code == 404
    assert client.get("/courses/nope").status_code == 404


def test_audio_serves_catalogued_clips_only(course: Rendered):
    client = client_for(course)
    answer = client.get("/audio/dash-test/intro.mp3")
    assert answer.status_code == 200 and answer.headers["content-type"] == "audio/mpeg"
    assert answer.content == (Path(course.store) / "dash-test" / "intro.mp3").read_bytes()
    part = client.get("/audio/dash-test/intro.mp3", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    assert client.get("/audio/dash-test/broken.mp3").status_code == 404
    (Path(course.store) / "dash-test" / "stray.mp3").write_bytes(b"not catalogued")
    assert client.get("/audio/dash-test/stray.mp3").status_code == 404
    for sneaky in ("/audio/dash-test/..%2F..%2Fcatalogue.db.mp3", "/audio/..%2Fstore/intro.mp3",
                   "/audio/dash-test/%2e%2e.mp3", "/audio/dash-test/INTRO.mp3"):
        assert client.get(sneaky).status_code == 404, sneaky


# --- retry ---------------------------------------------------------------------------------

def test_retry_one_clip_marks_it_pending_and_launches_once(course: Rendered):
    launches = Launches()
    client = client_for(course, launches)
    answer = retry(client, ids="broken", voice="plain", back="/courses/dash-test?show=failed")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/courses/dash-test?show=failed&started=")
    wait_for(lambda: len(launches.requests) == 1)
    request = launches.requests[0]
    assert (request.only, request.voice, request.tier, request.manifest) == (["broken"], "plain", None, str(course.manifest))
    # The launcher recorded nothing, so the clip stays pending under the new run: a second retry is refused.
    assert Catalogue(course.catalogue).clip("dash-test", "broken").status == "pending"
    assert retry(client, ids="broken").status_code == 409
    assert len(launches.requests) == 1
    assert "pending" in client.get("/courses/dash-test").text


def test_retry_all_failed(course: Rendered):
    launches = Launches()
    client = client_for(course, launches)
    assert retry(client, all_failed="1").status_code == 303
    wait_for(lambda: len(launches.requests) == 1)
    assert launches.requests[0].only == ["broken"]
    assert retry(client, all_failed="1").status_code == 409  # none failed any more: it is pending


def test_retry_rejects_bad_requests(course: Rendered):
    launches = Launches()
    client = client_for(course, launches)
    assert retry(client, ids="nope").status_code == 400
    assert "unknown voice &#39;ghost&#39;" in retry(client, ids="broken", voice="ghost").text
    assert "has no quality-tier engine" in retry(client, ids="broken", tier="quality").text
    assert retry(client, ids="broken", tier="ultra").status_code == 400
    assert retry(client).status_code == 400
    time.sleep(0.2)
    assert launches.requests == []


def test_a_launch_that_fails_does_not_leave_clips_pending(course: Rendered):
    client = client_for(course, Launches(fail=True))
    answer = retry(client, ids="broken")
    wait_for(lambda: Catalogue(course.catalogue).clip("dash-test", "broken").status == "failed")
    assert "retry could not run: RuntimeError: no workers" in Catalogue(course.catalogue).clip("dash-test", "broken").last_error
    assert "retry could not run" in client.get(answer.headers["location"]).text


def test_retry_runs_the_flow_in_process(course: Rendered):
    """The embedded launcher for real: the failed clip re-renders with another voice."""
    from flows.retry import run_embedded

    client = client_for(course, run_embedded)
    assert retry(client, ids="broken", voice="plain").status_code == 303
    catalogue = Catalogue(course.catalogue)
    wait_for(lambda: catalogue.clip("dash-test", "broken").status == "rendered", timeout=120)
    state = catalogue.clip("dash-test", "broken")
    history = catalogue.attempts("dash-test", "broken")  # the QA gate may record several takes per run
    assert state.voice == "plain" and state.published_key and state.attempts == len(history) >= 2
    assert history[0].status == "failed" and history[-1].status == "rendered"
    assert {a.run_id for a in history if a.status == "rendered"} == {state.run_id}
    assert client.get("/audio/dash-test/broken.mp3").status_code == 200
    # The manifest still says `narrator`, so the retried clip is now stale against it.
    assert client.get("/courses/dash-test/clips.json").json()["counts"]["stale"] == 1


def test_deployment_launcher_creates_a_flow_run(monkeypatch: pytest.MonkeyPatch):
    """Unit test with Prefect's client mocked: the deployment path only creates a run."""
    import prefect.deployments

    from flows import retry as retry_flows

    calls = []
    monkeypatch.setattr(prefect.deployments, "run_deployment", lambda **kwargs: calls.append(kwargs))
    request = RetryRequest("m.yaml", "store", "sqlite:///c.db", "run1", "course-a", ["x"], "plain", None)
    monkeypatch.setenv("NARRO_RETRY_DEPLOYMENT", "render-course/narro")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    launcher, mode = retry_flows.launcher_from_env()
    launcher(request)
    assert "render-course/narro" in mode
    assert calls[0]["name"] == "render-course/narro" and calls[0]["timeout"] == 0
    assert calls[0]["parameters"] == {"manifest": "m.yaml", "store": "store", "catalogue": "sqlite:///c.db",
                                      "run_id": "run1", "only": ["x"], "voice": "plain", "tier": None}
    monkeypatch.delenv("PREFECT_API_URL")
    with pytest.raises(DashboardError, match="PREFECT_API_URL"):
        retry_flows.launcher_from_env()
    monkeypatch.delenv("NARRO_RETRY_DEPLOYMENT")
    assert retry_flows.launcher_from_env()[0] is retry_flows.run_embedded


def test_prepare_overrides_voice_for_chosen_clips(course: Rendered):
    store, catalogue = open_store(course.store), Catalogue(course.catalogue)
    plain = prepare(course.manifest, store, catalogue, only=["broken"])
    other = prepare(course.manifest, store, catalogue, only=["broken"], voice="plain")
    by_id = {s.narration_id: s for s in other.specs}
    assert by_id["broken"].voice == "plain" and by_id["intro"].voice == "narrator"
    assert by_id["broken"].content_key != {s.narration_id: s for s in plain.specs}["broken"].content_key
    with pytest.raises(ManifestError, match="unknown voice 'ghost'"):
        prepare(course.manifest, store, catalogue, only=["broken"], voice="ghost")


# --- security ------------------------------------------------------------------------------

def test_bind_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(DashboardError, match="NARRO_DASHBOARD_TOKEN"):
        check_bind("0.0.0.0", None)


def test_cli_refuses_a_public_bind_without_a_token(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NARRO_DASHBOARD_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "NARRO_DASHBOARD_TOKEN" in result.output
    monkeypatch.setenv("NARRO_DASHBOARD_TOKEN", "short")
    result = CliRunner().invoke(main, ["dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "too short" in result.output


def test_state_changes_need_session_and_csrf(course: Rendered):
    launches = Launches()
    client = client_for(course, launches)
    token = csrf_of(client.get("/courses/dash-test").text)
    assert client.post("/courses/dash-test/retry", data={"ids": "broken"}).status_code == 403
    assert client.post("/courses/dash-test/retry", data={"ids": "broken", "csrf_token": "x" * 64}).status_code == 403
    stranger = client_for(course, launches)  # another browser: its own session, so the token is not valid there
    assert stranger.post("/courses/dash-test/retry", data={"ids": "broken", "csrf_token": token}).status_code == 403
    cross = client.post("/courses/dash-test/retry", data={"ids": "broken", "csrf_token": token},
                        headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    forger = client_for(course, launches)
    forger.cookies.set(COOKIE, "abc.1." + "0" * 64)  # a made-up, unsigned session
    assert forger.post("/courses/dash-test/retry", data={"ids": "broken", "csrf_token": token}).status_code == 403
    assert client.post("/courses/dash-test/retry", data={"ids": "broken"},
                       headers={"X-CSRF-Token": token}).status_code == 303
    wait_for(lambda: len(launches.requests) == 1)


def test_host_header_must_be_loopback_without_a_token(course: Rendered):
    client = client_for(course)
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"Host": "localhost:8080"}).status_code == 200
    assert client.get("/", headers={"Host": "[::1]:8080"}).status_code == 200


def test_token_sign_in(course: Rendered):
    client = client_for(course, token=TOKEN)
    first = client.get("/courses/dash-test")
    assert first.status_code == 303 and first.headers["location"].startswith("/login?next=%2Fcourses%2Fdash-test")
    assert client.get("/audio/dash-test/intro.mp3").status_code == 303
    assert client.post("/courses/dash-test/retry", data={"ids": "broken"}).status_code == 401
    login = client.get("/login?next=/courses/dash-test")
    wrong = client.post("/login", data={"csrf_token": csrf_of(login.text), "token": "nope", "next": "/"})
    assert wrong.status_code == 401 and "not right" in wrong.text
    assert client.post("/login", data={"token": TOKEN, "next": "/"}).status_code == 403  # no CSRF token
    right = client.post("/login", data={"csrf_token": csrf_of(login.text), "token": TOKEN,
                                        "next": "//evil.example/"})
    assert right.status_code == 303 and right.headers["location"] == "/"
    assert client.get("/courses/dash-test").status_code == 200
    assert client.get("/", headers={"Host": "dashboard.example:8080"}).status_code == 200  # token mode: any Host


def test_security_headers(course: Rendered):
    answer = client_for(course).get("/courses/dash-test")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_guard_rejects_tampered_cookies():
    guard = Guard(None, loopback_only=True)
    session, cookie = guard.new_session(signed_in=False)
    assert guard.read(cookie) == session
    sid, flag, signature = cookie.split(".")
    assert guard.read(f"{sid}.1.{signature}") is None  # flipping the signed-in flag breaks the signature
    assert guard.read("garbage") is None
    assert not guard.csrf_ok(session, "") and guard.csrf_ok(session, guard.csrf_token(session))
