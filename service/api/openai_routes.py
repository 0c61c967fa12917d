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
under ``/v1/`` (:mod:`service.api.errors`). When ``openai_api_key`` is set, every ``/v1`` request
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
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from service.answering import Answer
from service.api.errors import OpenAIErrorResponse, openai_fail
from service.api.metrics import record_answer
from service.api.openai_schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ModelCard,
    ModelList,
    Usage,
)
from service.api.schemas import CitationOut, ResolutionOut, clean_question
from service.api.state import app_state, ready_engine
from service.conversation import ResolvedAnswer, Turn, answer_resolved, corpus_terms, resolve
from service.conversation import message_text as _message_text
from service.documents import Document
from service.engine import Engine

OWNER = "msc-evidence-qa"
_STARTED = int(time.time())


def auth_failure(request: Request) -> HTTPException | None:
    """The 401 to send when ``openai_api_key`` is set and the request lacks it, else None."""
    expected = app_state(request).settings.openai_api_key
    if not expected:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not token:
        return openai_fail(
            401,
            "You didn't provide an API key. Send it in an Authorization header using Bearer "
            "auth (Authorization: Bearer YOUR_KEY).",
            headers=challenge,
        )
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return openai_fail(
            401, "Incorrect API key provided.", code="invalid_api_key", headers=challenge
        )
    return None


def require_api_key(request: Request) -> None:
    failure = auth_failure(request)
    if failure is not None:
        raise failure


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
    lines = [answer.text, "", "**References**", ""]
    for citation in answer.citations:
        where = f" ({label})" if (label := citation.page_label) else ""
        lines.append(f"- [{citation.marker}]{where} {reference_line(citation.document)}")
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
    return openai_fail(
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
        raise openai_fail(400, "The messages contain no user message to answer.", param="messages")
    if not users[-1].text:
        raise openai_fail(400, "The last user message has no text.", param="messages")
    if len(users[-1].text) > max_chars:
        raise openai_fail(
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
        raise openai_fail(400, str(exc), param="messages") from None
    record_answer(request, "/v1/chat/completions", resolved.answer)
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
    info = ResolutionOut.of(resolved, engine.data.documents)
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
