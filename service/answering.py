"""Hits -> a short cited :class:`Answer`, or an honest abstention.

Every answer sentence is copied verbatim from a retrieved passage and followed by the marker of
its study, so numbers, doses and units appear exactly as in the source. Markers number studies,
not passages, as in a paper's reference list: each :class:`Citation` is one document with every
passage of it that the answer quotes (:class:`QuotedPassage`, with the quoted sentences' spans
for highlighting). Sentences are scored against the question with embeddings computed at ingest
time (no encoder call per answer), near duplicates are skipped, and a sentence that leans on the
one before it ("This represents ...") brings that sentence along.

Abstention: :func:`coverage` combines three kinds of evidence that the corpus covers the
question: how close the best passage is (dense cosine), how close the best single sentence is,
and how much of the question's vocabulary the corpus knows (IDF-weighted, so a rare unknown word
counts more than a common one), scaled by the best BM25 score. A raw cosine cut-off alone is not
enough: some answerable lay questions score lower top-1 cosine than some unrelated ones. The
weights (0.45, 0.40, 0.15) were chosen to widen the gap between the lowest in-scope and the
highest unrelated question on the labelled files in ``eval/``; the threshold
(``QA_ABSTAIN_THRESHOLD``) is the middle of that gap, as ``python -m service calibrate`` reports.

Three outcomes (:data:`AnswerStatus`): ``not_covered`` when coverage is below the threshold (the
question is outside the collection); ``not_stated`` when the reader (:mod:`service.reader`) finds
that none of the best candidate sentences answers it although the documents discuss the topic
(its answerability is below ``QA_READER_THRESHOLD``); otherwise ``answered``. Both refusals name
the question's words that no document mentions ("The documents do not mention ibuprofen."), and
``not_stated`` lists up to three related passages as related reading, never as an answer. With
the reader on, the candidate it scores best is quoted first unless the question asks for a kind
of answer the composer recognises (a count, a percent, ...): on 536 development questions this
gave answer-string accuracy 0.590 against 0.582 for the composer alone; adding the reader's logits
to every sentence's score lost accuracy (0.573 at weight 0.05), and quoting its pick first for
typed questions too pushed typed answers ("245 patients") out of the four places.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from service.answer_types import AnswerType
from service.chunking import Span
from service.config import Settings
from service.documents import Document, PageSpan, pages_label
from service.lexical import STOPWORDS, tokenize
from service.reader import Reader, answerability
from service.retrieval import Hit, SearchResult

#: ``answered``: quoted sentences with citations; ``not_stated``: the documents discuss the
#: topic but do not answer the question; ``not_covered``: the question is outside the collection.
AnswerStatus = Literal["answered", "not_stated", "not_covered"]
ANSWER_STATUSES: tuple[AnswerStatus, ...] = ("answered", "not_stated", "not_covered")

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
class QuotedPassage:
    """One retrieved passage that an answer quotes from, and where in it the quotes are."""

    hit: Hit
    highlights: tuple[Span, ...]  # relative to the chunk text

    @property
    def pages(self) -> PageSpan | None:
        """The pages of the quoted sentences (of the whole passage when none is quoted)."""
        if not self.highlights:
            return self.hit.pages
        base = self.hit.chunk.start
        first = min(s.start for s in self.highlights)
        last = max(s.end for s in self.highlights)
        return self.hit.document.page_span(base + first, base + last)


@dataclass(frozen=True)
class Citation:
    """One cited study: its marker and every passage of it the answer quotes, in the order
    they appear in the document. Markers number studies, as in a paper's reference list."""

    marker: int
    passages: tuple[QuotedPassage, ...]

    @property
    def document(self) -> Document:
        return self.passages[0].hit.document

    @property
    def page_label(self) -> str | None:
        """The pages of the quoted sentences, merged: "p. 4", "pp. 4-5, 7"; None for sources
        without pages (Markdown, HTML, text)."""
        return pages_label([pages for p in self.passages if (pages := p.pages) is not None])


@dataclass(frozen=True)
class AnswerSentence:
    text: str
    marker: int


@dataclass(frozen=True)
class Reading:
    """What the reader made of an answer's candidate sentences."""

    answerability: float  # probability that one of the candidates answers the question
    threshold: float  # below it: not_stated
    candidates: int  # sentences read
    gated: bool = True  # False: a bibliographic question answered from a reference line


@dataclass
class Answer:
    question: str
    text: str
    sentences: list[AnswerSentence]
    citations: list[Citation]
    passages: list[Hit]  # answered: the other retrieved passages; not_stated: related reading
    status: AnswerStatus
    abstain_reason: str | None
    coverage: Coverage
    missing_terms: list[str] = field(default_factory=list)  # question words no document has
    reading: Reading | None = None  # None when the reader is off (or not reached)
    disclaimer: str = DISCLAIMER
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def abstained(self) -> bool:
        """Not answered: the documents do not cover the question, or do not state the answer."""
        return self.status != "answered"


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
class SentenceCandidate:
    """One distinct sentence of the retrieved passages, scored by the composer."""

    hit_pos: int  # which hit (passage) it is quoted from
    sentence_pos: int  # its position among that passage's sentences
    score: float
    span: Span  # in the document's text
    document_id: str
    text: str


# Chosen on the development questions (answer-string accuracy 0.615 with no bonus, 0.622 at
# 0.3, 0.628 at 0.5). See service/answer_types.py.
TYPED_ANSWER_BONUS = 0.5
# Sentences scoring more than this below the best one are not quoted.
SELECTION_MARGIN = 0.25


def rank_sentences(
    result: SearchResult,
    sentence_vectors: Sequence[np.ndarray],
    term_weight: Callable[[str], float] | None = None,
) -> list[SentenceCandidate]:
    """Every distinct sentence of the hits with the composer's score, best first.

    The score: cosine with the question, plus half the IDF-weighted share of the question's
    words it holds, less 0.05 per rank of its passage, plus the bonuses for holding the kind of
    answer asked for (:mod:`service.answer_types`).
    ``sentence_vectors[i]`` holds the ingest-time embeddings of hit ``i``'s sentences.
    """
    query_terms = set(tokenize(result.query))
    weight = term_weight or (lambda _term: 1.0)
    query_weight = sum(weight(t) for t in query_terms)
    answer_type = AnswerType.of(result.query)
    candidates: list[SentenceCandidate] = []
    seen_spans: set[tuple[str, int]] = set()
    for pos, (hit, vectors) in enumerate(zip(result.hits, sentence_vectors, strict=True)):
        cosines = vectors @ result.query_vector if len(vectors) else np.zeros(0)
        chunk = hit.chunk
        for s_pos, span in enumerate(chunk.sentences):
            key = (hit.chunk.document_id, span.start)
            if key in seen_spans:
                continue  # the same sentence in an overlapping chunk
            seen_spans.add(key)
            sentence = chunk.text[span.start - chunk.start : span.end - chunk.start]
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
            candidates.append(
                SentenceCandidate(pos, s_pos, score, span, hit.chunk.document_id, sentence)
            )
    return sorted(candidates, key=lambda c: -c.score)


def compose_answer(
    result: SearchResult,
    sentence_vectors: list[np.ndarray],
    settings: Settings,
    documents: Mapping[str, Document] | None = None,
    term_weight: Callable[[str], float] | None = None,
    reader: Reader | None = None,
    known_term: Callable[[str], bool] | None = None,
) -> Answer:
    """Build the answer from the retrieved hits: ``not_covered`` below the coverage threshold,
    ``not_stated`` when the reader finds no answering sentence, else quoted sentences.

    ``sentence_vectors[i]`` holds the ingest-time embeddings of hit ``i``'s sentences;
    ``known_term(stem)`` says whether any document holds a word (for naming what is missing).
    """
    started = time.perf_counter()
    hits = result.hits
    ranked = rank_sentences(result, sentence_vectors, term_weight)
    cover = coverage(
        result, [float(v @ result.query_vector) for vs in sentence_vectors for v in vs]
    )
    missing = missing_terms(result.query, known_term) if known_term else []
    if not hits or cover.score < settings.abstain_threshold:
        return _abstention(result, cover, documents, missing, started)

    reading = None
    if reader is not None and ranked:
        pool = ranked[: settings.reader_max_candidates]
        read_started = time.perf_counter()
        logits = reader.score(result.query, [c.text for c in pool])
        reader_ms = round((time.perf_counter() - read_started) * 1000, 3)
        chance = answerability(logits)
        # The reader never saw reference lines in training: a question for a publication
        # detail (journal, PMID, DOI, authors) whose candidates include the article's
        # reference line is answered from it, as before the reader.
        gated = not (
            AnswerType.of(result.query).reference
            and any(c.text.lower().startswith("source:") for c in pool)
        )
        reading = Reading(round(chance, 4), settings.reader_threshold, len(pool), gated)
        if gated and chance < settings.reader_threshold:
            answer = not_stated(result.query, cover, reading, missing, hits[:3])
            answer.timings_ms.update(
                reader=reader_ms, answer=round((time.perf_counter() - started) * 1000, 3)
            )
            return answer
        # Unless the question asks for a kind of answer the composer can recognise (a count,
        # a percent, a duration, ...), the sentence the reader scores best is quoted first.
        answer_type = AnswerType.of(result.query)
        if not (answer_type.known and any(answer_type.found_in(c.text) for c in pool)):
            first = pool[int(np.argmax(logits))]
            ranked = [first, *(c for c in ranked if c is not first)]
    chosen = _select(ranked, sentence_vectors, hits, settings.max_answer_sentences)
    sentences, citations = _cite(chosen, hits)
    quoted = {p.hit.chunk.id for c in citations for p in c.passages}
    passages = [h for h in hits if h.chunk.id not in quoted]
    answer_text = " ".join(f"{s.text} [{s.marker}]" for s in sentences)
    timings = {"answer": round((time.perf_counter() - started) * 1000, 3)}
    if reading is not None:
        timings["reader"] = reader_ms
    return Answer(
        question=result.query,
        text=answer_text,
        sentences=sentences,
        citations=citations,
        passages=passages,
        status="answered",
        abstain_reason=None,
        coverage=cover,
        reading=reading,
        timings_ms=timings,
    )


def _cite(
    chosen: Sequence[SentenceCandidate], hits: Sequence[Hit]
) -> tuple[list[AnswerSentence], list[Citation]]:
    """Quote passage by passage, the passage of the best sentence first, each passage's
    sentences in reading order; number the studies by first use, so every sentence of one
    study carries its marker. A citation lists its study's quoted passages in document order."""
    order: list[int] = []  # passages, by first use
    for cand in chosen:
        if cand.hit_pos not in order:
            order.append(cand.hit_pos)
    markers: dict[str, int] = {}
    for pos in order:
        markers.setdefault(hits[pos].chunk.document_id, len(markers) + 1)
    sentences: list[AnswerSentence] = []
    highlights: dict[int, list[Span]] = {}
    for pos in order:
        hit = hits[pos]
        own = sorted((c for c in chosen if c.hit_pos == pos), key=lambda c: c.span.start)
        for cand in own:
            sentences.append(AnswerSentence(cand.text, markers[hit.chunk.document_id]))
            highlights.setdefault(pos, []).append(
                Span(cand.span.start - hit.chunk.start, cand.span.end - hit.chunk.start)
            )
    citations = []
    for document_id, marker in markers.items():
        quoted = sorted(
            (pos for pos in order if hits[pos].chunk.document_id == document_id),
            key=lambda pos: hits[pos].chunk.start,
        )
        passages = tuple(QuotedPassage(hits[pos], tuple(highlights[pos])) for pos in quoted)
        citations.append(Citation(marker, passages))
    return sentences, citations


def _select(
    ranked: list[SentenceCandidate],
    sentence_vectors: list[np.ndarray],
    hits: list[Hit],
    limit: int,
) -> list[SentenceCandidate]:
    """Best sentences first (``ranked`` is best first); skip near duplicates; bring along a
    needed previous sentence."""
    if not ranked:
        return []
    best = max(c.score for c in ranked)
    chosen: list[SentenceCandidate] = []
    by_position = {(c.hit_pos, c.sentence_pos): c for c in ranked}

    def vector(c: SentenceCandidate) -> np.ndarray:
        row: np.ndarray = sentence_vectors[c.hit_pos][c.sentence_pos]
        return row

    def duplicate(c: SentenceCandidate) -> bool:
        return any(
            (o.document_id == c.document_id and o.span == c.span)
            or float(vector(o) @ vector(c)) > 0.92
            for o in chosen
        )

    for cand in ranked:
        if len(chosen) >= limit:
            break
        if chosen and cand.score < best - SELECTION_MARGIN:
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


# Words that say nothing about what a question is about: naming them as "not mentioned" would
# be true but useless ("The documents do not mention typically").
_FILLER = frozenset(
    """
    usually typically normally generally roughly exactly approximately actually basically
    recommended recommend recommendation best worst good bad better worse worth ever anyone
    someone somebody anybody everyone people person thing things kind sort way ways need needs
    want wants wanted take takes make makes give gives go goes going come work works help helps
    mean means say says said think look use used able likely probably possibly maybe okay ok
    hi hello hey thanks thank yes yeah lot lots bit stuff whether else still even already
    mom mum dad father mother wife husband son daughter sister brother friend grandma grandpa
    grandmother grandfather aunt uncle doctor doc guy guys
    """.split()  # noqa: SIM905 - a word list reads better as text
)
_TOKEN = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")


def missing_terms(question: str, known: Callable[[str], bool], limit: int = 3) -> list[str]:
    """The question's content words (as written) that no document holds: none of their
    stems is in the index's vocabulary. Filler words and numbers are left out."""
    out: list[str] = []
    seen: set[str] = set()
    for token in _TOKEN.findall(question):
        word = token.lower().replace("’", "'")
        word = re.sub(r"'s$", "", word)
        if word in seen or word in STOPWORDS or word in _FILLER or len(word) < 3:
            continue
        if any(ch.isdigit() for ch in word):
            continue
        stems = tokenize(word)
        if not stems or any(known(stem) for stem in stems):
            continue
        seen.add(word)
        out.append(re.sub(r"['’]s$", "", token))
        if len(out) >= limit:
            break
    return out


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# The collection's topics line, per documents mapping (one per index in service): sorting every
# title on each refusal costs ~50 ms at 100,000 documents.
_TOPICS: dict[int, tuple[Mapping[str, Document], str]] = {}
_TOPICS_LOCK = threading.Lock()


def _topics(documents: Mapping[str, Document]) -> str:
    """ " The collection covers: A; B; ...; and N more." for a refusal."""
    with _TOPICS_LOCK:
        cached = _TOPICS.get(id(documents))
        if cached is not None and cached[0] is documents:
            return cached[1]
    titles = sorted({d.title for d in documents.values()})
    shown = "; ".join(titles[:8]) + (f"; and {len(titles) - 8} more" if len(titles) > 8 else "")
    line = f" The collection covers: {shown}."
    with _TOPICS_LOCK:
        if len(_TOPICS) >= 4:  # the indexes in service and the one being swapped in
            _TOPICS.pop(next(iter(_TOPICS)))
        _TOPICS[id(documents)] = (documents, line)
    return line


def abstention(
    question: str,
    coverage: Coverage,
    reason: str,
    documents: Mapping[str, Document] | None = None,
    missing: Sequence[str] = (),
) -> Answer:
    """The plain "not covered" answer: no citations, no passages, the collection's topics."""
    topics = _topics(documents) if documents else ""
    absent = f" They do not mention {_join(missing)}." if missing else ""
    return Answer(
        question=question,
        text="The documents in this collection do not cover this question." + absent + topics,
        sentences=[],
        citations=[],
        passages=[],
        status="not_covered",
        abstain_reason=reason,
        coverage=coverage,
        missing_terms=list(missing),
    )


def not_stated(
    question: str,
    coverage: Coverage,
    reading: Reading,
    missing: Sequence[str],
    related: Sequence[Hit],
) -> Answer:
    """The documents discuss the topic but do not answer: say so, name what is missing, and
    offer the closest passages as related reading (not as an answer)."""
    if missing:
        text = (
            f"The documents do not mention {_join(missing)}. They discuss related topics but "
            "do not answer this question."
        )
    else:
        text = "The documents discuss related topics but do not answer this question."
    if related:
        text += " The passages below are related reading, not an answer."
    return Answer(
        question=question,
        text=text,
        sentences=[],
        citations=[],
        passages=list(related),
        status="not_stated",
        abstain_reason=(
            f"no retrieved sentence answers it (reader answerability {reading.answerability:.2f}"
            f" is below {reading.threshold:.2f})"
        ),
        coverage=coverage,
        missing_terms=list(missing),
        reading=reading,
    )


def _abstention(
    result: SearchResult,
    cover: Coverage,
    documents: Mapping[str, Document] | None,
    missing: Sequence[str],
    started: float,
) -> Answer:
    reason = (
        "no passage matched the question"
        if not result.hits
        else f"coverage {cover.score:.2f} is below the threshold"
    )
    answer = abstention(result.query, cover, reason, documents, missing)
    answer.timings_ms["answer"] = round((time.perf_counter() - started) * 1000, 3)
    return answer
