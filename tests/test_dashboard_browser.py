"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against real uvicorn on loopback.

Open the course, filter to failed, play a clip, retry the failed one with another voice, and
watch it turn rendered without reloading. Screenshots go to test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from flows.retry import run_embedded
from narro.dashboard import build_app
from tests.dashboard_course import GATE, ServerThread, free_port, render_course_once

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]

@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, prefect_harness):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("browser")
    rendered = render_course_once(root)
    app = build_app(rendered.catalogue, rendered.store, [rendered.manifest], run_embedded, mode="retries run in this process")
    with ServerThread(app, free_port()) as server:
        yield server
    app.state.dashboard.retries.shutdown()


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield launched
        launched.close()


def test_filter_play_and_retry(dashboard: ServerThread, browser) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.on("response", lambda answer: console_errors.append(f"{answer.status} {answer.url}") if answer.status >= 400 else None)
    page.goto(dashboard.url + "/")
    page.get_by_role("link", name="dash-test").click()
    expect(page.locator("#clip-broken .badge.failed")).to_be_visible()
    # The fallback voice shows, with its reason, and the stale badge says why it is stale.
    aside = page.locator("#clip-aside")
    expect(aside.locator(".badge.fallback")).to_have_text("fallback voice")
    expect(aside).to_contain_text("Spoken by piper:joe-us-medium: test service unreachable: no route to host")
    expect(aside.locator(".badge.stale")).to_have_attribute("title", re.compile("^Stale: spoken by the fallback: "
                                                                                "piper:joe-us-medium spoke it"))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"the course page is {width}px wide in a 1280px window"
    page.screenshot(path=str(ARTIFACTS / "dashboard-course.png"), full_page=True)

    # Play a rendered clip: the audio element loads the MP3 and knows its length.
    duration = page.locator("#clip-intro audio").evaluate(
        """audio => new Promise((resolve, reject) => {
               audio.addEventListener('loadedmetadata', () => resolve(audio.duration), {once: true});
               audio.addEventListener('error', () => reject(new Error('audio error ' + audio.error.code)), {once: true});
               audio.play().catch(() => {});
           })"""
    )
    assert 1.0 < duration < 10.0
    page.locator("#clip-intro audio").evaluate("audio => audio.pause()")

    page.get_by_role("link", name="Failed only").click()
    expect(page.locator("tbody#rows > tr")).to_have_count(1)
    expect(page.locator("#clip-broken")).to_contain_text("engine refused the text")
    expect(page.locator("#clip-broken")).to_contain_text("<script>alert(1)</script>")  # shown as text, not run

    row = page.locator("#clip-broken")
    row.get_by_text("Voice, tier").click()  # the override sits with the row's own retry
    expect(row.get_by_text("Held until the next render of the manifest.")).to_be_visible()
    page.select_option("#voice-broken", "plain")
    GATE.clear()  # hold the retry's synthesis until the page has shown the clip waiting
    try:
        page.get_by_role("button", name="Retry broken").click()
        expect(page.locator(".notice")).to_contain_text("retry run")
        expect(page.locator("#clip-broken .badge").first).to_have_text(re.compile("pending|running"))
        page.evaluate("window.stillTheSamePage = true")
    finally:
        GATE.set()
    page.screenshot(path=str(ARTIFACTS / "dashboard-retrying.png"), full_page=True)
    # No reload from here on: the live update swaps the row when the flow has rendered it.
    expect(page.locator("#clip-broken .badge.rendered")).to_be_visible(timeout=120_000)
    expect(page.locator("#clip-broken audio")).to_have_count(1)
    expect(page.locator("#counts")).to_contain_text("4 rendered")
    expect(page.locator("#clip-broken")).to_contain_text("Retry override (voice plain): held until the next render")
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded
    page.screenshot(path=str(ARTIFACTS / "dashboard-retried.png"), full_page=True)
    assert console_errors == []


def test_clip_page_and_phone_width(dashboard: ServerThread, browser) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone.goto(dashboard.url + "/courses/dash-test")
    expect(phone.locator("#clip-intro")).to_be_visible()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page is {width}px wide on a 390px phone"
    phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    phone.goto(dashboard.url + "/courses/dash-test/clips/intro")
    expect(phone.locator("svg.waveform")).to_be_visible()
    expect(phone.get_by_role("heading", name="Attempts")).to_be_visible()
    phone.screenshot(path=str(ARTIFACTS / "dashboard-clip-phone.png"), full_page=True)

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(dashboard.url + "/courses/dash-test/clips/intro")
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    page.screenshot(path=str(ARTIFACTS / "dashboard-clip.png"), full_page=True)


def test_review_by_ear_approve_flag_and_captions(dashboard: ServerThread, browser) -> None:  # noqa: ANN001
    """Approve one clip and flag another with a note from the course page; follow a clip's captions while it plays."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.goto(dashboard.url + "/courses/dash-test")
    page.get_by_role("button", name="Approve intro").click()
    expect(page.locator("#clip-intro .badge.approved")).to_have_text("approved")
    outro = page.locator("#clip-outro")
    outro.locator("details.flag summary").click()
    outro.get_by_label("What is wrong").fill("says 'Volley' for VALL-E")
    outro.get_by_role("button", name="Flag it outro").click()
    expect(page.locator("#clip-outro .badge.flagged")).to_have_text("flagged")
    expect(page.locator("#clip-outro .flag-note")).to_have_text("says 'Volley' for VALL-E")
    expect(page.locator("#counts")).to_contain_text("1 flagged")
    page.get_by_role("link", name="Flagged 1").click()
    expect(page.locator("tbody#rows > tr")).to_have_count(1)
    expect(page.locator("tbody#rows > tr").first).to_have_id("clip-outro")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"the flagged list is {width}px wide in a 1280px window"
    page.goto(dashboard.url + "/courses/dash-test")
    page.screenshot(path=str(ARTIFACTS / "dashboard-course-flagged.png"), full_page=True)

    # The clip page: the flag and its note, the lexicon form it leads to, and the captions under the player.
    page.goto(dashboard.url + "/courses/dash-test/clips/outro")
    expect(page.locator("section.review")).to_contain_text("flagged: says 'Volley' for VALL-E")
    expect(page.get_by_role("heading", name="Fix how a term is said")).to_be_visible()
    cues = page.locator("ol.captions li")
    expect(cues.first).to_contain_text("That is all for now.")
    last = cues.last
    start = float(last.get_attribute("data-start") or "nan")
    last.locator("button.cue-time").click()  # plays from that cue, which is marked while it is spoken
    expect(last).to_have_class(re.compile(r"\bcurrent\b"), timeout=10_000)
    assert page.locator("audio").evaluate("audio => audio.currentTime") >= start
    page.locator("audio").evaluate("audio => audio.pause()")
    page.screenshot(path=str(ARTIFACTS / "dashboard-clip-captions.png"), full_page=True)
    assert console_errors == []
