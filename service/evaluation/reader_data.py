"""What the reader learns from and is measured on (:mod:`service.evaluation.reader_training`).

Synthetic passages on other biomedical topics (``eval/reader/synthetic_*.jsonl``, their format
in ``eval/reader/README.md``), each question with its candidate sentences; and, for
``--with-dev``, the development questions about the real corpus with the sentences the answer
step would read, split into a training part and a held-out part that no training sees.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.answering import rank_sentences
from service.evaluation.dataset import (
    DEV_QUESTIONS,
    DEV_QUESTIONS_5,
    TEST_QUESTIONS,
    NearCopy,
    Question,
    contains_answer,
    held_out,
    load_questions,
    near_copies,
)

SYNTHETIC_DIR = Path("eval/reader")
ANSWER_TOP_K = 5  # passages whose sentences the answer step reads (as eval's ask)


@dataclass(frozen=True)
class ReadingExample:
    """One question, its candidate sentences, and which of them answer it."""

    question: str
    candidates: tuple[str, ...]
    labels: tuple[bool, ...]
    kind: str  # answerable, unanswerable, unrelated
    style: str | None
    source: str  # the file it came from
    group: str  # synthetic: the passage id; corpus: the question's (first) document or topic

    @property
    def answerable(self) -> bool:
        return self.kind == "answerable"


# -- synthetic passages -------------------------------------------------------------------------


class SyntheticFileError(ValueError):
    """A synthetic training file that does not follow the format."""


@dataclass(frozen=True)
class SyntheticQuestion:
    question: str
    kind: str
    style: str | None
    answer_sentences: tuple[int, ...]


@dataclass(frozen=True)
class SyntheticPassage:
    id: str
    domain: str
    sentences: tuple[str, ...]
    questions: tuple[SyntheticQuestion, ...]


def load_synthetic_file(path: Path) -> list[SyntheticPassage]:
    """Read one ``synthetic_*.jsonl``; a malformed line raises naming the file and line."""
    passages = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            sentences = tuple(str(s) for s in raw["sentences"])
            questions = []
            for q in raw["questions"]:
                kind = str(q["kind"])
                if kind not in ("answerable", "unanswerable", "unrelated"):
                    raise ValueError(f"unknown kind {kind!r}")
                answer = tuple(int(i) for i in q.get("answer_sentences") or ())
                if kind == "answerable" and (
                    not answer or any(not 0 <= i < len(sentences) for i in answer)
                ):
                    raise ValueError(f"answerable question without valid answer_sentences: {q}")
                text = str(q["question"])
                questions.append(SyntheticQuestion(text, kind, q.get("style"), answer))
            passages.append(
                SyntheticPassage(str(raw["id"]), str(raw["domain"]), sentences, tuple(questions))
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SyntheticFileError(f"{path}:{n}: not a synthetic passage ({exc})") from None
    return passages


def synthetic_files(folder: Path = SYNTHETIC_DIR) -> list[Path]:
    return sorted(folder.glob("synthetic_*.jsonl"))


def synthetic_examples(
    passages: Sequence[SyntheticPassage], max_candidates: int, seed: int, source: str = ""
) -> list[ReadingExample]:
    """Each question with its passage's sentences and, as distractors, sentences of two other
    passages (chosen with ``seed``), up to ``max_candidates`` candidates in all."""
    rng = random.Random(seed)
    out = []
    for p_index, passage in enumerate(passages):
        for q in passage.questions:
            answer = set(q.answer_sentences)
            own = list(range(len(passage.sentences)))
            rng.shuffle(own)
            keep = [i for i in own if i in answer] + [i for i in own if i not in answer]
            keep = keep[:max_candidates]
            texts = [passage.sentences[i] for i in keep]
            labels = [i in answer for i in keep]
            others = [i for i in range(len(passages)) if i != p_index]
            distractors = [
                sentence
                for other in rng.sample(others, min(2, len(others)))
                for sentence in passages[other].sentences
            ]
            rng.shuffle(distractors)
            room = max(0, max_candidates - len(texts))
            texts += distractors[:room]
            labels += [False] * len(distractors[:room])
            out.append(
                ReadingExample(
                    question=q.question,
                    candidates=tuple(texts),
                    labels=tuple(labels),
                    kind=q.kind,
                    style=q.style,
                    source=source,
                    group=passage.id,
                )
            )
    return out


# -- questions about the real corpus ------------------------------------------------------------


def corpus_examples(
    engine: Any, questions: Sequence[Question], max_candidates: int, source: str = ""
) -> list[ReadingExample]:
    """Each question with the candidate sentences the answer step would give the reader (the
    composer's best, from the top passages of the default mode). A candidate answers when it
    is in a relevant document and holds an answer string."""
    out = []
    for q in questions:
        pool = candidate_pool(engine, q.question, max_candidates)
        labels = tuple(
            q.in_scope and document in q.relevant_docs and contains_answer(text, q.answers)
            for text, document in pool
        )
        kind = {"in_scope": "answerable", "near_domain": "unanswerable"}.get(q.kind, q.kind)
        group = q.relevant_docs[0] if q.relevant_docs else (q.topic_doc or "general")
        out.append(
            ReadingExample(
                question=q.question,
                candidates=tuple(text for text, _ in pool),
                labels=labels,
                kind=kind,
                style=q.style,
                source=source,
                group=group,
            )
        )
    return out


def candidate_pool(engine: Any, question: str, limit: int) -> list[tuple[str, str]]:
    """(sentence, document id) of the composer's ``limit`` best sentences for ``question``."""
    retriever = engine.retriever
    result = retriever.run(question, ANSWER_TOP_K, engine.settings.default_mode)
    vectors = [retriever.data.chunk_sentence_vectors(h.chunk_index) for h in result.hits]
    ranked = rank_sentences(result, vectors, retriever.term_weight)
    return [(c.text, c.document_id) for c in ranked[:limit]]


@dataclass
class DevelopmentSplit:
    """The development questions, split for the reader, with the test-set copies left out."""

    train: list[tuple[Path, Question]] = field(default_factory=list)
    held_out: list[tuple[Path, Question]] = field(default_factory=list)
    excluded: list[NearCopy] = field(default_factory=list)


def development_split(
    engine: Any, files: Sequence[Path] | None = None, test_file: Path = TEST_QUESTIONS
) -> DevelopmentSplit:
    files = list(files) if files is not None else [*DEV_QUESTIONS, DEV_QUESTIONS_5]
    rows = [(path, q) for path in files for q in load_questions(path)]
    test = load_questions(test_file)

    def embed(text: str) -> Any:
        return engine.embedder.embed([text])[0]

    excluded = near_copies([q for _, q in rows], test, embed)
    gone = {c.question_id for c in excluded}
    split = DevelopmentSplit(excluded=excluded)
    for path, q in rows:
        if q.id in gone:
            continue
        (split.held_out if held_out(path, q) else split.train).append((path, q))
    return split
