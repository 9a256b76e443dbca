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
from narro.settings import DashboardSettings, QaSettings, Settings
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
    # aside is stale: the fallback voice spoke it, not the voice the manifest asks for.
    assert dict(cells)["Rendered"] == "3" and dict(cells)["Failed"] == "1" and dict(cells)["Stale"] == "1"
    assert "Dashboard test" in page.text


def test_course_page_lists_clips_and_escapes_script_text(course: Rendered):
    page = client_for(course).get("/courses/dash-test").text
    assert re.findall(r'<tr id="clip-([\w-]+)"', page) == ["intro", "broken", "outro", "aside"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "Intro &lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    assert "engine refused the text" in page  # last error shown
    assert page.count("<audio") == 3  # the failed clip has nothing to play
    assert 'src="/audio/dash-test/intro.mp3?v=' in page


def test_filters_and_search(course: Rendered):
    client = client_for(course)
    failed = client.get("/courses/dash-test?show=failed").text
    assert re.findall(r'<tr id="clip-([\w-]+)"', failed) == ["broken"]
    assert re.findall(r'<tr id="clip-([\w-]+)"', client.get("/courses/dash-test?show=stale").text) == ["aside"]
    found = client.get("/courses/dash-test", params={"q": "ALL FOR NOW"}).text
    assert re.findall(r'<tr id="clip-([\w-]+)"', found) == ["outro"]


def test_stale_against_the_current_manifest(course: Rendered):
    course.manifest.write_text(course.manifest.read_text().replace("Welcome to", "Hello and welcome to"))
    client = client_for(course)
    stale = client.get("/courses/dash-test?show=stale").text
    assert re.findall(r'<tr id="clip-([\w-]+)"', stale) == ["intro", "aside"]
    assert 'title="Stale: text changed"' in stale  # the badge says why
    data = client.get("/courses/dash-test/clips.json").json()
    assert data["counts"]["stale"] == 2
    assert {c["narration_id"]: c["stale"] for c in data["clips"]} == {"intro": True, "broken": False, "outro": False,
                                                                     "aside": True}
    reasons = {c["narration_id"]: c["stale_reasons"] for c in data["clips"]}
    assert reasons["intro"] == ["text changed"] and reasons["outro"] == []


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
    assert client.get("/courses/dash-test/clips.json").json()["counts"]["stale"] == 2
    assert 'id="retry-form"' in client.get("/courses/dash-test").text


def test_rows_fragment_and_clip_json(course: Rendered):
    client = client_for(course)
    rows = client.get("/courses/dash-test/rows").text
    assert rows.count("<tr id=") == 4 and 'id="live-counts"' in rows
    assert 'id="voice-broken"' in rows  # each row's retry carries its own voice and tier
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


def test_the_fallback_voice_shows_with_its_reason(course: Rendered):
    client = client_for(course)
    row = re.search(r'<tr id="clip-aside".*?</tr>', client.get("/courses/dash-test").text, re.S).group(0)  # type: ignore[union-attr]
    assert 'class="badge fallback" title="test service unreachable: no route to host"' in row
    assert ">fallback voice</span>" in row
    assert "Spoken by piper:joe-us-medium: test service unreachable: no route to host. Rendered again with online once " \
           "its voice answers." in row
    assert ('title="Stale: spoken by the fallback: piper:joe-us-medium spoke it: test service unreachable: '
            'no route to host"') in row
    page = client.get("/courses/dash-test/clips/aside").text
    assert "Spoken by the fallback voice piper:joe-us-medium, not online: test service unreachable" in page


def test_figures_are_the_published_takes_and_a_later_failure_is_apart(course: Rendered):
    catalogue = Catalogue(course.catalogue)
    published = catalogue.attempts("dash-test", "intro")[-1]
    number = catalogue.mark_running("dash-test", "intro", "later")  # a re-render whose take failed the gate
    catalogue.finish_attempt("dash-test", "intro", number, status="failed", error="wer: 90.0% of 17 words",
                             metrics={"take": 1, "variant": "as asked", "wer": 0.9, "passed": False, "failed": ["wer"],
                                      "qa": {"checks": {"wer": {"value": 0.9, "threshold": "<= 0.3", "passed": False,
                                                                "reason": "90.0% of 17 words"}},
                                             "transcript": "welcome to the dashboard west",
                                             "script": "Welcome to the dashboard test."}})
    catalogue.mark_failed("dash-test", "intro", "quality gate: no take passed: take 1 (as asked): wer: 90.0%", "later")
    client = client_for(course)
    row = re.search(r'<tr id="clip-intro".*?</tr>', client.get("/courses/dash-test").text, re.S).group(0)  # type: ignore[union-attr]
    qa = re.search(r'data-label="QA" class="qa">(.*?)</td>', row, re.S).group(1)  # type: ignore[union-attr]
    # A compact verdict: WER, pace and loudness with whether each passed, not raw metric keys.
    assert f"published take (attempt {published.number})" in qa and "passed" not in qa and "wer</span>" not in qa
    figures = dict(re.findall(r'<span class="fig (ok|bad)" title="[^"]*">([^<]+)</span>', qa)[i][::-1] for i in range(3))
    assert figures == {f"WER {published.metrics['wer'] * 100:.1f}%": "ok",  # type: ignore[index]
                       f"{published.metrics['wpm']:.0f} wpm": "ok",  # type: ignore[index]
                       f"{published.metrics['loudness_lufs']:.1f} LUFS": "ok"}  # type: ignore[index]
    assert f'<div class="later">attempt {number} (failed): WER 90.0%</div>' in qa
    assert "Plays the take published before this failure." in row  # the player still plays the published take
    page = client.get("/courses/dash-test/clips/intro").text
    assert f"Failed attempt: attempt {number}" in page and f"Published take: attempt {published.number}" in page
    assert "welcome to the dashboard <del>test</del> <ins>west</ins>" in page
    assert '<td>&lt;= 0.3</td><td><span class="badge failed">failed</span></td><td>90.0% of 17 words</td>' in page


# --- review by ear ---------------------------------------------------------------------------

def review(client: TestClient, clip: str, **fields: str):  # noqa: ANN201
    page = client.get(f"/courses/dash-test/clips/{clip}").text
    key = re.search(r'name="key" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    return client.post(f"/courses/dash-test/clips/{clip}/review", data={"csrf_token": csrf_of(page), "key": key,
                                                                        **fields})


def row_of(page: str, clip: str) -> str:
    return re.search(rf'<tr id="clip-{clip}".*?</tr>', page, re.S).group(0)  # type: ignore[union-attr]


def test_approve_and_flag_show_on_the_course_page_with_a_filter_and_a_count(course: Rendered):
    client = client_for(course)
    assert "0 flagged" in client.get("/courses/dash-test").text
    answer = review(client, "intro", verdict="approved", back="/courses/dash-test")
    assert answer.status_code == 303 and answer.headers["location"] == "/courses/dash-test"
    assert review(client, "outro", verdict="flagged", note="says 'Volley' for VALL-E").status_code == 303
    page = client.get("/courses/dash-test").text
    assert '<span class="badge approved"' in row_of(page, "intro") and ">Approve<" not in row_of(page, "intro")
    assert '<span class="badge flagged">flagged</span><span class="flag-note">says &#39;Volley&#39; for VALL-E</span>' \
        in row_of(page, "outro")
    assert '<a href="/courses/dash-test?show=flagged">1 flagged</a>' in page
    courses = client.get("/").text
    assert '<td data-label="Flagged" class="num"><a class="bad" href="/courses/dash-test?show=flagged">1</a>' in courses
    assert re.findall(r'<tr id="clip-([\w-]+)"', client.get("/courses/dash-test?show=flagged").text) == ["outro"]
    assert re.findall(r'<tr id="clip-([\w-]+)"', client.get("/courses/dash-test?show=review").text) == ["aside"]
    clips = {c["narration_id"]: c for c in client.get("/courses/dash-test/clips.json").json()["clips"]}
    assert clips["outro"]["review"] == "flagged" and clips["outro"]["review_note"] == "flagged: says 'Volley' for VALL-E"
    assert clips["broken"]["review"] == "unreviewed"


def test_an_approval_belongs_to_the_audio_it_was_given_on(course: Rendered):
    client = client_for(course)
    assert review(client, "intro", verdict="approved").status_code == 303
    catalogue = Catalogue(course.catalogue)
    state = catalogue.clip("dash-test", "intro")
    catalogue.mark_rendered("dash-test", "intro", content_key="f" * 64, engine="piper", duration_s=5.0,
                            loudness_lufs=-16.0, true_peak_dbtp=-1.5, run_id="newer")  # a render published new audio
    row = row_of(client.get("/courses/dash-test").text, "intro")
    assert '<span class="badge again" title="The audio changed after it was approved">review again</span>' in row
    assert ">Approve<" in row
    assert "intro" in re.findall(r'<tr id="clip-([\w-]+)"', client.get("/courses/dash-test?show=review").text)
    # A verdict given on the page of the old audio does not land on the new one.
    stale_form = client.post("/courses/dash-test/clips/intro/review", data={
        "csrf_token": csrf_of(client.get("/").text), "key": state.published_key, "verdict": "approved"})
    assert stale_form.status_code == 409 and "changed since this page was loaded" in stale_form.text


def test_review_refuses_a_flag_without_a_note_nothing_published_and_no_csrf(course: Rendered):
    client = client_for(course)
    assert review(client, "intro", verdict="flagged", note="  ").status_code == 409
    assert Catalogue(course.catalogue).verdict("dash-test", "intro") is None
    token = csrf_of(client.get("/").text)
    broken = client.post("/courses/dash-test/clips/broken/review", data={"csrf_token": token, "verdict": "approved"})
    assert broken.status_code == 409 and "nothing is published" in broken.text
    assert client.post("/courses/dash-test/clips/intro/review", data={"verdict": "approved"}).status_code == 403
    assert client.post("/courses/dash-test/clips/nope/review", data={"csrf_token": token}).status_code == 404


def test_from_a_flag_a_lexicon_entry_is_added_and_the_clips_with_the_term_re_render(course: Rendered):
    launches = Launches()
    client = client_for(course, launches)
    assert 'action="/courses/dash-test/clips/outro/lexicon"' not in client.get("/courses/dash-test/clips/outro").text
    review(client, "outro", verdict="flagged", note="'lesson' sounds odd")
    page = client.get("/courses/dash-test/clips/outro").text
    assert 'action="/courses/dash-test/clips/outro/lexicon"' in page
    shared = course.manifest.parent / "lexicon.yaml"
    # A bad entry: the problem with file, line and field, the form kept, and no file written.
    bad = client.post("/courses/dash-test/clips/outro/lexicon", data={"csrf_token": csrf_of(page), "term": "lesson",
                                                                      "ipa": "l!sn"})
    assert bad.status_code == 400 and f"{shared}:2: lesson.ipa: &#39;l!sn&#39; is not IPA phonemes" in bad.text
    assert 'value="l!sn"' in bad.text and not shared.exists()
    added = client.post("/courses/dash-test/clips/outro/lexicon", data={"csrf_token": csrf_of(page), "term": "lesson",
                                                                        "say": "less on"})
    assert added.status_code == 303 and added.headers["location"] == "/courses/dash-test/clips/outro?added=lesson#lexicon"
    assert "lesson: less on" in shared.read_text()
    done = client.get(added.headers["location"]).text
    assert "Added <strong>lesson</strong> to lexicon.yaml (line 2). 1 clip contains it: outro." in done
    # The entry changed the clip's key: it is stale, and the button re-renders the clips with the term.
    assert client.get("/courses/dash-test/clips.json").json()["counts"]["stale"] == 2
    ids = re.findall(r'<input type="hidden" name="ids" value="([\w-]+)">', done)
    assert ids == ["outro"] and "Re-render the 1 clip with “lesson”" in done
    assert client.post("/courses/dash-test/retry", data={"csrf_token": csrf_of(done), "ids": ids}).status_code == 303
    wait_for(lambda: len(launches.requests) == 1)
    assert launches.requests[0].only == ["outro"]


def test_the_clip_page_shows_its_captions_under_the_player(course: Rendered):
    client = client_for(course)
    page = client.get("/courses/dash-test/clips/intro").text
    listen = page[page.index('id="listen-h"'):page.index('id="script-h"')]
    assert listen.index("<audio") < listen.index('<ol class="captions"')
    cues = re.findall(r'<li data-start="([\d.]+)" data-end="([\d.]+)"><button type="button" class="cue-time" '
                      r'title="Play from here">([\d:.]+)</button> <span class="cue-text">(.*?)</span></li>', listen)
    vtt = (Path(course.store) / "dash-test" / "intro.vtt").read_text()
    assert len(cues) == vtt.count(" --> ") >= 1
    spoken = " ".join(text.replace("<br>", " ") for *_, text in cues)
    assert spoken == "Welcome to the dashboard test. This clip is long enough to hear a few words of speech."
    assert all(float(start) < float(end) for start, end, *_ in cues)
    assert client.get("/captions/dash-test/intro.vtt").text == vtt
    assert client.get("/captions/dash-test/intro.srt").status_code == 200
    assert client.get("/captions/dash-test/broken.vtt").status_code == 404
    assert client.get("/captions/dash-test/intro.json").status_code == 404
    assert "no captions" not in client.get("/courses/dash-test/clips/broken").text  # nothing published: no player


def test_the_course_page_is_paged(course: Rendered, monkeypatch: pytest.MonkeyPatch):
    from narro.dashboard import overview

    monkeypatch.setattr(overview, "PAGE_SIZE", 3)
    client = client_for(course)
    first = client.get("/courses/dash-test").text
    assert re.findall(r'<tr id="clip-([\w-]+)"', first) == ["intro", "broken", "outro"]
    assert "Showing 1–3 of 4 clips." in first and "Page 1 of 2" in first and 'rel="next"' in first
    second = client.get("/courses/dash-test?page=2").text
    assert re.findall(r'<tr id="clip-([\w-]+)"', second) == ["aside"] and 'rel="prev"' in second
    rows = client.get("/courses/dash-test/rows?page=2").text
    assert re.findall(r'<tr id="clip-([\w-]+)"', rows) == ["aside"]
    assert 'data-rows-url="/courses/dash-test/rows?page=2"' in second
    assert re.findall(r'<tr id="clip-([\w-]+)"', client.get("/courses/dash-test?page=99").text) == ["aside"]


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
    catalogue = Catalogue(course.catalogue)
    wait_for(lambda: catalogue.clip("dash-test", "broken").status == "failed")
    assert "retry could not run: RuntimeError: no workers" in catalogue.clip("dash-test", "broken").last_error
    assert "retry could not run" in client.get(answer.headers["location"]).text
    # The retry is in the clip's history as an attempt, with why it failed.
    last = catalogue.attempts("dash-test", "broken")[-1]
    assert last.status == "failed" and last.run_id == catalogue.clip("dash-test", "broken").run_id
    assert "retry could not run" in (last.error or "")


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
    # The manifest still says `narrator`, so the retried clip is now stale against it, and the page says why.
    assert client.get("/courses/dash-test/clips.json").json()["counts"]["stale"] == 2
    row = re.search(r'<tr id="clip-broken".*?</tr>', client.get("/courses/dash-test").text, re.S).group(0)  # type: ignore[union-attr]
    assert "Retry override (voice plain): held until the next render of the manifest." in row
    assert 'title="Stale: voice changed: plain → narrator"' in row


def test_deployment_launcher_creates_a_flow_run(monkeypatch: pytest.MonkeyPatch):
    """Unit test with the Prefect side mocked: the deployment path creates a run with the dashboard's settings.
    tests/test_cluster.py runs it against a live server and worker."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import narro.submit
    from flows import retry as retry_flows

    calls = []
    monkeypatch.setattr(narro.submit, "run_deployment_now", lambda name, parameters, **kwargs: calls.append(
        {"name": name, "parameters": parameters, **kwargs}))
    request = RetryRequest("m.yaml", "store", "sqlite:///c.db", "run1", "course-a", ["x"], "plain", None)
    settings = Settings(qa=QaSettings(max_takes=5),
                        dashboard=DashboardSettings(token=TOKEN, retry_deployment="render-course/narro"))
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        launcher, mode = retry_flows.launcher_for(settings)
    launcher(request)
    assert "render-course/narro" in mode and "http://127.0.0.1:4200/api" in mode
    assert calls[0]["name"] == "render-course/narro" and calls[0]["timeout_s"] == narro.submit.PICKUP_TIMEOUT_S
    parameters = calls[0]["parameters"]
    assert {k: v for k, v in parameters.items() if k != "settings"} == {
        "manifest": "m.yaml", "store": "store", "catalogue": "sqlite:///c.db", "run_id": "run1", "only": ["x"],
        "voice": "plain", "tier": None}
    # The settings travel as JSON (the Prefect API stores them), without the dashboard's token.
    assert parameters["settings"]["qa"]["max_takes"] == 5 and TOKEN not in json.dumps(parameters["settings"])
    with temporary_settings(updates={PREFECT_API_URL: None}), pytest.raises(DashboardError, match="PREFECT_API_URL"):
        retry_flows.launcher_for(settings)
    embedded, mode = retry_flows.launcher_for(Settings())
    assert embedded.func is retry_flows.run_embedded and mode == "retries run in this process"


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
    assert result.exit_code == 2 and "NARRO_DASHBOARD_TOKEN: expected a secret of at least 12" in result.output


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


# --- a large course: its page costs the same few queries whatever its size ----------------------

def seeded_course(folder: Path, clips: int) -> Rendered:
    """A catalogue seeded with `clips` rendered clips (2% failed, ~1% flagged) and their manifest, none stale."""
    from sqlalchemy import create_engine, update

    from narro.catalogue import ClipRow, VerdictRow
    from narro.manifest import load_course
    from narro.plan import plan
    from tests.catalogue_seed import clip_id, seed
    from tests.conftest import write_manifest

    url = f"sqlite:///{folder / 'catalogue.db'}"
    seed(url, "big", clips)
    manifest = write_manifest(folder / "course", "course: big\nnarrations:\n" + "".join(
        f"  - id: {clip_id(i)}\n    text: Narration {i} is about codec tokens.\n" for i in range(clips)))
    keys = {spec.narration_id: spec.content_key for spec in plan(load_course(manifest))}
    engine = create_engine(url)
    with engine.begin() as connection:  # the published audio is what the manifest asks for
        for narration_id, key in keys.items():
            connection.execute(update(ClipRow).where(ClipRow.course == "big", ClipRow.narration_id == narration_id)
                               .values(content_key=key, published_key=key))
            connection.execute(update(VerdictRow).where(VerdictRow.course == "big",
                                                        VerdictRow.narration_id == narration_id).values(content_key=key))
    engine.dispose()
    (folder / "store").mkdir()
    return Rendered(manifest, str(folder / "store"), url)


PAGES = ("/", "/courses/big", "/courses/big?page=3", "/courses/big?show=flagged", "/courses/big?show=failed",
         "/courses/big?show=stale", "/courses/big?q=narration%2012", "/courses/big/rows?page=2")


def page_costs(course: Rendered, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[int, int]]:
    """Per page: SQL statements run and sidecars read to answer it."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from narro.store import LocalStore

    reads = []
    original = LocalStore.read_sidecar
    monkeypatch.setattr(LocalStore, "read_sidecar", lambda self, c, i: reads.append(i) or original(self, c, i))
    client = client_for(course)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        statements.append(statement)

    costs = {}
    event.listen(Engine, "before_cursor_execute", count)
    try:
        for url in PAGES:
            statements.clear()
            reads.clear()
            answer = client.get(url)
            assert answer.status_code == 200, url
            costs[url] = (len(statements), len(reads))
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    return costs


def test_the_course_page_costs_the_same_queries_at_any_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    small = page_costs(seeded_course(tmp_path / "small", 60), monkeypatch)
    large = page_costs(seeded_course(tmp_path / "large", 600), monkeypatch)
    assert small == large, (small, large)
    assert all(reads == 0 for _, reads in large.values())  # no sidecar is read to show a page
    assert large["/courses/big"][0] <= 6, large


def test_a_large_course_pages_filters_and_counts(tmp_path: Path):
    from tests.catalogue_seed import clip_id, is_failed, is_flagged

    client = client_for(seeded_course(tmp_path, 250))
    page = client.get("/courses/big?page=2").text
    assert re.findall(r'<tr id="clip-([\w-]+)"', page) == [clip_id(i) for i in range(50, 100)]
    assert "Showing 51–100 of 250 clips." in page and "Page 2 of 5" in page
    flagged = [clip_id(i) for i in range(250) if is_flagged(i)]
    assert f'{len(flagged)} flagged</a>' in page
    assert re.findall(r'<tr id="clip-([\w-]+)"', client.get("/courses/big?show=flagged").text) == flagged
    failed = [clip_id(i) for i in range(250) if is_failed(i)]
    assert re.findall(r'<tr id="clip-([\w-]+)"', client.get("/courses/big?show=failed").text) == failed
