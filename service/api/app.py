"""FastAPI application factory: lifespan loading, limits, errors, security headers, static page.

Every response carries ``X-Content-Type-Options: nosniff``, a Content-Security-Policy and no
``Server`` header (``service serve`` also turns off uvicorn's). CORS is off unless
``cors_origins`` lists origins; the per-client rate limit is off unless
``rate_limit_per_minute`` is set (see :mod:`service.api.ratelimit`); the admin endpoints are
off unless ``admin_token`` is set (see :mod:`service.api.admin_routes`). ``GET /metrics``
serves Prometheus metrics from a registry of the app's own unless ``metrics`` is off (see
:mod:`service.api.metrics`). Ratings of answers (:mod:`service.api.feedback_routes`) are on
unless ``feedback`` is 'off'.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Mount, Route

from service import __version__
from service.api.admin_routes import ADMIN_PREFIX, admin_disabled_router, admin_router
from service.api.citation_routes import citation_router
from service.api.errors import (
    error_schema_name,
    install_handlers,
    internal_error,
    too_large,
    too_large_detail,
)
from service.api.feedback_routes import FeedbackDesk, feedback_disabled_router, feedback_router
from service.api.metrics import (
    MetricsMiddleware,
    ServiceMetrics,
    metrics_disabled_router,
    metrics_router,
)
from service.api.openai_routes import auth_failure, openai_router
from service.api.ratelimit import RateLimitMiddleware, is_limited_path
from service.api.routes import router
from service.api.state import AppState
from service.chunk_index import BackendUnavailable
from service.config import Settings, get_settings
from service.engine import Engine
from service.reindexing import Reindexer

log = logging.getLogger("service.api")
#: Seconds between attempts to reach a storage backend that was down at start-up.
BACKEND_RETRY_S = 2.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's /docs and /redoc pages load their scripts from a CDN and run inline code.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
    "https://fastapi.tiangolo.com; frame-ancestors 'none'"
)


class BodyLimitMiddleware:
    """Refuse request bodies above ``limit`` bytes with 413 before anything parses them;
    ``larger`` names the paths allowed more (uploads)."""

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.default = limit
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.default)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(scope, send, limit)
                return
        received = 0
        started = False
        path: str = scope.get("path", "")

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing unchanged (any
                    # other error becomes a 400), so the handlers answer 413 in the right shape.
                    raise _BodyTooLarge(limit, path)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:  # pragma: no cover - the body is read before anything is sent
                raise
            await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        response = too_large(scope.get("path", ""), limit)
        await response({"type": "http"}, _empty_receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """A body found too large while being read (no Content-Length, or a false one)."""

    def __init__(self, limit: int, path: str) -> None:
        super().__init__(status_code=413, detail=too_large_detail(path, limit))  # type: ignore[arg-type]


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        csp = DOCS_CSP if path in ("/docs", "/redoc") else PAGE_CSP
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"content-security-policy", csp.encode()),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Answered here rather than by Starlette's outermost error middleware, so that the
            # 500 carries the security headers too. Nothing of the error is shown.
            if started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            response = internal_error(path)
            await response(scope, receive, send_with_headers)


def _document_rate_limit(app: FastAPI) -> None:
    """List the rate limit's 429 among the responses of every limited operation."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            for path, operations in spec.get("paths", {}).items():
                if not is_limited_path(path):
                    continue
                shape = error_schema_name(path)
                for operation in operations.values():
                    operation.setdefault("responses", {})["429"] = {
                        "description": "Rate limit exceeded; retry after Retry-After seconds.",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{shape}"}
                            }
                        },
                    }
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def _flat_routes(app: FastAPI, routers: Sequence[APIRouter]) -> list[BaseRoute]:
    """The app's routes in the order the router tries them: its own (the docs), those of the
    included ``routers``, then the mounts (the static files). For the metrics' templates."""
    own = [r for r in app.router.routes if isinstance(r, Route)]
    mounts = [r for r in app.router.routes if isinstance(r, Mount)]
    return [*own, *(r for included in routers for r in included.routes), *mounts]


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    load_in_background: bool = True,
) -> FastAPI:
    """Build the app. The model and index load once, at start-up (not per request).

    With ``engine`` given the app is ready at once; otherwise loading runs in a background
    thread so ``/healthz`` answers immediately and ``/readyz`` says 503 until the index is in.
    """
    settings = settings or get_settings()
    state = AppState(settings=settings, engine=engine)

    def load() -> None:
        while True:
            try:
                state.engine, ensured = Engine.start(settings)
                state.load_error = None
                if ensured.warning:
                    log.warning("%s", ensured.warning)
            except BackendUnavailable as exc:  # Qdrant down: /readyz says so; keep trying
                if state.load_error != f"{exc}; retrying":
                    log.error("could not load the index: %s; retrying", exc)
                state.load_error = f"{exc}; retrying"
                if not load_in_background:
                    return
                time.sleep(BACKEND_RETRY_S)
                continue
            except Exception as exc:  # reported by /readyz and logged; the process stays up
                state.load_error = str(exc)
                log.error("could not load the index: %s", exc)
            return

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if state.engine is None:
            if load_in_background:
                thread = threading.Thread(target=load, name="index-loader", daemon=True)
                thread.start()
            else:
                load()
        feedback.open()
        try:
            yield
        finally:
            feedback.close()

    app = FastAPI(
        title="MSC evidence QA",
        version=__version__,
        summary="Cited answers from research summaries on mesenchymal stem cell therapy.",
        lifespan=lifespan,
    )
    app.state.qa = state
    app.state.reindex = Reindexer()
    # One registry per app (not prometheus_client's global one): apps never share counts.
    metrics = (
        ServiceMetrics(CollectorRegistry(), state, app.state.reindex)
        if settings.metrics == "on"
        else None
    )
    app.state.metrics = metrics
    app.state.feedback = feedback = FeedbackDesk(settings)
    metrics_routes = (
        metrics_router(protected=settings.metrics_auth == "admin")
        if metrics is not None
        else metrics_disabled_router
    )
    routers = [
        router,
        citation_router,
        openai_router,
        admin_router if settings.admin_token else admin_disabled_router,
        metrics_routes,
        feedback_router if settings.feedback == "on" else feedback_disabled_router,
    ]
    for included in routers:
        app.include_router(included)

    install_handlers(app, auth_failure)

    if settings.rate_limit_per_minute > 0:
        _document_rate_limit(app)

    static_dir = resources.files("service") / "static"
    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")
    # Each add_middleware wraps the ones added before it, so the order from the outside in is:
    # metrics (when on: every request, timed to its last byte) -> security headers (on every
    # response, 500s included) -> CORS (when origins are set) -> rate limit (before any body
    # is read) -> body limit -> routes.
    # An upload carries a file (up to QA_MAX_FILE_BYTES) and its metadata in a multipart form.
    upload_limit = settings.max_file_bytes + 2 * settings.max_body_bytes
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_body_bytes,
        larger={ADMIN_PREFIX + "/documents": upload_limit},
    )
    if settings.rate_limit_per_minute > 0:
        app.add_middleware(RateLimitMiddleware, per_minute=settings.rate_limit_per_minute)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)
    if metrics is not None:
        # The routers included above, for the templates of requests answered before routing.
        routes = _flat_routes(app, routers)
        app.add_middleware(MetricsMiddleware, metrics=metrics, routes=routes)
    return app
