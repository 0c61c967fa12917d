"""Admin endpoints: live re-indexing and its status, behind ``QA_ADMIN_TOKEN``.

``POST /api/admin/reindex`` re-ingests the corpus folder while the service keeps answering:
the new build is written next to the one in service (see :mod:`service.index_store`), loaded
and verified in a worker thread, then swapped in at once (:meth:`Engine.swap`); a request that
started before the swap finishes on the index it started with. One re-index runs at a time; a
second request meanwhile gets 409. The response says what was built (documents, chunks,
texts embedded and reused, per-file problems, seconds). When the rebuild fails (no corpus, no
usable document, an index folder that cannot be written, a full disk) the response is a 500
naming the problem and the fix, and the index in service is untouched.

``GET /api/admin/status`` tells which build is served, whether a re-index is running (and its
stage), and how the last one ended.

Access: every admin request needs ``Authorization: Bearer <QA_ADMIN_TOKEN>`` (compared in
constant time); a missing or wrong token is a 401 and changes nothing, and wrong tokens are
logged with the client's address. With no token set the admin endpoints are disabled: they are
left out of the app and its OpenAPI schema, and any request under ``/api/admin/`` is a 404
saying how to enable them.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from service.api.schemas import ErrorResponse
from service.api.state import AppState, app_state
from service.documents import LoadProblem
from service.embedding import load_embedder
from service.engine import Engine, ReindexError, rebuild_index
from service.index_store import BuildReport, IndexData

log = logging.getLogger("service.api.admin")

ADMIN_PREFIX = "/api/admin"


# -- state -----------------------------------------------------------------------------------


@dataclass
class ReindexState:
    """The one re-index that may run, its progress, and how the last one ended."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started_at: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0
    last: dict[str, Any] | None = None

    def progress(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done, self.total = stage, done, total


def reindex_state(request: Request) -> ReindexState:
    state: ReindexState = request.app.state.reindex
    return state


# -- access ----------------------------------------------------------------------------------


# Declares the scheme in the OpenAPI schema; the check itself is require_admin's.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The value of QA_ADMIN_TOKEN, as `Authorization: Bearer <token>`.",
)


DISABLED = "admin endpoints are disabled; set QA_ADMIN_TOKEN to enable them"


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the right bearer token is sent (404 if admin is disabled after all)."""
    expected = app_state(request).settings.admin_token
    if not expected:
        raise HTTPException(status_code=404, detail=DISABLED)
    token = credentials.credentials.strip() if credentials is not None else ""
    challenge = {"WWW-Authenticate": 'Bearer realm="admin"'}
    if not token:
        raise HTTPException(
            status_code=401,
            detail="admin token required: send Authorization: Bearer <QA_ADMIN_TOKEN>",
            headers=challenge,
        )
    if not hmac.compare_digest(token.encode(), expected.encode()):
        client = request.client.host if request.client else "unknown"
        log.warning("wrong admin token from %s on %s", client, request.url.path)
        raise HTTPException(status_code=401, detail="wrong admin token", headers=challenge)


# -- response models -------------------------------------------------------------------------


class BuildInfo(BaseModel):
    build: str = Field(description="Name of the build folder in the index folder.")
    documents: int
    chunks: int
    sentences: int
    model: str
    dimension: int
    index_type: str
    built_at: str


class ProblemOut(BaseModel):
    path: str = Field(description="Corpus file, relative to the corpus folder.")
    reason: str = Field(description="Why it was skipped.")


class ReindexResult(BaseModel):
    status: Literal["ok"] = "ok"
    build: BuildInfo = Field(description="The build now in service.")
    previous_build: str | None = Field(description="The build served before this one.")
    documents: int
    chunks: int
    embedded: int = Field(description="Distinct texts sent to the embedding model.")
    reused: int = Field(description="Distinct texts whose vectors came from the previous build.")
    problems: list[ProblemOut] = Field(description="Corpus files skipped, and why.")
    seconds: float
    started_at: str
    finished_at: str


class ReindexFailure(ErrorResponse):
    status: Literal["failed"] = "failed"
    problems: list[ProblemOut] = Field(description="Corpus files skipped, and why.")
    serving: BuildInfo | None = Field(description="The build still in service (unchanged).")
    seconds: float
    started_at: str
    finished_at: str


class RunningReindex(BaseModel):
    started_at: str
    stage: str | None = Field(description="chunking, embedding chunks, embedding sentences, ...")
    done: int
    total: int


class AdminStatus(BaseModel):
    serving: BuildInfo | None = Field(description="The build in service (null: none loaded).")
    load_error: str | None = Field(description="Why no index could be loaded at start-up.")
    running: RunningReindex | None = Field(description="The re-index in progress, if any.")
    last_reindex: ReindexResult | ReindexFailure | None = Field(
        description="How the last re-index since start-up ended."
    )


# -- routes ----------------------------------------------------------------------------------

ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong admin token."},
}

admin_router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin"], dependencies=[Depends(require_admin)])
# Registered instead of admin_router when no token is set: the admin endpoints are then absent
# from the OpenAPI schema, and any request under /api/admin/ is a 404 saying how to enable them.
admin_disabled_router = APIRouter()


@admin_disabled_router.api_route(
    ADMIN_PREFIX + "/{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def admin_disabled(rest: str) -> None:
    raise HTTPException(status_code=404, detail=DISABLED)


StateDep = Annotated[AppState, Depends(app_state)]
ReindexDep = Annotated[ReindexState, Depends(reindex_state)]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_info(data: IndexData) -> BuildInfo:
    m = data.manifest
    return BuildInfo(
        build=data.path.name,
        documents=m.documents,
        chunks=m.chunks,
        sentences=m.sentences,
        model=m.model,
        dimension=m.dimension,
        index_type=m.index_type,
        built_at=m.built_at,
    )


def _problems(problems: list[LoadProblem]) -> list[ProblemOut]:
    return [ProblemOut(path=p.path, reason=p.reason) for p in problems]


def _rebuild(state: AppState, reindex: ReindexState) -> BuildReport:
    """In a worker thread: rebuild, then serve the new index (or start serving, if none)."""
    engine = state.engine
    if engine is not None:
        return engine.reindex(progress=reindex.progress)
    # Nothing was loaded at start-up (state.load_error says why): build from scratch.
    embedder = load_embedder(state.settings)
    report, data = rebuild_index(state.settings, embedder, progress=reindex.progress)
    state.engine = Engine(state.settings, embedder, data)
    state.load_error = None
    return report


@admin_router.post(
    "/reindex",
    response_model=ReindexResult,
    responses={
        **ADMIN_ERRORS,
        409: {"model": ErrorResponse, "description": "A re-index is already running."},
        500: {"model": ReindexFailure, "description": "The rebuild failed; nothing changed."},
        503: {"model": ErrorResponse, "description": "The index is still loading."},
    },
)
async def reindex(state: StateDep, running: ReindexDep) -> ReindexResult | JSONResponse:
    """Re-ingest the corpus and swap the new index in; questions are answered meanwhile."""
    if state.engine is None and state.load_error is None:
        raise HTTPException(
            status_code=503,
            detail="the index is still loading; try again in a few seconds",
            headers={"Retry-After": "2"},
        )
    if not running.lock.acquire(blocking=False):
        raise HTTPException(
            status_code=409,
            detail=(
                f"a re-index is already running (started {running.started_at}); wait for it "
                "to finish (GET /api/admin/status)"
            ),
        )
    started_at = _now()
    started = time.perf_counter()
    previous = state.engine.data.path.name if state.engine is not None else None
    try:
        running.started_at, running.stage, running.done, running.total = started_at, None, 0, 0
        log.info("re-index started")
        report = await run_in_threadpool(_rebuild, state, running)
    except Exception as exc:
        if isinstance(exc, ReindexError):
            message, problems = str(exc), exc.problems
        else:
            log.exception("re-index failed")
            message, problems = f"{type(exc).__name__}: {exc}", []
        engine = state.engine
        failure = ReindexFailure(
            error=f"re-index failed: {message}",
            problems=_problems(problems),
            serving=build_info(engine.data) if engine is not None else None,
            seconds=round(time.perf_counter() - started, 3),
            started_at=started_at,
            finished_at=_now(),
        )
        running.last = failure.model_dump(mode="json")
        log.error("re-index failed: %s", message)
        return JSONResponse(running.last, status_code=500)
    finally:
        running.started_at = None
        running.lock.release()
    assert state.engine is not None
    m = report.manifest
    result = ReindexResult(
        build=build_info(state.engine.data),
        previous_build=previous,
        documents=m.documents,
        chunks=m.chunks,
        embedded=report.embedded,
        reused=report.reused,
        problems=_problems(report.problems),
        seconds=round(report.seconds, 3),
        started_at=started_at,
        finished_at=_now(),
    )
    running.last = result.model_dump(mode="json")
    log.info(
        "re-index done: %s documents, %s chunks, %s problems, %.1f s",
        m.documents,
        m.chunks,
        len(report.problems),
        report.seconds,
    )
    return result


@admin_router.get("/status", response_model=AdminStatus, responses=ADMIN_ERRORS)
async def status(state: StateDep, running: ReindexDep) -> AdminStatus:
    """The build in service, the re-index in progress (if any) and how the last one ended."""
    engine = state.engine
    current = None
    if running.started_at is not None:
        current = RunningReindex(
            started_at=running.started_at,
            stage=running.stage,
            done=running.done,
            total=running.total,
        )
    last: ReindexResult | ReindexFailure | None = None
    if running.last is not None:
        model = ReindexResult if running.last.get("status") == "ok" else ReindexFailure
        last = model.model_validate(running.last)
    return AdminStatus(
        serving=build_info(engine.data) if engine is not None else None,
        load_error=state.load_error,
        running=current,
        last_reindex=last,
    )
