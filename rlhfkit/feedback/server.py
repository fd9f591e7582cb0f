"""The labeling page of ``rlhfkit label``, served over HTTP (Starlette + uvicorn) from a :class:`LabelSession`.

Routes:

``/``, ``/app.js``, ``/app.css``
    the one page (``static/``: plain HTML, JavaScript and CSS, no build step, nothing fetched from elsewhere).
``GET /api/task``, ``POST /api/vote``, ``POST /api/undo``
    the page's tasks and answers (JSON; :class:`~rlhfkit.feedback.session.LabelSession`); each names its
    labeler (and secret) in the query: ``?labeler=NAME[&key=SECRET]``.
``/status``, ``/status.json``
    items with enough votes, each labeler's count, and the agreement so far (:func:`status`).

Safe by default: the CLI binds 127.0.0.1, and then only ``Host: 127.0.0.1`` / ``localhost`` requests are served
(a web page elsewhere cannot reach the server through DNS rebinding). With named labelers (required on any other
host) ``/``, ``/api/*`` and ``/status*`` answer 403 without the right secret; the static files hold no data. Model
text reaches the page as JSON and is shown with ``textContent`` only; every answer carries a Content-Security-Policy
that allows scripts, styles and requests from this server alone (no inline script), ``no-referrer`` (the secrets in
the links never leave in a Referer) and ``no-store``. POSTs must be ``application/json`` (a form on another site
cannot send one without a CORS preflight, which this server does not answer).
"""

from __future__ import annotations

import html
import ipaddress
import json
import signal
import socket
import threading
from importlib.resources import files
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.feedback.session import LabelSession, Refused

HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
STATIC = {  # route -> (file in static/, media type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
MAX_BODY = 64 * 1024  # an answer is a few hundred bytes
NO_AGREEMENT = "agreement: needs >= 2 labelers on an item"


class SecurityHeaders:
    """ASGI middleware: :data:`HEADERS` on every answer, errors included."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(session: LabelSession, host: str = "127.0.0.1") -> Starlette:
    """The labeling page's application over ``session``, to be served on ``host``."""
    folder = files("rlhfkit.feedback").joinpath("static")
    static = {route: (folder.joinpath(name).read_bytes(), media) for route, (name, media) in STATIC.items()}
    agreement = _AgreementCache()

    def labeler_of(request: Request) -> str:
        labeler = request.query_params.get("labeler", "")
        if not session.allowed(labeler, request.query_params.get("key")):
            raise Refused(403, "this link has no valid key; ask for your own link")
        return labeler

    async def page(request: Request) -> Response:
        if request.url.path == "/" and session.keys is not None:
            labeler_of(request)
        content, media = static[request.url.path]
        return Response(content, media_type=media)

    async def task(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.task, labeler_of(request)))

    async def vote(request: Request) -> Response:
        labeler, body = labeler_of(request), await _json_body(request)
        return JSONResponse(await run_in_threadpool(session.vote, labeler, body))

    async def undo(request: Request) -> Response:
        labeler, body = labeler_of(request), await _json_body(request)
        return JSONResponse(await run_in_threadpool(session.undo, labeler, body))

    async def status_json(request: Request) -> Response:
        _status_key(session, request)
        return JSONResponse(await run_in_threadpool(status, session, agreement))

    async def status_page(request: Request) -> Response:
        _status_key(session, request)
        return HTMLResponse(status_html(await run_in_threadpool(status, session, agreement)))

    async def refused(request: Request, exc: Refused) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return PlainTextResponse(exc.message, status_code=exc.status)

    routes = [Route(path, page) for path in STATIC] + [
        Route("/api/task", task),
        Route("/api/vote", vote, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/status", status_page),
        Route("/status.json", status_json),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if is_loopback(host) and ":" not in host:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", host]))
    return Starlette(routes=routes, middleware=middleware, exception_handlers={Refused: refused})


async def _json_body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise Refused(415, "send the answer as application/json")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise Refused(413, f"an answer is at most {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Refused(400, "the body must be a JSON object")
    return data


def _status_key(session: LabelSession, request: Request) -> None:
    if not session.status_allowed(request.query_params.get("key")):
        raise Refused(403, "the status page needs its key: use the status link `rlhfkit label` printed")


class _AgreementCache:
    """The agreement statistics of the standing votes, computed again only when the votes changed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.key: tuple[str, ...] | None = None
        self.value: dict[str, Any] = {}

    def get(self, votes: list[dict[str, Any]]) -> dict[str, Any]:
        key = tuple(v["vote_id"] for v in votes)
        with self.lock:
            if key != self.key:
                self.key, self.value = key, agreement_of(votes)
            return self.value


def agreement_of(votes: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"agreement": <rlhfkit data agreement --json's dict> | None, "agreement_note": why it is None}``."""
    from rlhfkit.data.votes import vote_log_agreement

    if not votes:
        return {"agreement": None, "agreement_note": f"{NO_AGREEMENT} (no votes yet)"}
    try:
        return {"agreement": vote_log_agreement(votes), "agreement_note": ""}
    except DataError as e:
        return {"agreement": None, "agreement_note": f"{NO_AGREEMENT} ({e.problems[0]})"}


def status(session: LabelSession, agreement: _AgreementCache | None = None) -> dict[str, Any]:
    """What ``/status.json`` answers: the files and settings, ``tasks`` / ``tasks_complete`` (with ``overlap``
    votes) / ``tasks_started``, standing ``votes``, ``labelers`` (name -> done / left), ``agreement`` (the dict of
    ``rlhfkit data agreement --json``, None with ``agreement_note`` saying why)."""
    counts, votes = session.counts()
    return {**counts, **(agreement.get(votes) if agreement else agreement_of(votes))}


# (key of `rlhfkit data agreement --json`, label) shown on the status page
HEADLINE = (
    ("n_items", "pairs with votes"),
    ("n_votes", "votes"),
    ("mean_agreement", "mean agreement with the majority"),
    ("share_unanimous", "share unanimous"),
    ("fleiss_kappa", "Fleiss' kappa"),
    ("krippendorff_alpha", "Krippendorff's alpha"),
)
PER_LABELER = (
    ("agreement", "agreement"),
    ("n_compared", "compared"),
    ("tie_rate", "tie rate"),
    ("left_choice_rate", "left chosen"),
)


def status_html(report: dict[str, Any]) -> str:
    """The overview page of :func:`status`'s dict (every value escaped; refreshed every 10 s)."""
    agreement = report["agreement"] or {}
    per_labeler = {row["labeler"]: row for row in agreement.get("labelers", [])}
    header = ["labeler", "done", "left", *(label for _, label in PER_LABELER), "flagged"]
    rows = []
    for name, progress in report["labelers"].items():
        stats = per_labeler.get(name, {})
        cells = [name, progress["done"], progress["left"], *(stats.get(k) for k, _ in PER_LABELER)]
        rows.append(cells + [", ".join(stats.get("flag_reasons", []))])
    if agreement:
        headline = [(label, agreement.get(k)) for k, label in HEADLINE]
        notes = [agreement.get(k) for k in ("fleiss_kappa_note", "krippendorff_alpha_note") if agreement.get(k)]
    else:
        headline, notes = [], [report["agreement_note"]]
    summary = (
        f"{report['mode']} · {report['items']} items · {report['tasks']} tasks · overlap {report['overlap']} · "
        f"{report['tasks_complete']} tasks with enough votes, {report['tasks_started']} started · "
        f"{report['votes']} votes in {report['votes_file']}"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">'
        '<title>rlhfkit label: status</title><link rel="stylesheet" href="/app.css"></head><body class="status">'
        f"<h1>Labeling status</h1><p>{_escape(summary)}</p><h2>Labelers</h2>{_table(header, rows)}"
        f"<h2>Agreement so far</h2>{_table(['statistic', 'value'], headline)}"
        + "".join(f"<p>{_escape(note)}</p>" for note in notes)
        + "</body></html>"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if rows else ""


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (``port`` 0: a free one), or one ``ConfigError`` line saying why not.
    Connections wait in its backlog until the server runs, so a link printed right away works."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror}); pass another --port (0 picks a free one) or --host"
        ) from None
    return sock


def uvicorn_server(app: Starlette) -> uvicorn.Server:
    """A quiet uvicorn server for ``app`` (no access log; requests in flight get 5 s to finish at shutdown)."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def serve(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until SIGINT (Ctrl-C) or SIGTERM, then return after a graceful shutdown.

    uvicorn catches both signals, finishes the requests in flight and raises the signal again once it is done; the
    handlers set here take that second signal, so the caller returns normally and closes its files.
    """
    stopped = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn_server(app).run(sockets=[sock])
    finally:
        for sig, handler in stopped.items():
            signal.signal(sig, handler)
