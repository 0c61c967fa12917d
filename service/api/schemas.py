"""Request and response models of the HTTP API (they also define the OpenAPI schema)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.answering import Answer, AnswerStatus, Citation, QuotedPassage
from service.api.errors import ErrorDetail, ErrorResponse
from service.config import RetrievalMode
from service.conversation import ResolvedAnswer
from service.documents import Document, PageSpan
from service.retrieval import Hit

Mode = RetrievalMode  # the one list of modes, in service/config.py
__all__ = ["ErrorDetail", "ErrorResponse"]  # the service's error format (service/api/errors.py)


def clean_question(value: str) -> str:
    """Drop control and zero-width characters; refuse what is left empty."""
    cleaned = "".join(
        ch
        for ch in value
        if ch in "\n\t" or (ord(ch) >= 32 and ch not in "\u200b\u200c\u200d\u2060\ufeff\x7f")
    ).strip()
    if not cleaned:
        raise ValueError("must contain some text (it is empty or only whitespace)")
    return cleaned


#: Earlier turns a request may send with a question (the page sends its latest ones).
MAX_HISTORY_TURNS = 20


class HistoryTurn(BaseModel):
    """One earlier message of the conversation, as the page keeps it."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    text: str = Field(
        "",
        max_length=20_000,
        description="A user turn: the question as asked. An assistant turn: its answer text "
        "(optional when `document_ids` is sent).",
    )
    document_ids: list[str] | None = Field(
        None,
        max_length=100,
        description="An assistant turn: the `document_id` of each citation it gave.",
    )

    @field_validator("text")
    @classmethod
    def _clean(cls, value: str) -> str:
        try:
            return clean_question(value)
        except ValueError:
            return ""


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        description="The question, in plain language (at most QA_MAX_QUESTION_CHARS characters)."
    )
    top_k: int | None = Field(
        None,
        ge=1,
        description="Passages to retrieve; omitted: QA_TOP_K. At most QA_MAX_TOP_K "
        "(GET /api/limits).",
    )
    mode: Mode | None = Field(
        None,
        description=(
            "Retrieval mode: 'rerank' (learned ranking of dense and BM25 candidates), 'hybrid' "
            "(rank fusion), 'dense' or 'bm25'. Omitted: the service's default (QA_DEFAULT_MODE)."
        ),
    )
    document_ids: list[str] | None = Field(
        None, max_length=100, description="Only search these documents."
    )
    history: list[HistoryTurn] | None = Field(
        None,
        max_length=MAX_HISTORY_TURNS,
        description=(
            "The conversation so far, oldest first, so a follow-up ('how many patients were in "
            "that study?') is read in its context; omitted or empty: the question stands alone. "
            f"At most {MAX_HISTORY_TURNS} turns (send the latest)."
        ),
    )

    @field_validator("question", mode="before")
    @classmethod
    def _strict_string(cls, value: object) -> object:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value

    @field_validator("question")
    @classmethod
    def _clean(cls, value: str) -> str:
        return clean_question(value)


class SourceFields(BaseModel):
    """What a reader needs to find and weigh a study; shared by documents and citations."""

    title: str
    source_title: str | None
    authors: list[str]
    year: int | None
    journal: str | None
    doi: str | None
    pmid: str | None
    pmcid: str | None
    url: str | None
    pubmed_url: str | None
    study_type: str | None

    @staticmethod
    def of(doc: Document) -> dict[str, Any]:
        """These fields' values for ``doc`` (the record's attributes of the same names)."""
        return {name: getattr(doc, name) for name in SourceFields.model_fields}


class PassageFields(BaseModel):
    """Where a passage is: its chunk, section, text and offsets, and its pages in a PDF."""

    chunk_id: str
    section: str
    text: str
    start: int = Field(description="Offset of the passage in its document's text.")
    end: int
    page_start: int | None = Field(
        description="First page of the passage in its source PDF; null for other formats."
    )
    page_end: int | None = Field(description="Last page (the same as page_start for most).")

    @staticmethod
    def of_hit(hit: Hit, pages: PageSpan | None = None) -> dict[str, Any]:
        chunk = hit.chunk
        pages = pages or hit.pages
        return {
            "chunk_id": chunk.id,
            "section": chunk.section,
            "text": chunk.text,
            "start": chunk.start,
            "end": chunk.end,
            "page_start": pages.first if pages else None,
            "page_end": pages.last if pages else None,
        }


class CitationFields(SourceFields, PassageFields):
    """A passage with the study it comes from."""

    document_id: str

    @staticmethod
    def fields_from_hit(hit: Hit, pages: PageSpan | None = None) -> dict[str, Any]:
        return {
            "document_id": hit.document.id,
            **PassageFields.of_hit(hit, pages),
            **SourceFields.of(hit.document),
        }


class Highlight(BaseModel):
    start: int
    end: int


class QuotedPassageOut(PassageFields):
    """A passage the answer quotes from; its pages are those of the quoted sentences."""

    highlights: list[Highlight] = Field(
        description="Character ranges within `text` of the sentences quoted in the answer."
    )

    @classmethod
    def from_passage(cls, p: QuotedPassage) -> QuotedPassageOut:
        return cls(
            highlights=[Highlight(start=s.start, end=s.end) for s in p.highlights],
            **cls.of_hit(p.hit, p.pages),
        )


class CitationOut(SourceFields):
    """One cited study (one marker), with every passage of it that the answer quotes."""

    marker: int = Field(description="The [n] that the answer's sentences from this study carry.")
    document_id: str
    passages: list[QuotedPassageOut] = Field(
        description="The quoted passages of this study, in the order they appear in it."
    )

    @classmethod
    def from_citation(cls, c: Citation) -> CitationOut:
        return cls(
            marker=c.marker,
            document_id=c.document.id,
            passages=[QuotedPassageOut.from_passage(p) for p in c.passages],
            **SourceFields.of(c.document),
        )


class PassageOut(CitationFields):
    rank: int
    score: float

    @classmethod
    def from_hit(cls, hit: Hit) -> PassageOut:
        return cls(rank=hit.rank, score=round(hit.score, 6), **cls.fields_from_hit(hit))


class AnswerSentenceOut(BaseModel):
    text: str
    marker: int


class CoverageOut(BaseModel):
    score: float
    dense: float
    sentence: float
    lexical: float


class ReadingOut(BaseModel):
    answerability: float = Field(
        description="The reader's probability that one of the candidate sentences answers."
    )
    threshold: float = Field(description="Below it the answer is 'not_stated'.")
    candidates: int = Field(description="Candidate sentences the reader read.")
    gated: bool = Field(
        description="False when the threshold did not apply: a question for a publication "
        "detail answered from the article's reference line."
    )


class ResolutionOut(BaseModel):
    """How a question in a conversation was read."""

    question: str
    follow_up: bool
    reason: str
    retrieval_query: str | None = Field(
        description="What retrieval ran with (null when a follow-up found nothing)."
    )
    document_ids: list[str] | None = Field(
        description="Documents retrieval was restricted to (those the previous answer cited)."
    )
    about: list[str] = Field(
        description="Those documents as a reader names them ('Zhang et al. 2023'); empty for "
        "a question read on its own."
    )
    strategy: str = Field(description="standalone, focus, focus+topic, or none (abstained).")

    @classmethod
    def of(cls, resolved: ResolvedAnswer, documents: Mapping[str, Document]) -> ResolutionOut:
        r = resolved.resolution
        ids = list(r.document_ids) if r.follow_up and r.document_ids else None
        return cls(
            question=r.question,
            follow_up=r.follow_up,
            reason=r.reason,
            retrieval_query=resolved.retrieval_query,
            document_ids=ids,
            about=[documents[i].short_label for i in ids or () if i in documents],
            strategy=resolved.strategy,
        )


class AskResponse(BaseModel):
    question: str
    answer: str
    answer_status: AnswerStatus = Field(
        description=(
            "'answered': quoted sentences with citations; 'not_stated': the documents discuss "
            "the topic but do not answer the question (`passages` then holds related reading, "
            "not an answer); 'not_covered': the question is outside the collection."
        )
    )
    sentences: list[AnswerSentenceOut]
    citations: list[CitationOut]
    passages: list[PassageOut] = Field(
        description=(
            "answered: the other retrieved passages; not_stated: up to three related passages "
            "(related reading, not an answer); not_covered: none."
        )
    )
    abstained: bool = Field(description="True unless answer_status is 'answered'.")
    abstain_reason: str | None
    missing_terms: list[str] = Field(
        description="Words of the question that no document mentions (named in the answer)."
    )
    coverage: CoverageOut
    reader: ReadingOut | None = Field(
        description="What the reader made of the candidates; null when it is off or not reached."
    )
    resolution: ResolutionOut | None = Field(
        None,
        description="How the question was read when a `history` was sent: as a follow-up "
        "(about the documents of the previous answer) or as a question of its own.",
    )
    disclaimer: str
    timings_ms: dict[str, float]
    answer_id: str | None = Field(
        default=None,
        description="Opaque id to rate this answer with (POST /api/feedback); null when this "
        "server does not store ratings (QA_FEEDBACK=off, or its database cannot be opened).",
    )

    @classmethod
    def from_answer(cls, answer: Answer, resolution: ResolutionOut | None = None) -> AskResponse:
        return cls(
            question=answer.question,
            answer=answer.text,
            answer_status=answer.status,
            sentences=[AnswerSentenceOut(text=s.text, marker=s.marker) for s in answer.sentences],
            citations=[CitationOut.from_citation(c) for c in answer.citations],
            passages=[PassageOut.from_hit(h) for h in answer.passages],
            abstained=answer.abstained,
            abstain_reason=answer.abstain_reason,
            missing_terms=list(answer.missing_terms),
            coverage=CoverageOut(**answer.coverage.__dict__),
            reader=ReadingOut(**answer.reading.__dict__) if answer.reading else None,
            resolution=resolution,
            disclaimer=answer.disclaimer,
            timings_ms=answer.timings_ms,
        )


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    results: list[PassageOut]
    timings_ms: dict[str, float]


class DocumentSummary(SourceFields):
    id: str
    chunk_count: int

    @classmethod
    def of_document(cls, doc: Document, chunk_count: int) -> DocumentSummary:
        return cls(id=doc.id, chunk_count=chunk_count, **SourceFields.of(doc))


class ChunkOffsets(BaseModel):
    chunk_id: str
    section: str
    start: int
    end: int


class PageOffsets(BaseModel):
    page: int
    start: int = Field(description="Offset of the page's first character in `text`.")
    end: int


class DocumentDetail(DocumentSummary):
    text: str
    reference: str | None
    chunks: list[ChunkOffsets]
    pages: list[PageOffsets] = Field(
        description="Where each page of a PDF starts and ends in `text`; empty for other formats."
    )


class DocumentList(BaseModel):
    documents: list[DocumentSummary]


class Limits(BaseModel):
    """What a request may ask for (the page reads these instead of keeping its own copy)."""

    max_question_chars: int = Field(
        description="Longest accepted question (QA_MAX_QUESTION_CHARS)."
    )
    top_k: int = Field(description="Passages returned when a request names none (QA_TOP_K).")
    max_top_k: int = Field(description="Largest top_k a request may ask for (QA_MAX_TOP_K).")
    max_history_turns: int = Field(
        description="Most earlier turns a question may bring (`history`)."
    )
    max_comment_chars: int = Field(
        description="Longest comment POST /api/feedback accepts (QA_FEEDBACK_MAX_COMMENT_CHARS)."
    )


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    documents: int
    chunks: int
    model: str
    index_built_at: str
    index_type: str
    warning: str | None = Field(
        None, description="Set when the index in service is out of date and could not be rebuilt."
    )
