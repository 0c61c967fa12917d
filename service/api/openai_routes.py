"""OpenAI-compatible endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Any client that speaks the OpenAI chat protocol (the ``openai`` package, Open WebUI, LibreChat,
...) can use the service by pointing its base URL at ``http://HOST:PORT/v1``. The model list
holds one id (setting ``openai_model_id``). The reply is the same cited answer ``/api/ask``
gives, as Markdown: the quoted sentences with their ``[n]`` markers, a "References" list of
exactly the cited sources, and the disclaimer. Structured citations travel in an extra
top-level ``citations`` field (and, when streaming, on the final chunk), which standard clients
ignore. Earlier turns resolve follow-up questions (see :mod:`service.conversation`).

Sampling parameters (``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed``, ``n``,
...) are accepted and ignored: answers are quoted, not generated, so there is nothing to
sample, and cutting a quotation short would break its citation. One choice is returned.
System messages are ignored too; the service does not follow instructions.

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, on every path
under ``/v1/``; the application's exception handlers and body-size limit call the helpers at
the end of this module for those paths. When ``openai_api_key`` is set, every ``/v1`` request
needs ``Authorization: Bearer <key>``; the key is checked before anything else about the
request (its JSON, its fields) is reported.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.answering import Answer, AnswerStatus
from service.api.schemas import CitationOut, clean_question
from service.api.state import app_state, ready_engine
from service.conversation import ResolvedAnswer, Turn, answer_resolved, corpus_terms, resolve
from service.conversation import message_text as _message_text
from service.documents import Document
from service.engine import Engine

OPENAI_PREFIX = "/v1/"
OWNER = "msc-evidence-qa"
_STARTED = int(time.time())


def is_openai_path(path: str) -> bool:
    return path == OPENAI_PREFIX.rstrip("/") or path.startswith(OPENAI_PREFIX)


# -- errors ----------------------------------------------------------------------------------


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


def _fail(
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


def _auth_failure(request: Request) -> HTTPException | None:
    """The 401 to send when ``openai_api_key`` is set and the request lacks it, else None."""
    expected = app_state(request).settings.openai_api_key
    if not expected:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not token:
        return _fail(
            401,
            "You didn't provide an API key. Send it in an Authorization header using Bearer "
            "auth (Authorization: Bearer YOUR_KEY).",
            headers=challenge,
        )
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return _fail(401, "Incorrect API key provided.", code="invalid_api_key", headers=challenge)
    return None


def require_api_key(request: Request) -> None:
    failure = _auth_failure(request)
    if failure is not None:
        raise failure


def openai_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """An HTTP error on a ``/v1`` path, in OpenAI's shape."""
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
    if status in (404, 405) and (failure := _auth_failure(request)) is not None:
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


def openai_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A malformed or invalid request on a ``/v1`` path: 400 in OpenAI's shape.

    A missing or wrong API key wins: an unauthenticated client learns nothing about the
    request it sent.
    """
    failure = _auth_failure(request)
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


def body_too_large(limit: int) -> dict[str, Any]:
    """The 413 body for ``/v1`` paths (the body-limit middleware answers before routing)."""
    return error_body(f"Request body too large (limit {limit} bytes).", code="request_too_large")


# -- request models --------------------------------------------------------------------------


class ContentPart(BaseModel):
    """One part of a message's content; only text parts are read."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="'text' (read), or 'image_url', 'input_audio', ... (ignored)")
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    citations: list[dict[str, Any]] | None = Field(
        None,
        description=(
            "On an assistant message: the `citations` this service returned with it, if the "
            "client sends them back (otherwise the References in `content` are read)."
        ),
    )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """The standard request; unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The id listed by GET /v1/models.")
    messages: list[ChatMessage] = Field(
        min_length=1, description="The conversation; the last user message is the question."
    )
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    seed: int | None = None


# -- response models -------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop"] = "stop"


class Usage(BaseModel):
    """Approximate: words, not tokens (there is no tokenizer behind this model)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResolutionOut(BaseModel):
    """How the question was read (extra field; standard clients ignore it)."""

    question: str
    follow_up: bool
    reason: str
    retrieval_query: str | None = Field(
        description="What retrieval ran with (null when a follow-up found nothing)."
    )
    document_ids: list[str] | None = Field(
        description="Documents retrieval was restricted to (those the previous answer cited)."
    )
    strategy: str = Field(description="standalone, focus, focus+topic, or none (abstained).")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    citations: list[CitationOut] = Field(
        description="The cited passages, as in /api/ask (extra field)."
    )
    abstained: bool = Field(description="True when the reply quotes no answer (extra field).")
    answer_status: AnswerStatus = Field(
        description="answered, not_stated (the documents discuss it but do not answer) or "
        "not_covered, as in /api/ask (extra field)."
    )
    resolution: ResolutionOut


# -- reply text ------------------------------------------------------------------------------


def reference_line(doc: Document) -> str:
    """One reference: title, authors, source title, journal, year, link."""
    authors = ", ".join(doc.authors[:3]) + (", et al." if len(doc.authors) > 3 else "")
    parts = [f"*{doc.title}*"]
    if authors:
        parts.append(authors.rstrip("."))
    if doc.source_title and doc.source_title != doc.title:
        parts.append(doc.source_title.rstrip("."))
    venue = ", ".join(p for p in (doc.journal, str(doc.year) if doc.year else None) if p)
    if venue:
        parts.append(venue)
    link = f"https://doi.org/{doc.doi}" if doc.doi else (doc.url or doc.pubmed_url)
    text = ". ".join(parts) + "."
    return f"{text} {link}" if link else text


def reply_text(answer: Answer) -> str:
    """The assistant message: cited answer, References (cited sources only), disclaimer; for
    ``not_stated``, the related reading (labelled as such) instead of references."""
    if answer.status == "not_stated" and answer.passages:
        lines = [answer.text, "", "**Related reading (not an answer)**", ""]
        seen: set[str] = set()
        for hit in answer.passages:
            if hit.document.id not in seen:
                seen.add(hit.document.id)
                lines.append(f"- {reference_line(hit.document)}")
        lines += ["", f"_{answer.disclaimer}_"]
        return "\n".join(lines)
    if answer.abstained or not answer.citations:
        return f"{answer.text}\n\n_{answer.disclaimer}_"
    by_document: dict[str, tuple[Document, list[int]]] = {}
    for citation in answer.citations:
        doc = citation.hit.document
        by_document.setdefault(doc.id, (doc, []))[1].append(citation.marker)
    lines = [answer.text, "", "**References**", ""]
    for doc, markers in by_document.values():
        labels = ", ".join(f"[{m}]" for m in sorted(markers))
        lines.append(f"- {labels} {reference_line(doc)}")
    lines += ["", f"_{answer.disclaimer}_"]
    return "\n".join(lines)


def _pieces(text: str, size: int = 24) -> list[str]:
    """``text`` cut at whitespace into pieces of about ``size`` characters (joined: ``text``)."""
    pieces: list[str] = []
    current = ""
    for match in re.finditer(r"\S+\s*|\s+", text):
        current += match.group(0)
        if len(current) >= size:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def _words(text: str) -> int:
    return len(text.split())


# -- routes ----------------------------------------------------------------------------------

OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OpenAIErrorResponse},
    401: {"model": OpenAIErrorResponse},
    404: {"model": OpenAIErrorResponse},
    413: {"model": OpenAIErrorResponse},
    503: {"model": OpenAIErrorResponse},
}

openai_router = APIRouter(
    prefix="/v1", tags=["openai-compatible"], dependencies=[Depends(require_api_key)]
)


def _model_card(request: Request) -> ModelCard:
    model_id = app_state(request).settings.openai_model_id
    return ModelCard(id=model_id, created=_STARTED, owned_by=OWNER)


@openai_router.get("/models", response_model=ModelList, responses=OPENAI_ERRORS)
async def list_models(request: Request) -> ModelList:
    """The one model this service offers."""
    return ModelList(data=[_model_card(request)])


@openai_router.get("/models/{model_id}", response_model=ModelCard, responses=OPENAI_ERRORS)
async def get_model(model_id: str, request: Request) -> ModelCard:
    card = _model_card(request)
    if model_id != card.id:
        raise _not_found(model_id)
    return card


def _not_found(model_id: str) -> HTTPException:
    return _fail(
        404,
        f"The model '{model_id}' does not exist; GET /v1/models lists the one this service has.",
        param="model",
        code="model_not_found",
    )


def _turns(messages: Sequence[ChatMessage], max_chars: int) -> list[Turn]:
    turns: list[Turn] = []
    for message in messages:
        if message.role not in ("user", "assistant"):
            continue  # system/developer instructions and tool output are not questions
        text = _clean(_message_text(message.content))
        cited: tuple[str, ...] | None = None
        if message.role == "assistant" and message.citations is not None:
            ids = [c.get("document_id") for c in message.citations]
            cited = tuple(i for i in ids if isinstance(i, str))
        turns.append(Turn(message.role, text, cited))
    users = [t for t in turns if t.role == "user"]
    if not users:
        raise _fail(400, "The messages contain no user message to answer.", param="messages")
    if not users[-1].text:
        raise _fail(400, "The last user message has no text.", param="messages")
    if len(users[-1].text) > max_chars:
        raise _fail(
            400,
            f"The last user message is too long ({len(users[-1].text)} characters; "
            f"at most {max_chars}).",
            param="messages",
            code="string_above_max_length",
        )
    return turns


def _clean(text: str) -> str:
    try:
        return clean_question(text)
    except ValueError:
        return ""


@openai_router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        **OPENAI_ERRORS,
        200: {
            "content": {"text/event-stream": {"description": "chat.completion.chunk events"}},
            "description": "A chat.completion, or with `stream: true` server-sent events.",
        },
    },
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> ChatCompletion | StreamingResponse:
    """Answer the last user message with cited quotes from the documents."""
    settings = app_state(request).settings
    if body.model != settings.openai_model_id:
        raise _not_found(body.model)
    turns = _turns(body.messages, settings.max_question_chars)
    engine = ready_engine(request)
    try:
        resolved = await run_in_threadpool(_answer, engine, turns)
    except ValueError as exc:  # pragma: no cover - _turns already refused these
        raise _fail(400, str(exc), param="messages") from None
    content = reply_text(resolved.answer)
    prompt_words = sum(_words(t.text) for t in turns)
    usage = Usage(
        prompt_tokens=prompt_words,
        completion_tokens=_words(content),
        total_tokens=prompt_words + _words(content),
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    citations = [CitationOut.from_citation(c) for c in resolved.answer.citations]
    info = _resolution_out(resolved)
    abstained = resolved.answer.abstained
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        extras = {
            "citations": [c.model_dump(mode="json") for c in citations],
            "abstained": abstained,
            "answer_status": resolved.answer.status,
            "resolution": info.model_dump(mode="json"),
        }
        events = _stream(
            completion_id, created, body.model, content, extras, usage if include_usage else None
        )
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=body.model,
        choices=[Choice(index=0, message=AssistantMessage(content=content))],
        usage=usage,
        citations=citations,
        abstained=abstained,
        answer_status=resolved.answer.status,
        resolution=info,
    )


def _answer(engine: Engine, turns: list[Turn]) -> ResolvedAnswer:
    """Resolve and answer (in a worker thread: indexing the corpus words can take a while)."""
    return answer_resolved(engine, resolve(turns, corpus_terms(engine.data.documents)))


def _resolution_out(resolved: ResolvedAnswer) -> ResolutionOut:
    r = resolved.resolution
    return ResolutionOut(
        question=r.question,
        follow_up=r.follow_up,
        reason=r.reason,
        retrieval_query=resolved.retrieval_query,
        document_ids=list(r.document_ids) if r.document_ids else None,
        strategy=resolved.strategy,
    )


async def _stream(
    completion_id: str,
    created: int,
    model: str,
    content: str,
    extras: dict[str, Any],
    usage: Usage | None,
) -> AsyncIterator[bytes]:
    """``chat.completion.chunk`` events: role, content pieces, stop (+ extras), usage, [DONE]."""
    base: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
    }
    if usage is not None:
        base["usage"] = None  # as OpenAI does: null on every chunk but the last

    def event(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    yield event(chunk({"role": "assistant", "content": ""}))
    for piece in _pieces(content):
        yield event(chunk({"content": piece}))
    yield event({**chunk({}, "stop"), **extras})
    if usage is not None:
        yield event({**base, "choices": [], "usage": usage.model_dump()})
    yield b"data: [DONE]\n\n"
