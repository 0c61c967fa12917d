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
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile as StarletteUpload

from service.api.schemas import DocumentSummary, ErrorResponse
from service.api.state import AppState, app_state
from service.chunk_index import ChunkIndex
from service.corpus_files import AddFiles, CorpusChangeError, RemoveFiles, check_upload, removal_for
from service.documents import LoadProblem
from service.engine import Engine
from service.reindexing import ReindexBusy, Reindexer, ReindexOutcome

log = logging.getLogger("service.api.admin")

ADMIN_PREFIX = "/api/admin"


def reindexer(request: Request) -> Reindexer:
    running: Reindexer = request.app.state.reindex
    return running


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
ReindexDep = Annotated[Reindexer, Depends(reindexer)]


def build_info(data: ChunkIndex) -> BuildInfo:
    m = data.manifest
    return BuildInfo(
        build=data.build_name,
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
    try:
        return await _changed(state, running, None)
    except _Failed as failed:
        return JSONResponse(failed.failure.model_dump(mode="json"), status_code=500)


def _shape(outcome: ReindexOutcome, engine: Engine | None) -> ReindexResult | ReindexFailure:
    """A re-index outcome as the endpoint's response model."""
    serving = build_info(engine.data) if engine is not None else None
    if outcome.report is None or serving is None:
        return ReindexFailure(
            error=f"re-index failed: {outcome.error}",
            problems=_problems(outcome.problems),
            serving=serving,
            seconds=outcome.seconds,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
        )
    report, m = outcome.report, outcome.report.manifest
    return ReindexResult(
        build=serving,
        previous_build=outcome.previous_build,
        documents=m.documents,
        chunks=m.chunks,
        embedded=report.embedded,
        reused=report.reused,
        problems=_problems(report.problems),
        seconds=outcome.seconds,
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
    )


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
    last = _shape(running.last, engine) if running.last is not None else None
    return AdminStatus(
        serving=build_info(engine.data) if engine is not None else None,
        load_error=state.load_error,
        running=current,
        last_reindex=last,
    )


# -- documents: upload and delete --------------------------------------------------------------


class AddedDocument(DocumentSummary):
    path: str = Field(description="Where it is stored, relative to the corpus folder.")
    page_count: int = Field(description="Pages of a PDF; 0 for other formats.")


class DocumentsAdded(BaseModel):
    status: Literal["ok"] = "ok"
    documents: list[AddedDocument] = Field(description="The documents the file gave.")
    reindex: ReindexResult = Field(description="The re-index that put them in service.")


class DocumentRemoved(BaseModel):
    status: Literal["ok"] = "ok"
    removed: str = Field(description="The id of the document taken out.")
    files: list[str] = Field(description="Files removed from the corpus folder.")
    reindex: ReindexResult


_REFUSED_STATUS = {
    "unsupported": 415,
    "too_large": 413,
    "unreadable": 422,
    "duplicate": 409,
    "not_found": 404,
    "shared": 409,
}

CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ADMIN_ERRORS,
    409: {"model": ErrorResponse, "description": "A duplicate, or a re-index is running."},
    500: {"model": ReindexFailure, "description": "The rebuild failed; nothing changed."},
    503: {"model": ErrorResponse, "description": "The index is still loading."},
}


async def _upload_form(request: Request) -> tuple[StarletteUpload, StarletteUpload | None]:
    """The ``file`` (and optional ``metadata``) parts of a multipart upload; 400 otherwise."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(
            status_code=415,
            detail="send the document as multipart/form-data with a 'file' part",
        )
    try:
        form = await request.form(max_files=2, max_fields=4)
    except Exception as exc:  # the multipart parser's errors (no boundary, bad framing)
        raise HTTPException(status_code=400, detail=f"malformed multipart body: {exc}") from None
    file, metadata = form.get("file"), form.get("metadata")
    if not isinstance(file, StarletteUpload):
        raise HTTPException(status_code=422, detail="the form has no 'file' part with a file")
    if metadata is not None and not isinstance(metadata, StarletteUpload):
        raise HTTPException(status_code=422, detail="'metadata' must be a file part")
    return file, metadata


async def _read_limited(upload: StarletteUpload, limit: int) -> bytes:
    """The upload's bytes; 413 as soon as it passes ``limit`` (nothing more is read)."""
    data = bytearray()
    while chunk := await upload.read(1 << 20):
        data += chunk
        if len(data) > limit:
            raise HTTPException(
                status_code=413,
                detail=f"the file is larger than the limit of {limit:,} bytes (QA_MAX_FILE_BYTES)",
            )
    return bytes(data)


async def _changed(
    state: AppState, running: Reindexer, change: AddFiles | RemoveFiles | None
) -> ReindexResult:
    """Apply ``change`` (if any) and re-index; 409 when a re-index is already running,
    :class:`_Failed` when the rebuild fails (the change undone, the index unchanged)."""
    try:
        outcome, engine = await run_in_threadpool(running.run, state.settings, state.engine, change)
    except ReindexBusy as busy:
        raise HTTPException(
            status_code=409, detail=f"{busy}; wait for it to finish (GET /api/admin/status)"
        ) from None
    if engine is not None and state.engine is None:
        state.engine, state.load_error = engine, None
    shaped = _shape(outcome, state.engine)
    if isinstance(shaped, ReindexFailure):
        raise _Failed(shaped)
    return shaped


class _Failed(Exception):
    def __init__(self, failure: ReindexFailure) -> None:
        self.failure = failure


def _ready(state: AppState) -> Engine:
    if state.engine is None:
        raise HTTPException(
            status_code=503,
            detail="the index is still loading; try again in a few seconds",
            headers={"Retry-After": "2"},
        )
    return state.engine


@admin_router.post(
    "/documents",
    response_model=DocumentsAdded,
    status_code=201,
    responses={
        **CHANGE_ERRORS,
        413: {"model": ErrorResponse, "description": "The file is over QA_MAX_FILE_BYTES."},
        415: {"model": ErrorResponse, "description": "Not a .pdf, .md, .txt or .html file."},
        422: {"model": ErrorResponse, "description": "The file cannot be read (the reason)."},
    },
    # The form is read in the handler, after the token check: a request without the token is
    # refused (401) before any of its body is parsed. Its shape, for the OpenAPI schema:
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": "A .pdf, .md, .txt or .html document.",
                            },
                            "metadata": {
                                "type": "string",
                                "format": "binary",
                                "description": "For a PDF: its citation as YAML (title, "
                                "authors, year, doi, ...).",
                            },
                        },
                    }
                }
            },
        }
    },
)
async def add_document(
    request: Request, state: StateDep, running: ReindexDep
) -> DocumentsAdded | JSONResponse:
    """Add a document to the corpus and re-index; questions are answered meanwhile."""
    engine = _ready(state)
    settings = state.settings
    file, metadata = await _upload_form(request)
    data = await _read_limited(file, settings.max_file_bytes)
    sidecar = await _read_limited(metadata, 65_536) if metadata is not None else None
    existing = list(engine.data.documents.values())
    try:
        upload = await run_in_threadpool(
            check_upload, settings, file.filename or "", data, existing, sidecar
        )
    except CorpusChangeError as exc:
        raise HTTPException(status_code=_REFUSED_STATUS[exc.kind], detail=str(exc)) from None
    try:
        result = await _changed(state, running, AddFiles(settings.corpus_dir, [upload]))
    except _Failed as failed:
        return JSONResponse(failed.failure.model_dump(mode="json"), status_code=500)
    data_now = _ready(state).data
    counts = data_now.chunk_counts
    added = [
        AddedDocument(
            path=doc.path,
            page_count=len(doc.pages),
            **DocumentSummary.of_document(doc, counts.get(doc.id, 0)).model_dump(),
        )
        for doc in data_now.documents.values()
        if doc.path == upload.name
    ]
    return DocumentsAdded(documents=added, reindex=result)


@admin_router.delete(
    "/documents/{document_id}",
    response_model=DocumentRemoved,
    responses={**CHANGE_ERRORS, 404: {"model": ErrorResponse, "description": "No such id."}},
)
async def remove_document(
    document_id: str, state: StateDep, running: ReindexDep
) -> DocumentRemoved | JSONResponse:
    """Take a document (its file and metadata file) out of the corpus and re-index."""
    engine = _ready(state)
    try:
        removal = removal_for(state.settings, document_id, list(engine.data.documents.values()))
    except CorpusChangeError as exc:
        raise HTTPException(status_code=_REFUSED_STATUS[exc.kind], detail=str(exc)) from None
    try:
        result = await _changed(state, running, removal)
    except _Failed as failed:
        return JSONResponse(failed.failure.model_dump(mode="json"), status_code=500)
    return DocumentRemoved(removed=document_id, files=list(removal.names), reindex=result)
