"""The reader: a small cross-encoder that reads each candidate sentence together with the
question and says how well it answers it.

Retrieval and the answer composer only compare the question with passages and sentences one
vector at a time, so they cannot tell "this sentence answers the question" from "this sentence
is about the same topic". The reader sees the question and one sentence in a single input
(``[CLS] question [SEP] sentence [SEP]``) and gives one logit per sentence. Read together with a
fixed "no answer" logit of 0, the logits give the probability that some candidate answers
(:func:`answerability`); the answer step uses it as a gate (the documents discuss the topic but
do not state the answer) and, combined with the composer's score, to choose the quoted sentences.

The model is the bundled all-MiniLM-L6-v2 cut to its first few layers, with those layers and a
one-logit head fine-tuned by ``python -m service train-reader`` (see
:mod:`service.evaluation.reader_training`). Only the fine-tuned layers and the head are shipped
(``service/reader_model/reader.safetensors``, float16); the word embeddings come from the
bundled model, whose hash the manifest records. At first use the assembled model is exported to
ONNX and cached like the encoder (``QA_ONNX_CACHE_DIR``); every later start loads the cached
file. Each question's candidates are scored in one batched call, padded to the longest pair.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from service.checksums import sha256_file
from service.config import Settings
from service.embedding import bundled_model_path, onnx_cache_root, write_onnx
from service.reader_manifest import (
    DEFAULT_DIR,
    WEIGHTS_FILE,
    ReaderError,
    ReaderManifest,
    verified_manifest,
)

if TYPE_CHECKING:  # torch is imported only to train or to export
    import torch

log = logging.getLogger(__name__)

Logits = npt.NDArray[np.float32]

BASE_WEIGHTS_FILE = "model.safetensors"
#: Bump when the export recipe changes, so cached exports are redone.
EXPORT_VERSION = 1


class Reader(Protocol):
    """Scores candidate sentences for a question: one logit per sentence, higher = answers."""

    name: str

    def score(self, question: str, sentences: Sequence[str]) -> Logits: ...


def answerability(logits: Sequence[float] | Logits) -> float:
    """Probability that some candidate answers: softmax mass off the fixed "no answer" logit 0."""
    values = np.asarray(logits, dtype=np.float64)
    if values.size == 0:
        return 0.0
    top = max(0.0, float(values.max()))
    total = np.exp(-top) + np.exp(values - top).sum()
    return float(1.0 - np.exp(-top) / total)


def base_model_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (the reader's base and tokenizer)."""
    try:
        return Path(bundled_model_path())
    except Exception as exc:
        raise ReaderError(str(exc)) from None


# -- the model (torch; used by training and by the one-off ONNX export) ------------------------


def build_module(base: Path, layers: int, pooling: str, frozen_layers: int = 0) -> torch.nn.Module:
    """The cross-encoder: the base transformer's embeddings and first ``layers`` layers, and a
    linear head on the pooled output. The embeddings and the first ``frozen_layers`` layers
    stay as in the base (they are not trained, and not shipped)."""
    import torch
    from transformers import AutoModel

    if pooling not in ("mean", "cls"):
        raise ReaderError(f"unknown pooling '{pooling}'; use 'mean' or 'cls'")
    encoder = AutoModel.from_pretrained(str(base), attn_implementation="eager")
    if not 1 <= layers <= len(encoder.encoder.layer):
        raise ReaderError(f"layers must be 1..{len(encoder.encoder.layer)}, not {layers}")
    if not 0 <= frozen_layers < layers:
        raise ReaderError(f"frozen_layers must be 0..{layers - 1}, not {frozen_layers}")
    encoder.encoder.layer = encoder.encoder.layer[:layers]
    encoder.config.num_hidden_layers = layers
    encoder.pooler = None
    for parameter in encoder.embeddings.parameters():
        parameter.requires_grad = False
    for layer in encoder.encoder.layer[:frozen_layers]:
        for parameter in layer.parameters():
            parameter.requires_grad = False

    class CrossEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.config.hidden_size, 1)
            self.pooling = pooling

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            logits: torch.Tensor = self.head(pooled).squeeze(-1)
            return logits

    return CrossEncoder()


def trained_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (the unfrozen layers and the head), as float16."""
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    return {
        name: tensor.detach().to("cpu").half().contiguous()
        for name, tensor in module.state_dict().items()
        if name in trainable
    }


def _from_base(name: str, frozen_layers: int) -> bool:
    """Whether a parameter comes from the base model rather than the shipped weights."""
    if name.startswith("encoder.embeddings."):
        return True
    prefix = "encoder.encoder.layer."
    return name.startswith(prefix) and int(name[len(prefix) :].split(".")[0]) < frozen_layers


def load_module(folder: Path) -> tuple[torch.nn.Module, ReaderManifest]:
    """The trained cross-encoder from ``folder`` (weights + manifest), checked against its base."""
    from safetensors.torch import load_file

    manifest = verified_manifest(folder)
    weights = folder / WEIGHTS_FILE
    base = base_model_dir()
    base_hash = sha256_file(base / BASE_WEIGHTS_FILE)
    if base_hash != manifest.base_sha256:
        raise ReaderError(
            f"the reader was trained on another copy of its base model (sha256 "
            f"{manifest.base_sha256[:12]}, installed {base_hash[:12]}); "
            "run python -m service train-reader"
        )
    module = build_module(base, manifest.layers, manifest.pooling, manifest.frozen_layers)
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [m for m in missing if not _from_base(m, manifest.frozen_layers)]
    if missing or unexpected:
        raise ReaderError(
            f"reader weights {weights} do not fit a {manifest.layers}-layer reader "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); run python -m service "
            "train-reader"
        )
    return module.eval(), manifest


def export_onnx(module: torch.nn.Module, target: Path) -> None:
    """Write the cross-encoder as an ONNX graph (dynamic batch and length), atomically."""
    write_onnx(module, target, "logits", {0: "batch"})


# -- the runtime reader (ONNX Runtime) ---------------------------------------------------------


class PairTokenizer:
    """Question + sentence pairs -> padded id, mask and segment arrays (the base's tokenizer)."""

    def __init__(self, base: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length, strategy="longest_first")
        self._tokenizer.no_padding()

    def encodings(self, question: str, sentences: Sequence[str]) -> list[Any]:
        """One ``tokenizers.Encoding`` per pair (ids and segment ids, unpadded)."""
        return list(self._tokenizer.encode_batch([(question, s) for s in sentences]))

    def __call__(
        self, question: str, sentences: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        encoded = self.encodings(question, sentences)
        width = max(len(e.ids) for e in encoded)
        ids = np.zeros((len(encoded), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encoded):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = 1
            types[row, :n] = e.type_ids
        return ids, mask, types


class OnnxReader:
    """The shipped (or ``QA_READER_PATH``) reader run by ONNX Runtime. Thread-safe."""

    def __init__(self, folder: Path, *, threads: int = 2, cache_dir: Path | None = None) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
            raise ReaderError(f"the reader needs onnxruntime ({exc}); run `make install`") from None
        manifest = verified_manifest(folder)
        self.manifest = manifest
        self.name = f"reader-{manifest.weights_sha256[:12]}"
        base = base_model_dir()
        stat = (base / BASE_WEIGHTS_FILE).stat()
        key = hashlib.sha256(
            f"v{EXPORT_VERSION}\x1f{manifest.weights_sha256}\x1f{base.resolve()}\x1f"
            f"{stat.st_size}:{stat.st_mtime_ns}".encode()
        ).hexdigest()[:16]
        path = onnx_cache_root(cache_dir) / f"reader-{key}" / "reader.onnx"
        if not path.is_file():
            module, _ = load_module(folder)  # checks the base model's hash too
            try:
                export_onnx(module, path)
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise ReaderError(f"cannot export the reader to ONNX: {first}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._pairs = PairTokenizer(base, manifest.max_length)

    def score(self, question: str, sentences: Sequence[str]) -> Logits:
        if not sentences:
            return np.zeros(0, dtype=np.float32)
        ids, mask, types = self._pairs(question, sentences)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        logits = self._session.run(None, feed)[0]
        return np.asarray(logits, dtype=np.float32).reshape(len(sentences))


@lru_cache(maxsize=4)
def _cached_reader(folder: Path, threads: int, cache_dir: Path | None) -> OnnxReader:
    return OnnxReader(folder, threads=threads, cache_dir=cache_dir)


def load_reader(settings: Settings) -> Reader | None:
    """The configured reader, or None (``QA_READER=off``, or it cannot be loaded: then one
    warning says why, and answers fall back to the composer alone)."""
    if settings.reader == "off":
        return None
    folder = settings.reader_path or DEFAULT_DIR
    try:
        return _cached_reader(folder.resolve(), settings.reader_threads, settings.onnx_cache_dir)
    except ReaderError as exc:
        log.warning(
            "reader not used: %s; answers are chosen without it and questions the documents "
            "do not answer are not recognised (QA_READER=off silences this)",
            exc,
        )
        return None
