"""The API's two error formats, and the one place that chooses between them by path.

- The service's own (``/api/*``, the page):
  ``{"error": str, "details": [{"field", "message"}]}``.
- OpenAI's, on every path under ``/v1/``: ``{"error": {"message", "type", "param", "code"}}``.

Routes return :func:`invalid` (a 422 for one field) or raise ``HTTPException`` (OpenAI routes:
:func:`openai_fail`, whose detail is already an OpenAI error); :func:`install_handlers` turns
validation errors, HTTP errors and unexpected exceptions into the right format, and the
middlewares answer over-large bodies, rate-limited and failed requests with
:func:`too_large`, :func:`rate_limited` and :func:`internal_error`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.chunk_index import BackendUnavailable

log = logging.getLogger("service.api")

OPENAI_PREFIX = "/v1/"


def is_openai_path(path: str) -> bool:
    return path == OPENAI_PREFIX.rstrip("/") or path.startswith(OPENAI_PREFIX)


# -- the service's format ----------------------------------------------------------------------


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str


class ErrorResponse(BaseModel):
    error: str
    details: list[ErrorDetail] = []


def api_error(
    status: int,
    error: str,
    details: Sequence[dict[str, Any]] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": error, "details": list(details)}, status_code=status, headers=headers
    )


def invalid(field: str, message: str) -> JSONResponse:
    """A 422 for one bad field."""
    return api_error(422, "invalid request", [{"field": field, "message": message}])


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field; 400 for a body that is not JSON."""
    details = []
    status = 422
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            status = 400
            details.append({"field": None, "message": "malformed JSON body"})
            continue
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        details.append({"field": _field_of(err.get("loc", ())), "message": message})
    return api_error(status, "malformed JSON" if status == 400 else "invalid request", details)


# -- OpenAI's format ---------------------------------------------------------------------------

#: The ``/v1`` API-key check: the 401 to send, or None.
AuthCheck = Callable[[Request], "HTTPException | None"]


def _no_auth(_request: Request) -> HTTPException | None:
    return None


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody


def error_body(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status, headers=headers)


def openai_fail(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    type_: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> HTTPException:
    """An HTTPException whose detail is an OpenAI error (see :func:`openai_http_error`)."""
    detail = {"message": message, "type": type_, "param": param, "code": code}
    return HTTPException(status_code=status, detail=detail, headers=headers)


def openai_http_error(
    request: Request, exc: StarletteHTTPException, auth: AuthCheck = _no_auth
) -> JSONResponse:
    """An HTTP error on a ``/v1`` path, in OpenAI's shape (``auth``: the API-key check, so an
    unknown path still answers 401 first when the key is wrong)."""
    headers = dict(exc.headers) if exc.headers else None
    if isinstance(exc.detail, dict) and "message" in exc.detail:
        detail = exc.detail
        return error_response(
            exc.status_code,
            str(detail["message"]),
            str(detail.get("type") or "invalid_request_error"),
            detail.get("param"),
            detail.get("code"),
            headers,
        )
    status = exc.status_code
    if status in (404, 405) and (failure := auth(request)) is not None:
        return openai_http_error(request, failure)  # unknown paths: the key is checked first too
    if status == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
        return error_response(404, message, headers=headers)
    if status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
        return error_response(405, message, headers=headers)
    message = exc.detail if isinstance(exc.detail, str) else "error"
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    return error_response(status, message, type_, headers=headers)


def openai_validation_error(
    request: Request, exc: RequestValidationError, auth: AuthCheck = _no_auth
) -> JSONResponse:
    """A malformed or invalid request on a ``/v1`` path: 400 in OpenAI's shape.

    A missing or wrong API key wins: an unauthenticated client learns nothing about the
    request it sent.
    """
    failure = auth(request)
    if failure is not None:
        return openai_http_error(request, failure)
    errors = exc.errors()
    if not errors:
        return error_response(400, "Invalid request.")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return error_response(
            400,
            "We could not parse the JSON body of your request. Send valid JSON with "
            "Content-Type: application/json.",
        )
    param = _param(first.get("loc", ()))
    if first.get("type") == "missing":
        return error_response(
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    where = f" for '{param}'" if param else ""
    return error_response(
        400, f"Invalid value{where}: {message}", param=param, code="invalid_value"
    )


# Union members pydantic names in error locations ("str", "list[ContentPart]"): not fields.
_TYPE_TAG = re.compile(r"^(?:str|int|float|bool|none|list|dict|literal)$|\[", re.IGNORECASE)


def _param(loc: Sequence[Any]) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``messages[0].role``."""
    parts: list[str] = []
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif not parts:
            parts.append(str(part))
        elif not _TYPE_TAG.search(str(part)):
            parts.append(f".{part}")
    return "".join(parts) or None


# -- chosen by path ----------------------------------------------------------------------------


def too_large(path: str, limit: int) -> JSONResponse:
    """The 413 for a body over ``limit`` bytes (answered before anything parses it)."""
    if is_openai_path(path):
        return JSONResponse({"error": too_large_detail(path, limit)}, status_code=413)
    return api_error(413, str(too_large_detail(path, limit)))


def too_large_detail(path: str, limit: int) -> str | dict[str, Any]:
    """The detail of the 413 ``HTTPException`` raised while a body is read (the handlers
    format it: OpenAI's error object under ``/v1/``, else a message)."""
    if is_openai_path(path):
        message = f"Request body too large (limit {limit} bytes)."
        detail: dict[str, Any] = error_body(message, code="request_too_large")["error"]
        return detail
    return f"request body too large (limit {limit} bytes)"


def rate_limited(path: str, per_minute: int, retry_after: str) -> JSONResponse:
    headers = {"Retry-After": retry_after}
    if is_openai_path(path):
        return error_response(
            429,
            f"Rate limit reached: {per_minute} requests per minute. Try again in {retry_after} s.",
            "requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    message = (
        f"rate limit exceeded ({per_minute} requests per minute per client); "
        f"retry after {retry_after} s"
    )
    return api_error(429, message, headers=headers)


def internal_error(path: str) -> JSONResponse:
    """The generic 500: the service's error shape, or OpenAI's under ``/v1/``."""
    if is_openai_path(path):
        return error_response(
            500, "The server had an error while processing your request.", "server_error"
        )
    return api_error(500, "internal error")


def backend_unavailable(path: str, exc: BackendUnavailable) -> JSONResponse:
    """503 for a storage backend that cannot answer (Qdrant down, its collection gone)."""
    headers = {"Retry-After": "2"}
    if is_openai_path(path):
        return error_response(503, str(exc), "server_error", None, "backend_unavailable", headers)
    return api_error(503, str(exc), headers=headers)


def error_schema_name(path: str) -> str:
    """The OpenAPI schema of a path's error responses."""
    return "OpenAIErrorResponse" if is_openai_path(path) else "ErrorResponse"


def _clearer_body_error(exc: StarletteHTTPException) -> StarletteHTTPException:
    """FastAPI's 400 "error parsing the body", saying why when the cause is known."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return exc
    if isinstance(cause, RecursionError):
        detail = "malformed JSON: the body is nested too deeply"
    elif isinstance(cause, UnicodeDecodeError):
        detail = "malformed JSON: the body is not valid UTF-8"
    else:
        return exc
    return StarletteHTTPException(status_code=400, detail=detail, headers=exc.headers)


def install_handlers(app: FastAPI, openai_auth: AuthCheck = _no_auth) -> None:
    """Answer validation errors, HTTP errors and unexpected exceptions in the path's format."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if is_openai_path(request.url.path):
            return openai_validation_error(request, exc, openai_auth)
        return validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        exc = _clearer_body_error(exc)
        if is_openai_path(request.url.path):
            return openai_http_error(request, exc, openai_auth)
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        headers = dict(exc.headers) if exc.headers else None
        return api_error(exc.status_code, detail, headers=headers)

    @app.exception_handler(BackendUnavailable)
    async def _backend_down(request: Request, exc: BackendUnavailable) -> JSONResponse:
        return backend_unavailable(request.url.path, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Normally the security-headers middleware answers first; this is the last resort.
        log.exception("unhandled error")
        return internal_error(request.url.path)
