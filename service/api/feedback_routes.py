"""Feedback on answers: every ``/api/ask`` answer gets an ``answer_id``, and
``POST /api/feedback`` rates it (up or down, with an optional comment).

The process remembers its recent answers (:class:`~service.recent_answers.RecentAnswers`:
``QA_FEEDBACK_ANSWERS_KEPT``, ``QA_FEEDBACK_ANSWER_TTL_S``); a rating stores the server's own
record of the answer (question, answer, outcome, citations and the reading of a follow-up as
the response carried them, the index build, reader and ranker versions) with the rating and
the cleaned comment in SQLite (:mod:`service.feedback_store`), never what the client says the
answer was. Nothing about the client (address, user agent) is stored. A second rating of the
same answer replaces the first: 200 instead of 201, the same ``feedback_id``,
``replaced: true``.

With ``QA_FEEDBACK=off`` answers carry ``answer_id: null`` and ``/api/feedback`` is a 404
saying so. When the database cannot be opened (a read-only folder, a file from a newer
version), the service still answers questions: ``answer_id`` is null and ``/api/feedback``
answers 503 with the reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.api.errors import ErrorResponse, api_error, invalid
from service.api.schemas import AskResponse, clean_question
from service.chunk_index import ChunkIndex
from service.config import Settings
from service.engine import Engine
from service.feedback_store import FeedbackStore, FeedbackStoreError, Rating, db_path, utc_now
from service.recent_answers import AnswerRecord, RecentAnswers, new_answer_id
from service.reranking import LinearRanker

log = logging.getLogger("service.api")

FEEDBACK_PATH = "/api/feedback"
DISABLED = "feedback is turned off on this server (QA_FEEDBACK=off)"


def ranker_version(ranker: LinearRanker | None) -> str | None:
    """``ranker-<hash of its weights>``; None when rerank has no learned weights."""
    if ranker is None:
        return None
    text = json.dumps(ranker.to_json(), sort_keys=True)
    return "ranker-" + hashlib.sha256(text.encode()).hexdigest()[:12]


class FeedbackDesk:
    """The recent answers and the store, opened at start-up and closed at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = settings.feedback == "on"
        self.recent = RecentAnswers(settings.feedback_answers_kept, settings.feedback_answer_ttl_s)
        self.store: FeedbackStore | None = None
        self.problem: str | None = "the feedback database is not open (the app has not started)"
        self._ranker: tuple[LinearRanker | None, str | None] = (None, None)

    def open(self) -> None:
        if not self.enabled or self.store is not None:
            return
        try:
            self.store = FeedbackStore(db_path(self.settings))
            self.problem = None
        except FeedbackStoreError as exc:
            self.problem = str(exc)
            log.warning("feedback is not stored: %s", exc)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
            self.problem = "the feedback database is closed (the app has stopped)"

    def remember(
        self, response: AskResponse, engine: Engine, data: ChunkIndex, mode: str | None
    ) -> str | None:
        """Record ``response`` (answered from ``data``) and return its id; None when ratings
        cannot be stored, so clients know not to offer them."""
        if self.store is None:
            return None
        answer_id = new_answer_id()
        shown = response.model_dump(mode="json", include={"citations", "resolution"})
        self.recent.remember(
            AnswerRecord(
                answer_id=answer_id,
                question=response.question,
                answer=response.answer,
                answer_status=response.answer_status,
                citations_zlib=AnswerRecord.pack(_json(shown["citations"])),
                resolution_json=_json(shown["resolution"]) if shown["resolution"] else None,
                mode=mode or engine.settings.default_mode,
                index_build=data.build_name,
                index_built_at=data.manifest.built_at,
                reader=getattr(engine.reader, "name", None),
                ranker=self._ranker_version(engine.ranker),
                answered_at=utc_now(),
            )
        )
        return answer_id

    def _ranker_version(self, ranker: LinearRanker | None) -> str | None:
        cached, version = self._ranker  # the engine keeps one ranker: hash it once
        if ranker is not cached:
            version = ranker_version(ranker)
            self._ranker = (ranker, version)
        return version


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def feedback_desk(request: Request) -> FeedbackDesk:
    desk: FeedbackDesk = request.app.state.feedback
    return desk


def with_answer_id(
    request: Request,
    reply: AskResponse | JSONResponse,
    engine: Engine,
    data: ChunkIndex,
    mode: str | None,
) -> AskResponse | JSONResponse:
    """``reply`` with its ``answer_id`` set and remembered (an error passes through)."""
    if isinstance(reply, AskResponse):
        reply.answer_id = feedback_desk(request).remember(reply, engine, data, mode)
    return reply


def clean_comment(value: str | None) -> str | None:
    """The comment without control or zero-width characters; None when nothing is left."""
    if value is None:
        return None
    try:
        return clean_question(value)
    except ValueError:
        return None


def _require_json(request: Request) -> None:  # the same check as /api/ask's
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPException(status_code=415, detail="send the body as application/json")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer_id: str = Field(
        max_length=64, description="The `answer_id` of an /api/ask response from this server."
    )
    rating: Rating = Field(description="'up': the answer helped; 'down': it did not.")
    comment: str | None = Field(
        None,
        description="Optional, at most QA_FEEDBACK_MAX_COMMENT_CHARS characters (control "
        "characters are dropped). Stored as typed: do not put personal details in it.",
    )

    @field_validator("answer_id", "comment", mode="before")
    @classmethod
    def _strict_string(cls, value: object) -> object:
        if value is not None and not isinstance(value, str):
            raise ValueError("must be a string")
        return value


class FeedbackResponse(BaseModel):
    feedback_id: int = Field(description="The stored rating's id (the same when replaced).")
    answer_id: str
    rating: Rating
    replaced: bool = Field(description="True when this rating replaced an earlier one.")


feedback_router = APIRouter(tags=["feedback"])
DeskDep = Annotated[FeedbackDesk, Depends(feedback_desk)]


@feedback_router.post(
    FEEDBACK_PATH,
    status_code=201,
    response_model=FeedbackResponse,
    responses={
        200: {"model": FeedbackResponse, "description": "Replaced an earlier rating."},
        **{code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)},
    },
    dependencies=[Depends(_require_json)],
)
async def rate_answer(
    body: FeedbackRequest, desk: DeskDep, response: Response
) -> FeedbackResponse | JSONResponse:
    """Rate an answer (up or down, optional comment); a second rating replaces the first."""
    if desk.store is None:
        return api_error(503, f"feedback cannot be stored: {desk.problem}")
    comment = clean_comment(body.comment)
    most = desk.settings.feedback_max_comment_chars
    if comment is not None and len(comment) > most:
        return invalid("comment", f"must be at most {most} characters (it has {len(comment)})")
    answer = desk.recent.get(body.answer_id)
    if answer is None:
        hours = desk.settings.feedback_answer_ttl_s / 3600
        return api_error(
            404,
            "unknown answer_id",
            [
                {
                    "field": "answer_id",
                    "message": "no answer with this id: answers can be rated for "
                    f"{hours:g} h after they are given, and only on the server that gave them",
                }
            ],
        )
    try:
        stored = await run_in_threadpool(desk.store.rate, answer, body.rating, comment)
    except FeedbackStoreError as exc:
        log.error("could not store feedback: %s", exc)
        return api_error(503, "the feedback could not be stored; try again later")
    if stored.replaced:
        response.status_code = 200
    return FeedbackResponse(
        feedback_id=stored.feedback_id,
        answer_id=answer.answer_id,
        rating=body.rating,
        replaced=stored.replaced,
    )


# Registered instead of feedback_router with QA_FEEDBACK=off: absent from the OpenAPI schema,
# and any request to the path is a 404 saying why.
feedback_disabled_router = APIRouter()


@feedback_disabled_router.api_route(
    FEEDBACK_PATH, methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def feedback_disabled() -> None:
    raise HTTPException(status_code=404, detail=DISABLED)
