"""``python -m service train-reader``: fine-tune the reader (:mod:`service.reader`).

What it learns from. The reader must learn to *read*, not to remember the five articles, so its
main training data is synthetic: short biomedical passages on other topics (``eval/reader/
synthetic_*.jsonl``; cardiology, neurology, infection, oncology, musculoskeletal, public
health and laboratory science, in ten genres from plain-language articles to mechanistic
reviews), each with answerable questions (the answering sentence marked), near-miss
unanswerable ones (same topic, answer absent: costs, doses, durations, other conditions and
treatments, numbers the passage does not give) and an unrelated one, written by separate
sessions that never saw the corpus or any question file. With ``--with-dev`` the development
questions about the real corpus are added (their candidate sentences retrieved as at answer
time), except the held-out part (:func:`service.evaluation.dataset.held_out`) and every
question that copies a test question (:func:`service.evaluation.dataset.near_copies`). The test
set (``eval/questions.jsonl``) is never read except to find those copies.

How. Each question comes with its candidate sentences (a synthetic passage's sentences plus
sentences of two other passages; or the composer's best sentences from the retrieved passages)
and the loss is listwise: a softmax over the candidates' logits and a fixed "no answer" logit 0
should put its mass on the answering sentences, or on "no answer" for an unanswerable
question, plus ``bce_weight`` times a per-sentence binary cross-entropy (the listwise term alone
leaves the scale of the logits free; the binary one alone collapsed to a constant in the
prototypes). AdamW, linear warm-up and decay, seeded, one fixed thread count: the same inputs
give the same weights on the same machine.

What it writes: ``reader.safetensors`` (the fine-tuned layers and head, float16) and
``manifest.json`` (base model and its hash, training files and their hashes, settings, the
excluded near copies, and held-out metrics) in ``--out`` (default ``service/reader_model``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.checksums import sha256_file
from service.evaluation.dataset import (
    NEAR_COPY_COSINE,
)
from service.evaluation.reader_data import (
    ReadingExample,
    corpus_examples,
    development_split,
    load_synthetic_file,
    synthetic_examples,
)
from service.evaluation.runner import auroc
from service.reader import (
    BASE_WEIGHTS_FILE,
    PairTokenizer,
    answerability,
    base_model_dir,
    build_module,
    trained_state,
)
from service.reader_manifest import MANIFEST_FILE, WEIGHTS_FILE, ReaderManifest

if TYPE_CHECKING:
    import torch

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    layers: int = 3
    frozen_layers: int = 0  # the first layers, kept as in the base (not trained or shipped)
    pooling: str = "mean"
    max_length: int = 128
    epochs: int = 2
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.06  # share of the steps
    questions_per_batch: int = 4
    max_candidates: int = 10  # per training question
    bce_weight: float = 0.5
    seed: int = 13
    threads: int = 2
    precision: str = "auto"  # auto (bf16 where the CPU has it), bf16 or fp32


# -- training -----------------------------------------------------------------------------------


def _use_bf16(precision: str) -> bool:
    import torch

    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass(frozen=True)
class _Encoded:
    ids: list[list[int]]
    types: list[list[int]]
    labels: tuple[bool, ...]


def _encode(pairs: PairTokenizer, examples: Sequence[ReadingExample]) -> list[_Encoded]:
    out = []
    for e in examples:
        encoded = pairs.encodings(e.question, e.candidates)
        out.append(_Encoded([x.ids for x in encoded], [x.type_ids for x in encoded], e.labels))
    return out


def _batch_tensors(
    items: Sequence[_Encoded],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch

    rows = [(ids, types) for item in items for ids, types in zip(item.ids, item.types, strict=True)]
    width = max(len(ids) for ids, _ in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for n, (row_ids, row_types) in enumerate(rows):
        ids[n, : len(row_ids)] = torch.tensor(row_ids)
        mask[n, : len(row_ids)] = 1
        types[n, : len(row_types)] = torch.tensor(row_types)
    return ids, mask, types


def _loss(logits: torch.Tensor, items: Sequence[_Encoded], bce_weight: float) -> torch.Tensor:
    import torch
    import torch.nn.functional as functional

    total = logits.new_zeros(())
    start = 0
    for item in items:
        n = len(item.labels)
        s = logits[start : start + n]
        start += n
        y = torch.tensor(item.labels, dtype=torch.float32)
        with_none = torch.cat([s.new_zeros(1), s])
        target = torch.zeros(n + 1)
        if y.sum() > 0:
            target[1:] = y / y.sum()
        else:
            target[0] = 1.0
        listwise = -(target * functional.log_softmax(with_none, dim=0)).sum()
        pointwise = functional.binary_cross_entropy_with_logits(s, y)
        total = total + listwise + bce_weight * pointwise
    return total / len(items)


def train(
    examples: Sequence[ReadingExample],
    config: TrainConfig,
    progress: ProgressFn | None = None,
) -> torch.nn.Module:
    """Fine-tune a fresh reader on ``examples`` (deterministic for a given seed and machine)."""
    import torch

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    base = base_model_dir()
    module = build_module(base, config.layers, config.pooling, config.frozen_layers)
    module.train()
    # What is not trained runs as at inference (no dropout).
    encoder: Any = module.encoder
    encoder.embeddings.eval()
    for layer in encoder.encoder.layer[: config.frozen_layers]:
        layer.eval()
    pairs = PairTokenizer(base, config.max_length)
    encoded = _encode(pairs, examples)
    usable = [e for e in encoded if e.labels]
    rng = random.Random(config.seed)
    per_epoch = math.ceil(len(usable) / config.questions_per_batch)
    total_steps = per_epoch * config.epochs
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    warmup = max(1, int(config.warmup * total_steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    bf16 = _use_bf16(config.precision)
    step = 0
    for epoch in range(config.epochs):
        order = list(range(len(usable)))
        rng.shuffle(order)
        # Similar lengths together (within windows of 64), so little work goes into padding.
        windows = [order[i : i + 64] for i in range(0, len(order), 64)]
        batches = []
        for window in windows:
            window.sort(key=lambda i: max(len(x) for x in usable[i].ids))
            batches += [
                window[i : i + config.questions_per_batch]
                for i in range(0, len(window), config.questions_per_batch)
            ]
        rng.shuffle(batches)
        for batch in batches:
            items = [usable[i] for i in batch]
            ids, mask, types = _batch_tensors(items)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = module(ids, mask, types).float()
            loss = _loss(logits, items, config.bce_weight)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            if progress:
                progress(f"training epoch {epoch + 1}/{config.epochs}", step, total_steps)
    return module.eval()


class TorchScorer:
    """Score candidates with a torch reader module (training-time evaluation)."""

    def __init__(self, module: torch.nn.Module, max_length: int) -> None:
        self.module = module
        self.pairs = PairTokenizer(base_model_dir(), max_length)
        self.name = "torch"

    def score(self, question: str, sentences: Sequence[str]) -> np.ndarray:
        import torch

        if not sentences:
            return np.zeros(0, dtype=np.float32)
        ids, mask, types = self.pairs(question, sentences)
        with torch.inference_mode():
            logits = self.module(
                torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)
            )
        scores: np.ndarray = logits.numpy().astype(np.float32)
        return scores


# -- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredExample:
    example: ReadingExample
    logits: tuple[float, ...]

    @property
    def answerability(self) -> float:
        return answerability(self.logits)

    @property
    def top_correct(self) -> bool:
        """The reader's best candidate answers the question."""
        if not self.logits:
            return False
        return self.example.labels[int(np.argmax(self.logits))]


def score_examples(
    scorer: Any, examples: Sequence[ReadingExample], progress: ProgressFn | None = None
) -> list[ScoredExample]:
    out = []
    for n, e in enumerate(examples, start=1):
        logits = scorer.score(e.question, list(e.candidates))
        out.append(ScoredExample(e, tuple(float(x) for x in logits)))
        if progress:
            progress("scoring held-out questions", n, len(examples))
    return out


def reading_metrics(scored: Sequence[ScoredExample]) -> dict[str, Any]:
    """Answerability AUROC (answerable vs near-miss, vs unrelated) and the share of answerable
    questions whose best-scored candidate answers them (among those with such a candidate)."""
    answerable = [s for s in scored if s.example.answerable]
    near = [s.answerability for s in scored if s.example.kind == "unanswerable"]
    unrelated = [s.answerability for s in scored if s.example.kind == "unrelated"]
    readable = [s for s in answerable if any(s.example.labels)]
    values = [s.answerability for s in answerable]
    near_auc = auroc(values, near)
    unrelated_auc = auroc(values, unrelated)
    return {
        "answerable": len(answerable),
        "unanswerable": len(near),
        "unrelated": len(unrelated),
        "auroc_near_domain": round(near_auc, 4) if near_auc is not None else None,
        "auroc_unrelated": round(unrelated_auc, 4) if unrelated_auc is not None else None,
        "top1_with_answer_candidate": (
            round(sum(s.top_correct for s in readable) / len(readable), 4) if readable else None
        ),
        "with_answer_candidate": len(readable),
    }


# -- writing -----------------------------------------------------------------------------------


def save_reader(module: torch.nn.Module, folder: Path, manifest: ReaderManifest) -> ReaderManifest:
    """Write ``reader.safetensors`` and its manifest (with the weights' hash) to ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(trained_state(module), str(tmp), metadata={"format": "pt"})
    tmp.chmod(0o644)  # safetensors writes 0600; the weights ship in the package
    tmp.replace(weights)
    final = ReaderManifest(**{**asdict(manifest), "weights_sha256": sha256_file(weights)})
    final.save(folder / MANIFEST_FILE)
    return final


def file_record(path: Path) -> dict[str, str]:
    return {"path": path.as_posix(), "sha256": sha256_file(path)}


# -- a whole training run ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRun:
    manifest: ReaderManifest  # as written, with the weights' hash
    questions: int
    seconds: float
    weights_bytes: int
    held_out_metrics: dict[str, Any]


def train_reader(
    engine: Any,
    files: Sequence[Path],
    config: TrainConfig,
    out: Path,
    *,
    with_dev: bool = False,
    leave_out: str | None = None,
    progress: Any = None,
) -> TrainingRun:
    """Train on the synthetic ``files`` (and with ``with_dev`` the development questions, less
    those about ``leave_out``), measure on the held-out development questions, and write the
    weights and manifest to ``out``. ``progress`` is a CLI progress reporter (or None)."""

    def say(message: str) -> None:
        if progress is not None:
            progress.say(message)

    started = time.perf_counter()
    examples: list[ReadingExample] = []
    for n, path in enumerate(files):
        examples += synthetic_examples(
            load_synthetic_file(path), config.max_candidates, config.seed + n, path.as_posix()
        )
    say(f"{len(examples)} synthetic questions from {len(files)} files")
    split = development_split(engine)
    say(
        f"development questions: {len(split.train)} for training, {len(split.held_out)} held "
        f"out, {len(split.excluded)} left out as copies of test questions "
        f"(cosine >= {NEAR_COPY_COSINE})"
    )
    dev_files = sorted({path for path, _ in split.train + split.held_out})
    if with_dev:
        chosen = [
            q
            for _, q in split.train
            if not leave_out or (leave_out not in q.relevant_docs and q.topic_doc != leave_out)
        ]
        examples += corpus_examples(engine, chosen, config.max_candidates, "development")
    candidates = engine.settings.reader_max_candidates
    held = corpus_examples(engine, [q for _, q in split.held_out], candidates, "held-out")
    module = train(examples, config, progress)
    seconds = round(time.perf_counter() - started, 1)
    metrics = {
        "candidates": candidates,
        **reading_metrics(score_examples(TorchScorer(module, config.max_length), held)),
    }
    base = base_model_dir()
    manifest = ReaderManifest(
        base_model="bundled",
        base_sha256=sha256_file(base / BASE_WEIGHTS_FILE),
        layers=config.layers,
        frozen_layers=config.frozen_layers,
        pooling=config.pooling,
        max_length=config.max_length,
        weights_sha256="",
        training={
            "command": "python -m service train-reader"
            + (" --with-dev" if with_dev else "")
            + (f" --leave-out {leave_out}" if leave_out else ""),
            "config": asdict(config),
            "bf16": _use_bf16(config.precision),
            "synthetic_files": [file_record(p) for p in files],
            "development_files": [file_record(p) for p in dev_files] if with_dev else [],
            "with_development": with_dev,
            "leave_out": leave_out,
            "questions": {
                "synthetic": sum(1 for e in examples if e.source != "development"),
                "development": sum(1 for e in examples if e.source == "development"),
            },
            "excluded_near_copies": [asdict(c) for c in split.excluded],
            "seconds": seconds,
        },
        metrics={"held_out_development": metrics},
    )
    written = save_reader(module, out, manifest)
    return TrainingRun(
        written, len(examples), seconds, (out / WEIGHTS_FILE).stat().st_size, metrics
    )
