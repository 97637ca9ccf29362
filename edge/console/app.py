"""The console's web application (Starlette): the page, its server-sent events, pictures, and the operators'
actions. Every action is checked here: a logged-in user (or, without a users file, this machine only), the
operator role for anything that changes a station or writes a review, and the session's CSRF token in the
``X-CSRF-Token`` header of every POST. Station names travel as the ``station`` query or body field."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge.console.review import ReviewError
from edge.console.service import Console
from edge.console.users import LOCAL, User

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
EVENT_S = 0.5  # the page's update interval
COMMANDS = ("pause", "resume", "set_threshold", "set_recipe")  # what an operator may send a station


class Refused(Exception):
    """An action not allowed or not possible: HTTP ``status`` and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def make_app(console: Console, session_minutes: int = 60, https: bool = False) -> Starlette:
    """The console's ASGI application."""
    users = console.settings.users

    def user_of(request: Request) -> User | None:
        if users is None:
            return LOCAL
        name, role = request.session.get("user"), request.session.get("role")
        return User(name, role) if name and role else None

    def csrf(request: Request) -> str:
        if "csrf" not in request.session:
            request.session["csrf"] = secrets.token_urlsafe(24)
        return request.session["csrf"]

    def require(request: Request, operator: bool = False) -> User:
        user = user_of(request)
        if user is None:
            raise Refused(401, "log in first")
        if request.method == "POST" and not secrets.compare_digest(
            request.headers.get("x-csrf-token", ""), request.session.get("csrf", "")
        ):
            raise Refused(403, "the page's session token is missing or stale: reload the page")
        if operator and not user.operator:
            raise Refused(403, f"{user.name} is a viewer: only operators change stations or review rejects")
        return user

    def station_of(name: str | None):
        station = console.station(name or "")
        if station is None:
            raise Refused(404, f"no station {name!r} on this console")
        return station

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as exc:
                return JSONResponse({"ok": False, "error": str(exc)}, status_code=exc.status)

        return endpoint

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def session(request: Request) -> Response:
        user = user_of(request)
        return JSONResponse(
            {
                "user": user.name if user else None,
                "role": user.role if user else None,
                "csrf": csrf(request),
                "login": users is not None,
            }
        )

    async def login(request: Request) -> Response:
        body = await _json(request)
        name, password = str(body.get("user", ""))[:64], str(body.get("password", ""))[:256]
        user = await run_in_threadpool(users.check, name, password) if users is not None else LOCAL
        if user is None:
            log.warning("log-in refused for %r from %s", name, request.client.host if request.client else "?")
            raise Refused(401, "wrong user name or password")
        request.session.clear()
        request.session.update({"user": user.name, "role": user.role, "csrf": secrets.token_urlsafe(24)})
        log.info("%s (%s) logged in from %s", user.name, user.role, request.client.host if request.client else "?")
        return JSONResponse({"ok": True, "user": user.name, "role": user.role, "csrf": request.session["csrf"]})

    async def logout(request: Request) -> Response:
        request.session.clear()
        return JSONResponse({"ok": True})

    async def events(request: Request) -> Response:
        require(request)
        watched = console.station(request.query_params.get("station", ""))

        async def stream():
            if watched is not None:
                watched.watchers += 1
            try:
                while not await request.is_disconnected():
                    payload = {"stations": [s.summary() for s in console.fleet.all()]}
                    if watched is not None:
                        payload["detail"] = await run_in_threadpool(
                            console.detail, watched.link.name, lambda name: _detail(console, name), EVENT_S * 0.9
                        )
                    yield f"data: {json.dumps(payload)}\n\n"
                    await asyncio.sleep(EVENT_S)
            finally:
                if watched is not None:
                    watched.watchers -= 1

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def preview(request: Request) -> Response:
        require(request)
        picture = station_of(request.query_params.get("station")).preview
        if picture is None:
            raise Refused(404, "no preview yet")
        return Response(picture.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def reject_picture(request: Request) -> Response:
        require(request)
        name = request.query_params.get("station")
        station_of(name)
        rejects = console.rejects.get(name)
        picture = rejects.picture(request.query_params.get("id", "")) if rejects is not None else None
        if picture is None:
            raise Refused(404, "that reject record is not kept (any more)")
        return FileResponse(picture)

    async def review(request: Request) -> Response:
        user = require(request, operator=True)
        body = await _json(request)
        name = body.get("station")
        station_of(name)
        rejects = console.rejects.get(name)
        if rejects is None:
            raise Refused(400, f"no reject folder for {name}: start edge-console with --rejects {name}=DIR")
        try:
            entry = await run_in_threadpool(
                console.review.mark, name, rejects, str(body.get("id", "")), str(body.get("mark", "")), user.name
            )
        except ReviewError as exc:
            raise Refused(400, str(exc)) from exc
        log.info("%s marked %s reject %s %s", user.name, name, entry["record"], entry["mark"])
        await run_in_threadpool(console.refresh_now, name)
        return JSONResponse({"ok": True, **entry})

    async def control(request: Request) -> Response:
        user = require(request, operator=True)
        body = await _json(request)
        name = body.pop("station", None)
        station = station_of(name)
        if station.control is None:
            raise Refused(400, f"no control link to {name}: start edge-console with --control {name}=ENDPOINT")
        if body.get("command") not in COMMANDS:
            raise Refused(400, f"command must be one of {', '.join(COMMANDS)}")
        answer = await run_in_threadpool(station.control, {**body, "for": user.name})
        log.info("%s: %s by %s → %s", name, body["command"], user.name, "ok" if answer.get("ok") else answer)
        await run_in_threadpool(console.refresh_now, name)
        return JSONResponse(answer, status_code=200 if answer.get("ok") else 409)

    async def false_reject(request: Request) -> Response:
        require(request)
        name = request.query_params.get("station")
        station_of(name)
        try:
            threshold = float(request.query_params.get("threshold", ""))
        except ValueError as exc:
            raise Refused(400, "threshold must be a number") from exc
        rate = console.false_reject_at(name, threshold) if math.isfinite(threshold) else None
        return JSONResponse({"threshold": threshold, "expected_false_reject": rate})

    routes = [
        Route("/", index),
        Route("/api/session", guarded(session)),
        Route("/api/login", guarded(login), methods=["POST"]),
        Route("/api/logout", guarded(logout), methods=["POST"]),
        Route("/api/events", guarded(events)),
        Route("/api/preview.jpg", guarded(preview)),
        Route("/api/reject.png", guarded(reject_picture)),
        Route("/api/review", guarded(review), methods=["POST"]),
        Route("/api/control", guarded(control), methods=["POST"]),
        Route("/api/false-reject", guarded(false_reject)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=secrets.token_urlsafe(32),  # new at every start: a restart logs everyone out
            session_cookie="edge_console",
            max_age=session_minutes * 60,
            same_site="strict",
            https_only=https,
        )
    ]
    return Starlette(routes=routes, middleware=middleware)


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError as exc:
        raise Refused(400, "send a JSON object") from exc
    if not isinstance(body, dict):
        raise Refused(400, "send a JSON object")
    return body


def _detail(console: Console, name: str) -> dict:
    """The station page's own part: rejects with their marks, the review summary, status and calibration."""
    rejects = console.rejects.get(name)
    marks = console.review.marks(name)
    gallery = []
    for record in rejects.latest(console.settings.gallery) if rejects is not None else []:
        verdict = record["verdict"]
        gallery.append(
            {
                "id": record["id"],
                "mark": marks.get(record["id"], {}).get("mark"),
                **{k: verdict.get(k) for k in ("seq", "frame_id", "time", "score", "threshold", "recipe")},
                "regions": len(verdict.get("regions") or ()),
            }
        )
    status = console.status.get(name, {})
    estimate = {k: v for k, v in console.estimates.get(name, {}).items() if k not in ("good_scores", "tail")}
    return {
        "rejects": gallery,
        "rejects_folder": rejects is not None,
        "thresholds": status.get("thresholds"),
        "paused": status.get("paused"),
        "recipes": status.get("recipes", []),
        "calibration": estimate or None,
    }
