"""FastAPI application factory: lifespan loading, limits, errors, security headers, static page."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.api.openai_routes import (
    body_too_large,
    is_openai_path,
    openai_http_error,
    openai_router,
    openai_validation_error,
)
from service.api.routes import router
from service.api.state import AppState
from service.config import Settings, get_settings
from service.engine import Engine

log = logging.getLogger("service.api")

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
    """Refuse request bodies above ``limit`` bytes with 413 before anything parses them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(scope, send)
                return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        content = (
            body_too_large(self.limit)
            if is_openai_path(scope.get("path", ""))
            else {"error": f"request body too large (limit {self.limit} bytes)", "details": []}
        )
        response = JSONResponse(content, status_code=413)
        await response({"type": "http"}, _empty_receive, send)


class _BodyTooLarge(Exception):
    pass


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

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"content-security-policy", csp.encode()),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


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
        try:
            state.engine, _ = Engine.start(settings)
        except Exception as exc:  # reported by /readyz and logged; the process stays up
            state.load_error = str(exc)
            log.error("could not load the index: %s", exc)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if state.engine is None:
            if load_in_background:
                thread = threading.Thread(target=load, name="index-loader", daemon=True)
                thread.start()
            else:
                load()
        yield

    app = FastAPI(
        title="MSC evidence QA",
        version=__version__,
        summary="Cited answers from research summaries on mesenchymal stem cell therapy.",
        lifespan=lifespan,
    )
    app.state.qa = state
    app.include_router(router)
    app.include_router(openai_router)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if is_openai_path(request.url.path):
            return openai_validation_error(request, exc)
        details = []
        status = 422
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                status = 400
                details.append({"field": None, "message": "malformed JSON body"})
                continue
            message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            details.append({"field": _field_of(err.get("loc", ())), "message": message})
        error = "malformed JSON" if status == 400 else "invalid request"
        return JSONResponse({"error": error, "details": details}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if is_openai_path(request.url.path):
            return openai_http_error(request, exc)
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        return JSONResponse(
            {"error": detail, "details": []}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"error": "internal error", "details": []}, status_code=500)

    static_dir = resources.files("service") / "static"
    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")
    # Outermost first: the body limit runs before anything reads the body.
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    return app
