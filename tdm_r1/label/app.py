"""The labelling web app (FastAPI): one prompt with its group of images, like / dislike each.

Pages (Jinja2 templates, a little plain JavaScript in ``static/label.js``, no build step):

* ``GET /``: the rater's name (kept in a cookie) on first visit, then the next pending group;
* ``GET /group/{id}``: the group page (mouse and keys: L like, D dislike, arrows move, U undo,
  N next); its side list of pending groups refreshes itself while a trainer adds groups;
* ``GET /image/{id}``: an image registered in the database, by its content hash only.

JSON API used by the page (and by the simulated rater, which goes through the same path):
``POST /api/label``, ``POST /api/undo``, ``GET /api/pending``, ``GET /api/group/{id}``.

Security: every POST carries the page token (``X-Label-Token`` header or ``token`` form field),
a secret drawn when the app starts and written into each page, so another site cannot post
labels through a rater's browser. Requests for a host the app was not started for, POSTs from
another site's pages and oversized bodies are refused before they reach an endpoint
(``tdm_r1.label.guard``). With ``access_token`` set (required off the loopback interface), every
request also needs the session cookie set by the login form (a random id, not the token).
Client ids of labels are the rater's own (``tdm_r1.label.client_ids``).
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations, which name
# classes imported inside create_app (fastapi is an optional extra).
import hmac
import logging
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

from tdm_r1.deps import require
from tdm_r1.errors import ConfigError, WaitTimeoutError
from tdm_r1.label.client_ids import CLIENT_ID_PATTERN, MAX_CLIENT_ID
from tdm_r1.label.db import LABELS, LabelDB, LabelDBError, LockedError, ReadOnlyError, UnknownImageError
from tdm_r1.label.guard import MISSING_TOKEN, WRONG_TOKEN, RequestGuard, Sessions, allowed_hosts
from tdm_r1.label.records import ClientIdConflictError

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
GROUP_ID = re.compile(r"^[0-9a-f]{32}$")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_RATER = 64
RATER_COOKIE, ACCESS_COOKIE = "tdm_rater", "tdm_access"


class HTTPProblem(Exception):
    """An HTTP error with a one-line reason (shown on the page or returned as JSON)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _status_of(exc: LabelDBError) -> int:
    if isinstance(exc, UnknownImageError):
        return 404
    if isinstance(exc, ClientIdConflictError):
        return 409
    if isinstance(exc, LockedError):
        return 423
    if isinstance(exc, ReadOnlyError):
        return 403
    return 400


def check_host(host: str, access_token: str | None) -> None:
    """Refuse to listen beyond this machine without an access token."""
    if host not in LOOPBACK and not access_token:
        raise ConfigError(
            f"refusing to listen on {host} without --token: anyone who can reach this machine could "
            "label. Give --token SECRET and share it with your raters (or keep the default 127.0.0.1)."
        )


def create_app(
    db: LabelDB,
    *,
    access_token: str | None = None,
    title: str = "tdmbench likes",
    host: str = "127.0.0.1",
    allowed_host: tuple[str, ...] | list[str] = (),
) -> Any:
    """The FastAPI application over an open :class:`LabelDB`, serving the host names ``host``
    (its bind address), loopback and ``allowed_host``."""
    fastapi = require("fastapi", purpose="the labelling app")
    require("jinja2", purpose="the labelling app")
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles
    from fastapi.templating import Jinja2Templates
    from pydantic import BaseModel, ConfigDict, Field

    page_token = secrets.token_urlsafe(24)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = fastapi.FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.db = db
    app.state.page_token = page_token
    app.state.hosts = allowed_hosts(host, allowed_host)
    app.add_middleware(RequestGuard, hosts=app.state.hosts, page_token=page_token)
    sessions = Sessions()

    class LabelIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        image_id: str = Field(max_length=64)
        group_id: str = Field(pattern=GROUP_ID.pattern)
        label: Literal["like", "dislike"]
        client_id: str | None = Field(None, max_length=MAX_CLIENT_ID, pattern=CLIENT_ID_PATTERN)

    class UndoIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        group_id: str = Field(pattern=GROUP_ID.pattern)

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")

    def problem(request: Request, status: int, reason: str) -> Response:
        if wants_json(request):
            return JSONResponse({"error": reason}, status_code=status)
        ctx = {"title": title, "status": status, "reason": reason}
        return templates.TemplateResponse(request, "error.html", ctx, status_code=status)

    @app.exception_handler(HTTPProblem)
    async def _problem(request: Request, exc: HTTPProblem) -> Response:
        return problem(request, exc.status, exc.reason)

    @app.exception_handler(LabelDBError)
    async def _db_error(request: Request, exc: LabelDBError) -> Response:
        return problem(request, _status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(p for p in first.get("loc", ()) if isinstance(p, str) and p != "body") or "body"
        return problem(request, 400, f"malformed request: {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> Response:
        return problem(request, 404, f"no page {request.url.path}")

    def logged_in(request: Request) -> bool:
        return not access_token or sessions.valid(request.cookies.get(ACCESS_COOKIE))

    def rater_of(request: Request, *, required: bool = True) -> str:
        if not logged_in(request):
            raise HTTPProblem(401, "this labelling app needs its access token: log in at / first")
        name = unquote(request.cookies.get(RATER_COOKIE, "")).strip()
        if len(name) > MAX_RATER:
            raise HTTPProblem(400, f"rater name longer than {MAX_RATER} characters: log in again at /")
        if required and not name:
            raise HTTPProblem(401, "no rater name: enter your name at / first")
        return name

    def check_token(request: Request, form_token: str | None = None) -> None:
        sent = request.headers.get("x-label-token") or form_token or ""
        if not sent:
            raise HTTPProblem(403, MISSING_TOKEN)
        if not hmac.compare_digest(sent.encode(), page_token.encode()):
            raise HTTPProblem(403, WRONG_TOKEN)

    def page(request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        ctx = {"title": title, "token": page_token, **ctx}
        return templates.TemplateResponse(request, template, ctx, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> Response:
        needs_access = not logged_in(request)
        name = unquote(request.cookies.get(RATER_COOKIE, "")).strip()[:MAX_RATER]
        if needs_access or not name:
            return page(request, "login.html", needs_access=needs_access, name=name)
        pending = db.pending(name, limit=1)
        if pending:
            return RedirectResponse(f"/group/{pending[0]['id']}", status_code=303)
        return page(request, "done.html", rater=name, stats=db.stats())

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        check_token(request, str(form.get("token", "")))
        name = str(form.get("name", "")).strip()
        if not name or len(name) > MAX_RATER:
            raise HTTPProblem(400, f"enter a rater name of 1 to {MAX_RATER} characters")
        resp = RedirectResponse("/", status_code=303)
        secure = request.url.scheme == "https"  # served over TLS: never send the cookies in clear
        if access_token:
            given = str(form.get("access", ""))
            if not hmac.compare_digest(given.encode(), access_token.encode()):
                raise HTTPProblem(401, "wrong access token: ask whoever started the app for it")
            resp.set_cookie(ACCESS_COOKIE, sessions.new(), httponly=True, samesite="strict", secure=secure)
        resp.set_cookie(RATER_COOKIE, quote(name), samesite="strict", max_age=3600 * 24 * 365, secure=secure)
        return resp

    @app.get("/group/{gid}", response_class=HTMLResponse)
    def group_page(request: Request, gid: str) -> Response:
        rater = rater_of(request, required=False)
        if not rater:
            return RedirectResponse("/", status_code=303)
        group = _group(gid, rater)
        pending = db.pending(rater, limit=10**9)
        return page(request, "group.html", rater=rater, group=group, pending=pending[:50], total=len(pending))

    def _group(gid: str, rater: str) -> dict[str, Any]:
        if not GROUP_ID.match(gid):
            raise HTTPProblem(404, f"no group {gid!r}")
        group = db.group(gid, rater)
        if group is None:
            raise HTTPProblem(404, f"no group {gid!r} in this label database")
        return group

    @app.get("/image/{image_id}")
    def image(request: Request, image_id: str) -> Response:
        rater_of(request, required=False)
        if not IMAGE_ID.match(image_id):
            raise HTTPProblem(404, "unknown image (images are served by their content hash only)")
        data, mime = db.image(image_id)
        return Response(data, media_type=mime, headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/pending")
    def api_pending(request: Request) -> dict[str, Any]:
        rater = rater_of(request)
        pending = db.pending(rater, limit=10**9)
        return {"rater": rater, "pending": pending[:50], "total": len(pending)}

    @app.get("/api/group/{gid}")
    def api_group(request: Request, gid: str) -> dict[str, Any]:
        return _group(gid, rater_of(request))

    @app.post("/api/label")
    def api_label(request: Request, body: LabelIn) -> dict[str, Any]:
        check_token(request)
        rater = rater_of(request)
        if not IMAGE_ID.match(body.image_id):
            raise HTTPProblem(404, f"unknown image {body.image_id!r}")
        row = db.add_label(
            body.image_id, rater, LABELS[body.label], group_id=body.group_id, client_id=body.client_id
        )
        return {"id": row.id, "image_id": row.image_id, "label": row.label, "stored": row.stored}

    @app.post("/api/undo")
    def api_undo(request: Request, body: UndoIn) -> dict[str, Any]:
        check_token(request)
        row = db.undo(rater_of(request), body.group_id)
        return {"undone": row.image_id if row else None}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


class BackgroundServer:
    """Run an app with uvicorn in a daemon thread on 127.0.0.1 (port 0 = any free port)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        uvicorn = require("uvicorn", purpose="the labelling app")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        cfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    #: Bounds of the two waits (seconds): the server starting, and its thread ending on stop.
    START_TIMEOUT = 30.0
    STOP_TIMEOUT = 10.0

    def start(self) -> "BackgroundServer":
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            waited = time.monotonic() - t0
            if not self.thread.is_alive():
                raise RuntimeError(f"the labelling app at {self.url} stopped while starting ({waited:.1f} s)")
            if waited > self.START_TIMEOUT:
                self.server.should_exit = True
                raise WaitTimeoutError(
                    f"the labelling app at {self.url} did not start within {self.START_TIMEOUT:g} s"
                )
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.STOP_TIMEOUT)
        self.sock.close()
        if self.thread.is_alive():  # a daemon thread: it cannot keep the process alive
            log.warning("the labelling app at %s did not stop within %g s", self.url, self.STOP_TIMEOUT)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    db: LabelDB,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    access_token: str | None = None,
    allowed_host: tuple[str, ...] | list[str] = (),
) -> None:
    """Serve the app in the foreground (``tdmbench label``)."""
    check_host(host, access_token)
    uvicorn = require("uvicorn", purpose="the labelling app")
    app = create_app(db, access_token=access_token, host=host, allowed_host=allowed_host)
    uvicorn.run(app, host=host, port=port, log_level="warning")
