"""Request and response models of the OpenAI-compatible endpoints (``/v1``).

The request side accepts what OpenAI clients send (sampling parameters included, and ignored);
the response side is OpenAI's ``chat.completion`` plus the extra fields ``citations``,
``abstained``, ``answer_status`` and ``resolution`` that standard clients ignore.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.answering import AnswerStatus
from service.api.schemas import CitationOut, ResolutionOut

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
