"""The dashboard's web app: courses, a course's clips, a clip's history, audio, and retries.

Server-rendered HTML (Jinja2, autoescaped) with a little vanilla JS for live progress; no
front-end build and nothing loaded from outside the app. Errors become pages here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from markupsafe import escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from narro.batch import override
from narro.catalogue import FAILED, PENDING, RUNNING, Catalogue, ClipLine
from narro.consent import standing
from narro.dashboard import overview
from narro.dashboard.captions import caption_cues
from narro.dashboard.retry import Launcher, Retries
from narro.dashboard.security import COOKIE, CSRF_FIELD, CSRF_HEADER, Guard
from narro.dashboard.waveform import waveform_svg
from narro.errors import DashboardError, ManifestError, NarroError
from narro.lexicon_edit import add_lexicon_entry, clips_with_term, entry_value
from narro.review import ReviewError, check_verdict, describe
from narro.store import Store
from narro.voices import TIERS
from narro.wer import differences

HERE = Path(__file__).parent
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
OPEN_PATHS = ("/login", "/static/", "/healthz")
CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self' http: https:; style-src 'self'; "
       "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
POLL_MS = 1500


@dataclass
class Dashboard:
    """What the routes work on."""

    catalogue: Catalogue
    store: Store
    manifests: overview.Manifests
    retries: Retries
    guard: Guard
    mode: str = ""
    sidecars: overview.Sidecars | None = None


def templates() -> Jinja2Templates:
    env = Jinja2Templates(directory=str(HERE / "templates"))
    env.env.autoescape = True
    env.env.filters.update(minutes=_minutes, number=_number, when=_when, scalars=scalars, nested=nested,
                           differences=differences, compact_qa=compact_qa, timestamp=_timestamp,
                           paragraphs=_paragraphs)
    env.env.globals.update(is_mapping=lambda v: isinstance(v, dict), consent_standing=standing)
    return env


def _paragraphs(written: str) -> list[str]:
    """A script as its reader sees it: blank lines part paragraphs; a line wrapped in the source is not a break."""
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", written) if block.strip()]


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}" if seconds < 600 else f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _number(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def scalars(metrics: dict[str, Any] | None, skip: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """The metrics that fit in a table cell: numbers, flags and short strings."""
    return [(k, v) for k, v in (metrics or {}).items()
            if k not in skip and (isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) <= 40))]


def nested(metrics: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The metrics too big for a cell (QA checks, transcripts, lists), for a details block."""
    inline = dict(scalars(metrics))
    return [(k, v) for k, v in (metrics or {}).items() if k not in inline and v not in ([], {}, None, "")]


@dataclass(frozen=True)
class Figure:
    """One figure of the QA column's compact verdict: `WER 4.2%`, with whether its check passed."""

    text: str
    passed: bool | None
    """None when the take was not checked for it."""
    why: str


COMPACT = (("wer", "wer", lambda v: f"WER {v * 100:.1f}%"), ("speech_rate", "wpm", lambda v: f"{v:.0f} wpm"),
           ("loudness", "loudness_lufs", lambda v: f"{v:.1f} LUFS"))
"""The checks the QA column shows (check name, metric key, format); the others appear only when they fail."""


def compact_qa(metrics: dict[str, Any] | None) -> tuple[list[Figure], list[str]]:
    """A take's QA in a few words: WER, pace and loudness with their verdicts, and any other check that failed."""
    metrics = metrics or {}
    checks = (metrics.get("qa") or {}).get("checks") or {}
    figures = []
    for check_name, metric, shown in COMPACT:
        check = checks.get(check_name) or {}
        value = check.get("value", metrics.get(metric))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            why = f"must be {check['threshold']}" + (f": {check['reason']}" if check.get("reason") else "") \
                if "threshold" in check else "not checked"
            figures.append(Figure(shown(value), check.get("passed"), why))
    others = [name for name, check in checks.items()
              if name not in {c for c, _, _ in COMPACT} and isinstance(check, dict) and check.get("passed") is False]
    return figures, others


def _timestamp(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") + " UTC" if moment else "never"


class Security(BaseHTTPMiddleware):
    """Host check, session cookie, sign-in, and headers on every response."""

    def __init__(self, app: Any, guard: Guard):
        super().__init__(app)
        self.guard = guard

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        guard = self.guard
        if not guard.host_ok(request.headers.get("host")):
            return _headers(PlainTextResponse("bad Host header: open the dashboard at http://127.0.0.1", 400))
        if request.method not in ("GET", "HEAD") and not _same_origin(request):
            return _headers(PlainTextResponse("cross-origin request refused", 403))
        session = guard.read(request.cookies.get(COOKIE))
        fresh = None
        if session is None:
            session, fresh = guard.new_session(signed_in=False)
        request.state.session = session
        open_path = request.url.path.startswith(OPEN_PATHS)
        if not open_path and not guard.allowed(session):
            if request.method in ("GET", "HEAD"):
                response: Response = RedirectResponse("/login?" + urlencode({"next": _local(str(request.url.path))}), 303)
            else:
                response = PlainTextResponse("sign in first", 401)
        else:
            response = await call_next(request)
        if fresh is not None:
            response.set_cookie(COOKIE, fresh, httponly=True, samesite="strict", path="/")
        return _headers(response)


def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")  # "no-referrer" makes form posts send Origin: null
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    return origin is None or origin.split("://", 1)[-1] == request.headers.get("host")


def _local(path: str) -> str:
    """A redirect target inside the dashboard, or the home page."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def _form(request: Request) -> dict[str, list[str]]:
    """The urlencoded form, after checking its CSRF token (field or header)."""
    body = request.state.body.decode("utf-8", "replace")
    form = parse_qs(body, keep_blank_values=True) if "json" not in request.headers.get("content-type", "") else {}
    presented = request.headers.get(CSRF_HEADER) or (form.get(CSRF_FIELD) or [""])[0]
    if not request.app.state.dashboard.guard.csrf_ok(request.state.session, presented):
        raise _Refused(403, "missing or wrong CSRF token: reload the page and try again")
    return form


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    dash: Dashboard = request.app.state.dashboard
    context.update(csrf=dash.guard.csrf_token(request.state.session), signed_in=dash.guard.needs_sign_in,
                   mode=dash.mode, poll_ms=POLL_MS)
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status_code)


def _error(request: Request, status: int, message: str) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"error": message}, status)
    return _page(request, "error.html", status, message=message, status=status)


def _slugs(*values: str) -> None:
    if not all(SLUG.match(v) and len(v) <= 80 for v in values):
        raise _Refused(404, "no such course or clip")


def _course(request: Request, slug: str) -> tuple[Dashboard, overview.Planned | None, overview.CourseIndex]:
    """The course's manifest and the light listing of its clips (a few queries, whatever its size), or a 404."""
    _slugs(slug)
    dash: Dashboard = request.app.state.dashboard
    lines = dash.catalogue.clip_lines(slug)
    planned = dash.manifests.for_course(slug, dash.store, lines)
    if not lines and (planned is None or planned.course is None):
        raise _Refused(404, f"no course '{slug}' in the catalogue")
    return dash, planned, overview.course_index(lines, planned)


def _one_clip(request: Request, slug: str, narration_id: str) -> tuple[Dashboard, overview.Planned | None,
                                                                       overview.ClipView]:
    """One clip's manifest and view, from its own rows only, or a 404."""
    _slugs(slug, narration_id)
    dash: Dashboard = request.app.state.dashboard
    state = dash.catalogue.clip(slug, narration_id)
    lines = [ClipLine(narration_id, state.status, state.published_key, state.duration_s,
                      dash.catalogue.verdict(slug, narration_id), state.run_id)] if state else []
    planned = dash.manifests.for_course(slug, dash.store, lines)
    index = overview.course_index(lines, planned)
    if state is None and narration_id not in index.specs:
        if planned is None or planned.course is None:
            if not dash.catalogue.clip_lines(slug):
                raise _Refused(404, f"no course '{slug}' in the catalogue")
        raise _Refused(404, f"no clip '{narration_id}' in course '{slug}'")
    history = {narration_id: dash.catalogue.attempts(slug, narration_id)} if state else {}
    view = overview.clip_views([narration_id], index, {narration_id: state} if state else {}, history, dash.sidecars)[0]
    return dash, planned, view


def _page_views(dash: Dashboard, slug: str, index: overview.CourseIndex, ids: list[str]) -> list[overview.ClipView]:
    """The full views of a page of clips: two queries for the page, none per clip."""
    present = [i for i in ids if i in index.lines]
    return overview.clip_views(ids, index, dash.catalogue.clips_of(slug, present),
                               dash.catalogue.attempts_of(slug, present), dash.sidecars)


@dataclass(frozen=True)
class Listing:
    """What the course page and its live rows show: a filtered, searched page of clips."""

    show: str
    query: str
    page: int
    pages: int
    matched: int
    first: int
    views: list[overview.ClipView]


def _listing(request: Request, dash: Dashboard, slug: str, index: overview.CourseIndex) -> Listing:
    show = request.query_params.get("show", "all")
    show = show if show in overview.SHOWS else "all"
    query = request.query_params.get("q", "").strip()[:200]
    started = request.query_params.get("started")
    found = overview.search(index, dash.catalogue, slug, query) if query else None
    ids = overview.select_ids(index, show, found)
    if started:  # the clips of a retry just started stay in view whatever the filter, to watch them finish
        chosen = set(ids)
        ids = [i for i in index.order if i in chosen or (i in index.lines and index.lines[i].run_id == started)]
    pages = max(1, -(-len(ids) // overview.PAGE_SIZE))
    try:
        page = min(max(1, int(request.query_params.get("page", "1"))), pages)
    except ValueError:
        page = 1
    first = (page - 1) * overview.PAGE_SIZE
    views = _page_views(dash, slug, index, ids[first:first + overview.PAGE_SIZE])
    return Listing(show, query, page, pages, len(ids), first, views)


def _busy(index: overview.CourseIndex) -> bool:
    return any(line.status in (PENDING, RUNNING) for line in index.lines.values())


def handles_refusals(endpoint):  # noqa: ANN001, ANN201
    """Run a blocking endpoint on the thread pool (the body read first) and turn refusals into pages."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        request.state.body = await request.body() if request.method == "POST" else b""
        try:
            return await run_in_threadpool(endpoint, request)
        except _Refused as refused:
            return _error(request, refused.status, refused.message)
        except NarroError as error:
            return _error(request, 500, str(error))
    return wrapper


@handles_refusals
def courses_page(request: Request) -> Response:
    dash: Dashboard = request.app.state.dashboard
    slugs = dict.fromkeys(dash.catalogue.courses())
    summaries = []
    for slug in slugs:
        _, planned, index = _course(request, slug)
        summaries.append(overview.summarise(slug, index, dash.catalogue, planned))
    return _page(request, "courses.html", summaries=summaries, problems=dash.manifests.problems)


@handles_refusals
def course_page(request: Request) -> Response:
    slug = request.path_params["course"]
    dash, planned, index = _course(request, slug)
    listing = _listing(request, dash, slug, index)
    return _page(request, "course.html", course=slug, summary=overview.summarise(slug, index, dash.catalogue, planned),
                 listing=listing, views=listing.views, total=len(index.order), show=listing.show, query=listing.query,
                 planned=planned, voices=planned.course.voices.names() if planned and planned.course else [],
                 tiers=TIERS, notice=_notice(request, dash), busy=_busy(index),
                 rows_url=f"/courses/{slug}/rows?" + urlencode({k: v for k, v in request.query_params.items()}))


def _notice(request: Request, dash: Dashboard) -> str | None:
    run_id = request.query_params.get("started")
    if not run_id:
        return None
    if run_id in dash.retries.errors:
        return dash.retries.errors[run_id]
    return f"retry run {run_id} started for {request.query_params.get('n', '?')} clip(s)"


@handles_refusals
def course_rows(request: Request) -> Response:
    """The rows of the page shown (same filter, search and page), for the page's live update (it swaps rows that changed)."""
    slug = request.path_params["course"]
    dash, planned, index = _course(request, slug)
    listing = _listing(request, dash, slug, index)
    return _page(request, "rows.html", course=slug, views=listing.views, tiers=TIERS,
                 voices=planned.course.voices.names() if planned and planned.course else [],
                 summary=overview.summarise(slug, index, dash.catalogue, planned), busy=_busy(index))


@handles_refusals
def course_json(request: Request) -> Response:
    """Every clip of the course (an export: one query for the rows and one for the histories, not paged)."""
    slug = request.path_params["course"]
    dash, planned, index = _course(request, slug)
    summary = overview.summarise(slug, index, dash.catalogue, planned)
    states = {state.narration_id: state for state in dash.catalogue.clips(slug)}
    views = overview.clip_views(index.order, index, states, dash.catalogue.course_attempts(slug), dash.sidecars)
    return JSONResponse({
        "course": slug, "counts": summary.counts, "total_duration_s": summary.total_duration_s,
        "clips": [{**(v.state.as_dict() if v.state else {}), "narration_id": v.narration_id, "status": v.status,
                   "stale": v.stale, "stale_reasons": list(v.stale_reasons), "version": v.version,
                   "review": v.review, "review_note": describe(v.verdict, v.state.published_key if v.state else None)}
                  for v in views],
    })


@handles_refusals
def clip_page(request: Request) -> Response:
    slug, narration_id = request.path_params["course"], request.path_params["clip"]
    dash, planned, view = _one_clip(request, slug, narration_id)
    return _clip_page(request, dash, planned, view)


def _clip_page(request: Request, dash: Dashboard, planned: overview.Planned | None, view: overview.ClipView,
               status_code: int = 200, **extra: Any) -> Response:
    slug, narration_id = view.state.course if view.state else request.path_params["course"], view.narration_id
    attempts = dash.catalogue.attempts(slug, narration_id)
    keys = list(dict.fromkeys(k for a in attempts for k, _ in scalars(a.metrics)))
    waveform = captions = None
    if view.playable:
        waveform = _waveform(dash.store, slug, narration_id, f"Waveform of {narration_id}")
        captions = _captions(dash.store, slug, narration_id)
    added = request.query_params.get("added", "")
    course = planned.course if planned else None
    entry = next((e for e in course.lexicon.entries if e.term == added), None) if course and added else None
    return _page(request, "clip.html", status_code, course=slug, view=view, attempts=attempts, metric_keys=keys,
                 waveform=waveform, captions=captions, planned=planned, tiers=TIERS,
                 voices=course.voices.names() if course else [], notice=_notice(request, dash),
                 review_note=describe(view.verdict, view.state.published_key if view.state else None),
                 added=entry, added_clips=clips_with_term(course, added) if entry and course else (),
                 **{"lexicon_form": {}, "lexicon_problems": [], **extra})


def _captions(store: Store, course: str, narration_id: str) -> list[Any] | None:
    """The clip's published captions as cues, or None when it has none (or they cannot be read)."""
    try:
        data = store.read_object(course, f"{narration_id}.vtt")
    except NarroError:
        return None
    return caption_cues(data.decode("utf-8", "replace")) if data else None


@functools.lru_cache(maxsize=64)
def _cached_waveform(mp3: bytes, label: str) -> str:
    return waveform_svg(mp3, str(escape(label)))


def _waveform(store: Store, course: str, narration_id: str, label: str) -> str | None:
    data = store.read_mp3(course, narration_id)
    if data is None:
        return None
    try:
        return _cached_waveform(data, label)
    except NarroError:
        return None


@handles_refusals
def clip_json(request: Request) -> Response:
    slug, narration_id = request.path_params["course"], request.path_params["clip"]
    _, _, view = _one_clip(request, slug, narration_id)
    return JSONResponse({"narration_id": narration_id, "status": view.status, "busy": view.busy,
                         "version": view.version, "review": view.review})


@handles_refusals
def audio(request: Request) -> Response:
    """The published MP3 of a catalogued clip, and nothing else."""
    slug, narration_id = request.path_params["course"], request.path_params["clip"]
    _slugs(slug, narration_id)
    dash: Dashboard = request.app.state.dashboard
    state = dash.catalogue.clip(slug, narration_id)
    if state is None or state.published_key is None:
        raise _Refused(404, "no published audio for this clip")
    url = dash.store.audio_url(slug, narration_id)
    if url is not None:
        return RedirectResponse(url, 302)  # the browser streams it from the bucket
    path = dash.store.mp3_path(slug, narration_id)
    if path is not None:
        return FileResponse(path, media_type="audio/mpeg")  # answers range requests, so the player can seek
    data = dash.store.read_mp3(slug, narration_id)
    if data is None:
        raise _Refused(404, "no published audio for this clip")
    return Response(data, media_type="audio/mpeg")


@handles_refusals
def retry(request: Request) -> Response:
    slug = request.path_params["course"]
    form = _form(request)
    dash, planned, index = _course(request, slug)
    if planned is None or planned.course is None:
        why = planned.error if planned else "no manifest is known for this course"
        raise _Refused(409, f"cannot retry: {why}. Start the dashboard with --manifest PATH")
    if form.get("all_failed"):
        ids = [i for i in index.order if index.status(i) == FAILED]
        if not ids:
            raise _Refused(409, "no failed clips to retry")
    else:
        ids = [i for i in form.get("ids", []) if i]
    unknown = [i for i in ids if i not in planned.specs]
    if unknown or not ids:
        raise _Refused(400, f"not in the manifest of {slug}: {', '.join(unknown) or 'no clip named'}")
    voice = (form.get("voice") or [""])[0] or None
    tier = (form.get("tier") or [""])[0] or None
    try:
        override(planned.course, list(planned.specs.values()), ids, voice, tier)
        started = dash.retries.start(str(planned.path), slug, ids, voice, tier)
    except ManifestError as error:
        raise _Refused(400, "; ".join(p.message for p in error.problems)) from None
    except DashboardError as error:
        raise _Refused(409, str(error)) from None
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"run_id": started.run_id, "started": started.started, "skipped": started.skipped}, 202)
    back = _local((form.get("back") or [f"/courses/{slug}"])[0])
    joiner = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{joiner}{urlencode({'started': started.run_id, 'n': len(started.started)})}", 303)


@handles_refusals
def review(request: Request) -> Response:
    """Record a reviewer's verdict on the audio now published: approved, or flagged with a note."""
    slug, narration_id = request.path_params["course"], request.path_params["clip"]
    form = _form(request)
    dash, _, view = _one_clip(request, slug, narration_id)
    verdict = (form.get("verdict") or [""])[0]
    published = view.state.published_key if view.state else None
    try:
        note = check_verdict(verdict, (form.get("note") or [""])[0], (form.get("key") or [""])[0] or None, published)
    except ReviewError as error:
        raise _Refused(409, str(error)) from None
    assert published is not None  # check_verdict refuses a clip with nothing published
    dash.catalogue.record_verdict(slug, narration_id, content_key=published, verdict=verdict, note=note)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"narration_id": narration_id, "review": verdict, "note": note})
    return RedirectResponse(_local((form.get("back") or [f"/courses/{slug}/clips/{narration_id}"])[0]), 303)


@handles_refusals
def lexicon(request: Request) -> Response:
    """Add a lexicon entry from a flagged clip's page; a bad entry comes back with its problems, the file untouched."""
    slug, narration_id = request.path_params["course"], request.path_params["clip"]
    form = {key: values[0] for key, values in _form(request).items() if values}
    dash, planned, view = _one_clip(request, slug, narration_id)
    if planned is None or planned.course is None:
        why = planned.error if planned else "no manifest is known for this course"
        raise _Refused(409, f"cannot add a lexicon entry: {why}. Start the dashboard with --manifest PATH")
    term = form.get("term", "").strip()
    if not term:
        return _clip_page(request, dash, planned, view, 400, lexicon_form=form,
                          lexicon_problems=["term: give the term as the script writes it (e.g. VALL-E)"])
    try:
        added = add_lexicon_entry(planned.path, term,
                                  entry_value(form.get("say", ""), form.get("ipa", ""), bool(form.get("ignore_case"))))
    except ManifestError as error:
        return _clip_page(request, dash, planned, view, 400, lexicon_form=form,
                          lexicon_problems=[str(problem) for problem in error.problems])
    return RedirectResponse(f"/courses/{slug}/clips/{narration_id}?" + urlencode({"added": added.term}) + "#lexicon", 303)


@handles_refusals
def captions_file(request: Request) -> Response:
    """A published clip's captions as the store has them (.vtt or .srt)."""
    slug, narration_id, kind = request.path_params["course"], request.path_params["clip"], request.path_params["kind"]
    _slugs(slug, narration_id)
    dash: Dashboard = request.app.state.dashboard
    state = dash.catalogue.clip(slug, narration_id)
    data = dash.store.read_object(slug, f"{narration_id}.{kind}") if state and state.published_key else None
    if kind not in ("vtt", "srt") or data is None:
        raise _Refused(404, "no captions for this clip")
    return Response(data, media_type="text/vtt; charset=utf-8" if kind == "vtt" else "application/x-subrip")


@handles_refusals
def login_page(request: Request) -> Response:
    dash: Dashboard = request.app.state.dashboard
    if request.method == "POST":
        form = _form(request)
        if dash.guard.token_ok((form.get("token") or [""])[0]):
            session, cookie = dash.guard.new_session(signed_in=True)
            response = RedirectResponse(_local((form.get("next") or ["/"])[0]), 303)
            response.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", path="/")
            return response
        return _page(request, "login.html", 401, next=_local((form.get("next") or ["/"])[0]), wrong=True)
    if not dash.guard.needs_sign_in:
        return RedirectResponse("/", 303)
    return _page(request, "login.html", next=_local(request.query_params.get("next", "/")), wrong=False)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app(catalogue: Catalogue, store: Store, manifests: overview.Manifests, launcher: Launcher,
               guard: Guard, mode: str = "") -> Starlette:
    routes = [
        Route("/", courses_page),
        Route("/healthz", healthz),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/courses/{course}", course_page),
        Route("/courses/{course}/rows", course_rows),
        Route("/courses/{course}/clips.json", course_json),
        Route("/courses/{course}/retry", retry, methods=["POST"]),
        Route("/courses/{course}/clips/{clip}", clip_page),
        Route("/courses/{course}/clips/{clip}/state.json", clip_json),
        Route("/courses/{course}/clips/{clip}/review", review, methods=["POST"]),
        Route("/courses/{course}/clips/{clip}/lexicon", lexicon, methods=["POST"]),
        Route("/audio/{course}/{clip}.mp3", audio),
        Route("/captions/{course}/{clip}.{kind}", captions_file),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Security, guard=guard)])
    app.state.dashboard = Dashboard(catalogue, store, manifests, Retries(catalogue, store.url, launcher), guard, mode,
                                    overview.Sidecars(store))
    app.state.templates = templates()
    return app
