"""Hits -> a short cited :class:`Answer`, or an honest abstention.

Every answer sentence is copied verbatim from a retrieved passage and followed by the marker of
that passage, so numbers, doses and units appear exactly as in the source. Sentences are scored
against the question with embeddings computed at ingest time (no encoder call per answer), near
duplicates are skipped, and a sentence that leans on the one before it ("This represents ...")
brings that sentence along.

Abstention: :func:`coverage` combines three kinds of evidence that the corpus covers the
question: how close the best passage is (dense cosine), how close the best single sentence is,
and how much of the question's vocabulary the corpus knows (IDF-weighted, so a rare unknown word
counts more than a common one), scaled by the best BM25 score. A raw cosine cut-off alone is not
enough: some answerable lay questions score lower top-1 cosine than some unrelated ones. The
weights (0.45, 0.40, 0.15) were chosen to widen the gap between the lowest in-scope and the
highest unrelated question on the labelled files in ``eval/``; the threshold
(``QA_ABSTAIN_THRESHOLD``) is the middle of that gap, as ``python -m service calibrate`` reports.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from service.answer_types import AnswerType
from service.chunking import Span
from service.config import Settings
from service.documents import Document
from service.lexical import tokenize
from service.retrieval import Hit, SearchResult

DISCLAIMER = (
    "Research summaries for information only, not medical advice. "
    "Talk to a qualified clinician before making any treatment decision."
)

# Openers of a sentence that only makes sense after the one before it.
_DEPENDENT_OPENER = re.compile(
    r"^(?:this|these|that|those|it|its|they|their|such|there|here|both|"
    r"however|additionally|furthermore|moreover|similarly|likewise|consequently|"
    r"in addition|in contrast|as a result|for example|for instance|even so|"
    r"despite this|despite these|because of this|interestingly|importantly|"
    r"together|overall|finally|still|yet|also)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Coverage:
    score: float
    dense: float
    sentence: float
    lexical: float


@dataclass(frozen=True)
class Citation:
    marker: int
    hit: Hit
    highlights: tuple[Span, ...]  # relative to the chunk text


@dataclass(frozen=True)
class AnswerSentence:
    text: str
    marker: int


@dataclass
class Answer:
    question: str
    text: str
    sentences: list[AnswerSentence]
    citations: list[Citation]
    passages: list[Hit]
    abstained: bool
    abstain_reason: str | None
    coverage: Coverage
    disclaimer: str = DISCLAIMER
    timings_ms: dict[str, float] = field(default_factory=dict)


def _clip(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def coverage(result: SearchResult, sentence_scores: list[float]) -> Coverage:
    """How well the corpus covers the question, from 0 (not at all) to 1."""
    signals = result.signals
    dense = _clip((signals.dense_top - 0.10) / 0.40)
    sentence = _clip(((max(sentence_scores) if sentence_scores else 0.0) - 0.15) / 0.45)
    lexical = signals.known_weight * _clip(signals.bm25_top / 4.0)
    score = 0.45 * dense + 0.40 * sentence + 0.15 * lexical
    return Coverage(round(score, 4), round(dense, 4), round(sentence, 4), round(lexical, 4))


@dataclass(frozen=True)
class _Candidate:
    hit_pos: int
    sentence_pos: int
    score: float
    span: Span
    document_id: str


# Chosen on the development questions (answer-string accuracy 0.615 with no bonus, 0.622 at
# 0.3, 0.628 at 0.5). See service/answer_types.py.
TYPED_ANSWER_BONUS = 0.5


def compose_answer(
    result: SearchResult,
    sentence_vectors: list[np.ndarray],
    document_texts: dict[str, str],
    settings: Settings,
    documents: dict[str, Document] | None = None,
    term_weight: Callable[[str], float] | None = None,
) -> Answer:
    """Build the answer from the retrieved hits.

    ``sentence_vectors[i]`` holds the ingest-time embeddings of hit ``i``'s sentences.
    """
    started = time.perf_counter()
    hits = result.hits
    query_terms = set(tokenize(result.query))
    weight = term_weight or (lambda _term: 1.0)
    query_weight = sum(weight(t) for t in query_terms)
    answer_type = AnswerType.of(result.query)
    candidates: list[_Candidate] = []
    seen_spans: set[tuple[str, int]] = set()
    for pos, (hit, vectors) in enumerate(zip(hits, sentence_vectors, strict=True)):
        cosines = vectors @ result.query_vector if len(vectors) else np.zeros(0)
        text = document_texts[hit.chunk.document_id]
        for s_pos, span in enumerate(hit.chunk.sentences):
            key = (hit.chunk.document_id, span.start)
            if key in seen_spans:
                continue  # the same sentence in an overlapping chunk
            seen_spans.add(key)
            sentence = text[span.start : span.end]
            terms = set(tokenize(sentence))
            # Shared words, weighted by rarity: "reoperation" says more than "MSC".
            overlap = (
                sum(weight(t) for t in query_terms & terms) / query_weight if query_weight else 0.0
            )
            score = float(cosines[s_pos]) + 0.5 * overlap - 0.05 * pos
            if answer_type.quantity and re.search(r"\d", sentence):
                score += 0.15
            if answer_type.known and answer_type.found_in(sentence):
                score += TYPED_ANSWER_BONUS  # "how many patients" -> "245 patients"
            if sentence.lower().startswith("source:"):
                score -= 0.05  # a citation line answers only "who/where published" questions
            candidates.append(_Candidate(pos, s_pos, score, span, hit.chunk.document_id))

    cover = coverage(
        result, [float(v @ result.query_vector) for vs in sentence_vectors for v in vs]
    )
    if not hits or cover.score < settings.abstain_threshold:
        return _abstention(result, cover, documents, started)

    chosen = _select(candidates, sentence_vectors, hits, settings.max_answer_sentences)
    # Group by passage (first use = best sentence first), keep reading order inside a passage.
    order: list[int] = []
    for cand in chosen:
        if cand.hit_pos not in order:
            order.append(cand.hit_pos)
    markers = {hit_pos: n for n, hit_pos in enumerate(order, start=1)}
    sentences: list[AnswerSentence] = []
    highlights: dict[int, list[Span]] = {p: [] for p in order}
    for hit_pos in order:
        hit = hits[hit_pos]
        text = document_texts[hit.chunk.document_id]
        own = sorted((c for c in chosen if c.hit_pos == hit_pos), key=lambda c: c.span.start)
        for cand in own:
            sentences.append(
                AnswerSentence(text[cand.span.start : cand.span.end], markers[hit_pos])
            )
            highlights[hit_pos].append(
                Span(cand.span.start - hit.chunk.start, cand.span.end - hit.chunk.start)
            )
    citations = [Citation(markers[p], hits[p], tuple(highlights[p])) for p in order]
    passages = [h for i, h in enumerate(hits) if i not in markers]
    answer_text = " ".join(f"{s.text} [{s.marker}]" for s in sentences)
    return Answer(
        question=result.query,
        text=answer_text,
        sentences=sentences,
        citations=citations,
        passages=passages,
        abstained=False,
        abstain_reason=None,
        coverage=cover,
        timings_ms={"answer": round((time.perf_counter() - started) * 1000, 3)},
    )


def _select(
    candidates: list[_Candidate],
    sentence_vectors: list[np.ndarray],
    hits: list[Hit],
    limit: int,
) -> list[_Candidate]:
    """Best sentences first; skip near duplicates; bring along a needed previous sentence."""
    if not candidates:
        return []
    ranked = sorted(candidates, key=lambda c: -c.score)
    best = ranked[0].score
    chosen: list[_Candidate] = []
    by_position = {(c.hit_pos, c.sentence_pos): c for c in candidates}

    def vector(c: _Candidate) -> np.ndarray:
        row: np.ndarray = sentence_vectors[c.hit_pos][c.sentence_pos]
        return row

    def duplicate(c: _Candidate) -> bool:
        return any(
            (o.document_id == c.document_id and o.span == c.span)
            or float(vector(o) @ vector(c)) > 0.92
            for o in chosen
        )

    for cand in ranked:
        if len(chosen) >= limit:
            break
        if chosen and cand.score < best - 0.25:
            break
        if duplicate(cand):
            continue
        group = [cand]
        hit = hits[cand.hit_pos]
        # A dependent opener needs its predecessor from the same passage (and paragraph).
        position = cand.sentence_pos
        while position > 0 and _needs_previous(hit, position):
            previous = by_position.get((cand.hit_pos, position - 1))
            if previous is None:
                break
            group.insert(0, previous)
            position -= 1
            if len(group) >= limit:
                break
        # A lone sentence leaning on one outside this passage is not quoted.
        if position == 0 and len(group) == 1 and _needs_previous(hit, 0) and cand.sentence_pos == 0:
            continue
        new = [g for g in group if g not in chosen]
        if len(chosen) + len(new) > limit:
            if not chosen:
                new = new[-limit:]
            else:
                continue
        chosen.extend(new)
    return chosen


def _needs_previous(hit: Hit, sentence_pos: int) -> bool:
    span = hit.chunk.sentences[sentence_pos]
    offset = span.start - hit.chunk.start
    text = hit.chunk.text[offset : offset + 60]
    if sentence_pos > 0:
        gap = hit.chunk.text[hit.chunk.sentences[sentence_pos - 1].end - hit.chunk.start : offset]
        if "\n" in gap:
            return False  # a new paragraph starts here; its opener refers to its own paragraph
    return bool(_DEPENDENT_OPENER.match(text))


def abstention(
    question: str,
    coverage: Coverage,
    reason: str,
    documents: Mapping[str, Document] | None = None,
) -> Answer:
    """The plain "not covered" answer: no citations, no passages, the collection's topics."""
    topics = ""
    if documents:
        titles = sorted({d.title for d in documents.values()})
        shown = "; ".join(titles[:8]) + (f"; and {len(titles) - 8} more" if len(titles) > 8 else "")
        topics = f" The collection covers: {shown}."
    return Answer(
        question=question,
        text="The documents in this collection do not cover this question." + topics,
        sentences=[],
        citations=[],
        passages=[],
        abstained=True,
        abstain_reason=reason,
        coverage=coverage,
    )


def _abstention(
    result: SearchResult,
    cover: Coverage,
    documents: dict[str, Document] | None,
    started: float,
) -> Answer:
    reason = (
        "no passage matched the question"
        if not result.hits
        else f"coverage {cover.score:.2f} is below the threshold"
    )
    answer = abstention(result.query, cover, reason, documents)
    answer.timings_ms["answer"] = round((time.perf_counter() - started) * 1000, 3)
    return answer
