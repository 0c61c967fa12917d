"""HTTP routes: each parses input, calls the engine off the event loop, and shapes the output."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, cast

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from service.api.errors import invalid
from service.api.feedback_routes import with_answer_id
from service.api.metrics import record_answer
from service.api.schemas import (
    MAX_HISTORY_TURNS,
    AskRequest,
    AskResponse,
    ChunkOffsets,
    DocumentDetail,
    DocumentList,
    DocumentSummary,
    ErrorResponse,
    Health,
    Limits,
    Mode,
    PageOffsets,
    PassageOut,
    Ready,
    ResolutionOut,
    SearchResponse,
    SourceFields,
    clean_question,
)
from service.api.state import AppState, app_state, ready_engine
from service.chunk_index import BackendUnavailable
from service.config import Settings
from service.conversation import ResolvedAnswer, Turn, answer_resolved, corpus_terms, resolve
from service.engine import Engine
from service.retrieval import UnknownDocumentError

router = APIRouter()
EngineDep = Annotated[Engine, Depends(ready_engine)]
StateDep = Annotated[AppState, Depends(app_state)]
ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    415: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


def over_limits(
    settings: Settings, text: str, text_field: str, top_k: int | None
) -> JSONResponse | None:
    """The 422 for a question or top_k beyond the configured limits, or None."""
    if len(text) > settings.max_question_chars:
        return invalid(
            text_field,
            f"must be at most {settings.max_question_chars} characters (it has {len(text)})",
        )
    if top_k is not None and top_k > settings.max_top_k:
        return invalid("top_k", f"must be at most {settings.max_top_k}")
    return None


def _require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPException(status_code=415, detail="send the body as application/json")


@router.post(
    "/api/ask",
    response_model=AskResponse,
    responses=ERRORS,
    tags=["questions"],
    dependencies=[Depends(_require_json)],
)
async def ask(body: AskRequest, engine: EngineDep, request: Request) -> AskResponse | JSONResponse:
    """Answer a question with sentences quoted from the corpus, each cited."""
    refused = over_limits(engine.settings, body.question, "question", body.top_k)
    if refused is not None:
        return refused
    data = engine.data  # the build the answer comes from, recorded for feedback
    if body.history:
        reply = await _ask_in_conversation(body, engine, request)
        return with_answer_id(request, reply, engine, data, body.mode)
    try:
        answer = await run_in_threadpool(
            engine.ask, body.question, body.top_k, body.mode, body.document_ids
        )
    except UnknownDocumentError as exc:
        return invalid("document_ids", str(exc))
    record_answer(request, "/api/ask", answer)
    return with_answer_id(request, AskResponse.from_answer(answer), engine, data, body.mode)


async def _ask_in_conversation(
    body: AskRequest, engine: Engine, request: Request
) -> AskResponse | JSONResponse:
    """A question with the conversation before it: read as a follow-up when it leans on the
    earlier turns (:mod:`service.conversation`, the same reading as ``/v1/chat/completions``)."""
    history = body.history or []
    for n, turn in enumerate(history):
        if turn.role == "user" and len(turn.text) > engine.settings.max_question_chars:
            return invalid(
                f"history.{n}.text",
                f"must be at most {engine.settings.max_question_chars} characters",
            )
    turns = [
        Turn(t.role, t.text, tuple(t.document_ids) if t.document_ids is not None else None)
        for t in history
    ]
    turns.append(Turn("user", body.question))

    def answer() -> ResolvedAnswer:
        resolution = resolve(turns, corpus_terms(engine.data.documents))
        return answer_resolved(engine, resolution, body.top_k, body.mode, body.document_ids)

    try:
        resolved = await run_in_threadpool(answer)
    except UnknownDocumentError as exc:
        return invalid("document_ids", str(exc))
    record_answer(request, "/api/ask", resolved.answer)
    return AskResponse.from_answer(
        resolved.answer, ResolutionOut.of(resolved, engine.data.documents)
    )


@router.get("/api/search", response_model=SearchResponse, responses=ERRORS, tags=["questions"])
async def search(
    engine: EngineDep,
    q: Annotated[str, Query(description="The query (at most QA_MAX_QUESTION_CHARS).")],
    top_k: Annotated[
        int | None, Query(ge=1, description="Passages; omitted: QA_TOP_K, at most QA_MAX_TOP_K.")
    ] = None,
    mode: Annotated[
        Mode | None, Query(description="Retrieval mode; omitted: the service's default.")
    ] = None,
) -> SearchResponse | JSONResponse:
    """Ranked passages with their citation fields."""
    try:
        query = clean_question(q)
    except ValueError as exc:
        return invalid("q", str(exc))
    refused = over_limits(engine.settings, query, "q", top_k)
    if refused is not None:
        return refused
    outcome = await run_in_threadpool(engine.search, query, top_k, mode)
    return SearchResponse(
        query=query,
        mode=cast(Mode, outcome.mode),
        results=[PassageOut.from_hit(h) for h in outcome.hits],
        timings_ms=outcome.timings_ms,
    )


@router.get("/api/documents", response_model=DocumentList, responses=ERRORS, tags=["documents"])
async def list_documents(engine: EngineDep) -> DocumentList:
    """Every document with its citation metadata and chunk count."""
    data = engine.data
    docs = sorted(data.documents.values(), key=lambda d: d.id)
    return DocumentList(
        documents=[DocumentSummary.of_document(d, data.chunk_counts.get(d.id, 0)) for d in docs]
    )


@router.get(
    "/api/documents/{document_id}",
    response_model=DocumentDetail,
    responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    tags=["documents"],
)
async def get_document(document_id: str, engine: EngineDep) -> DocumentDetail:
    """One document: metadata, full text, and the offsets of its chunks in that text."""
    data = engine.data
    doc = data.documents.get(document_id)
    if doc is None:
        raise HTTPException(status_code=404, detail=f"no document with id '{document_id}'")
    chunks = [
        ChunkOffsets(chunk_id=c.id, section=c.section, start=c.start, end=c.end)
        for c in data.chunks_of(document_id)
    ]
    return DocumentDetail(
        id=doc.id,
        chunk_count=len(chunks),
        **SourceFields.of(doc),
        text=doc.text,
        reference=doc.reference,
        chunks=chunks,
        pages=[
            PageOffsets(page=n, start=start, end=end)
            for n in range(1, len(doc.pages) + 1)
            if (span := doc.page_range(n)) is not None
            for start, end in (span,)
        ],
    )


@router.get("/api/limits", response_model=Limits, tags=["questions"])
async def limits(state: StateDep) -> Limits:
    """The longest question, the passage counts and the conversation length a request may
    ask for."""
    s = state.settings
    return Limits(
        max_question_chars=s.max_question_chars,
        top_k=s.top_k,
        max_top_k=s.max_top_k,
        max_history_turns=MAX_HISTORY_TURNS,
        max_comment_chars=s.feedback_max_comment_chars,
    )


@router.get("/healthz", response_model=Health, tags=["operations"])
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get(
    "/readyz", response_model=Ready, responses={503: {"model": ErrorResponse}}, tags=["operations"]
)
async def readyz(state: StateDep, request: Request) -> Ready:
    """The index is loaded and questions can be answered (its backend answers, too)."""
    engine = ready_engine(request)
    try:
        data = await run_in_threadpool(engine.ensure_current)
    except BackendUnavailable as exc:
        raise HTTPException(
            status_code=503, detail=str(exc), headers={"Retry-After": "2"}
        ) from None
    m = data.manifest
    return Ready(
        status="ready",
        documents=m.documents,
        chunks=m.chunks,
        model=m.model,
        index_built_at=m.built_at,
        index_type=m.index_type,
        warning=engine.index_warning,
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index_page() -> HTMLResponse:
    page = resources.files("service") / "static" / "index.html"
    return HTMLResponse(page.read_text(encoding="utf-8"))
