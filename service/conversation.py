"""Multi-turn chats -> one answerable question: follow-up resolution for the chat endpoint.

A chat client sends the whole conversation on every request. The last user message is the
question; the earlier turns only matter when that question leans on them ("how many patients
were in that study?", "was it safe?", "what about the side effects?"). Resolution has two parts.

**Is it a follow-up?** (:func:`resolve`, pure, no model needed.) Only when there is an earlier
user turn, and the question

* *refers back*: a pronoun (it, its, they, them, their), a demonstrative ("that study", "these
  patients", "is this safe?"), a reference to the source ("the study", "the authors"), or an
  elliptical opener ("what about ...", "how about ...", "and ...", "tell me more"); or
* *is very short*: at most two content words in at most four words ("side effects?", "were
  there side effects?"; not "what are the sources of MSCs?"). "The study" counts as a
  reference only in a question with at most three content words besides it.

A question that names the subject of another document is a new topic, not a follow-up, even
with a pronoun in it ("what about Alzheimer's?" after a back pain answer): it contains a word of
another document's title that none of the previously cited documents mention anywhere. Titles
name subjects (back pain, Alzheimer's, pulmonary fibrosis); aspects such as "side effects" or
"patients" are not in titles, so they never trigger this.

**What a follow-up is resolved against.** The conversation is replayed turn by turn:

* *documents*: those cited by the latest assistant message that cited any since the latest
  standalone question (a new topic starts with no documents). Taken from the
  structured ``citations`` a client sends back on the assistant message (the ``document_id`` of
  each, as returned by this service), otherwise recognised in the message text by each
  document's DOI, URL, PubMed link or title (our replies list them under "References", and
  those survive copy-and-paste and clients that drop unknown fields);
* *topic*: the subject words of the latest standalone user question (its content words minus
  question verbs such as "help" or "treat"); follow-ups keep the topic, so chains work;
* *focus*: the question itself with the back-references removed ("how many patients were in
  that study?" -> "how many patients were?"). The source is named by the document restriction,
  so words like "study" would only pull unrelated sentences about "studies".

**Answering a follow-up** (:func:`answer_resolved`, needs the engine) tries, in order:

1. the focus alone, retrieval restricted to the previous answer's documents (works when the
   question's own words find the passage: "how many patients were?" -> "245 patients");
2. retrieval with focus + topic (restricted the same way), but sentences chosen and scored
   against the focus alone: the topic finds the right passages ("was it safe?" + "pulmonary
   fibrosis"), the question picks what answers it (the safety sentence, not the definition of
   pulmonary fibrosis).

Each attempt must pass the engine's own coverage check and be *grounded*: some quoted sentence
must contain one of the focus's content words, so the topic alone can never carry an answer
("how much does it cost?" after back pain abstains instead of quoting the back pain summary).
When no attempt passes, the reply is an ordinary abstention. Standalone questions go to
:meth:`Engine.ask` unchanged, exactly as ``/api/ask`` answers them. When the previous answer
cited nothing (it abstained), a follow-up searches the whole collection.

Limits: the rules are lexical. A follow-up worded unlike its source ("how many patients" when
the summary says "24 adults") can abstain; a change of topic is only noticed when it names a
title word of another document ("what about knee pain?" is read as a follow-up and, if the
earlier sources do not cover it, abstains rather than searching everything).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from service.answering import Answer, Coverage, abstention
from service.documents import Document
from service.engine import Engine
from service.lexical import STOPWORDS, tokenize, words

# -- recognising back-references ------------------------------------------------------------

# Nouns that name the source itself: removed with their determiner, since the document
# restriction says which source is meant.
_SOURCE_NOUN = (
    r"(?:study|studies|trial|trials|review|reviews|paper|papers|article|articles|research|"
    r"meta-analysis|meta-analyses|analysis|analyses|report|reports|document|documents|"
    r"publication|summary|authors?|researchers?|investigators?)"
)
_DETERMINER = r"(?:that|this|these|those|its|their|same|the same|said|your)"
_PREPOSITION = r"(?:in|of|from|for|by|on|about|with|during|according to)"
_SOURCE_REF = re.compile(
    rf"(?:\b{_PREPOSITION}\s+)?\b{_DETERMINER}\s+{_SOURCE_NOUN}\b", re.IGNORECASE
)
# "the study" is a weaker cue: "what does the research say about knee pain?" stands alone.
_DEFINITE_SOURCE = re.compile(rf"(?:\b{_PREPOSITION}\s+)?\bthe\s+{_SOURCE_NOUN}\b", re.IGNORECASE)
_PRONOUN = re.compile(r"\b(?:it|its|they|them|their|theirs)\b", re.IGNORECASE)
# "this"/"these"/"those" before a noun ("these patients"), "that" only before a source noun
# (handled above): "evidence that MSCs help" is a conjunction, not a reference.
_DEMONSTRATIVE = re.compile(r"\b(?:this|these|those)\b(?=\s+[a-z])", re.IGNORECASE)
# "is that safe?", "how does this work?", "what about those?"
_DEMONSTRATIVE_PRONOUN = re.compile(
    r"\b(?:that|this|these|those)\b(?=\s*(?:[?.!,;]|$|\s+(?:is|was|are|were|work|works|"
    r"worked|help|helps|helped|mean|means|cause|causes|do|does|did|have|has|had|last|lasts|"
    r"take|takes|cost|costs|involve|involves|show|shows|find|found)\b))",
    re.IGNORECASE,
)
_OPENER = re.compile(
    r"^\s*(?:(?:and|but|so|then|ok|okay)\b[\s,]*)?(?:(?:what|how)\s+about\b|and\b|also\b|"
    r"plus\b|tell me more(?:\s+about)?\b|more about\b|anything else\b|what else\b)",
    re.IGNORECASE,
)
_TRAILING = re.compile(r"\b(?:too|as well|also|either|instead)(?=\s*[?.!]*\s*$)", re.IGNORECASE)
# "is that safe?", "what is this?": a demonstrative right after a verb or preposition.
_DEMONSTRATIVE_OBJECT = re.compile(
    r"\b(is|was|are|were|does|did|do|has|have|had|about|of|with|for|in)\s+(?:that|this|these|those)"
    r"\b(?!\s+(?:the|a|an|mscs?|stem|cells?)\b)",
    re.IGNORECASE,
)
_SHORT_CUES = re.compile(r"^\s*(?:why|how so|really|how come|is that (?:true|right))\b", re.I)

# Question words that do not name a subject ("Does MSC therapy *help* with back pain?").
_NOT_TOPIC_WORDS = (
    "help helps helped helping work works worked working treat treats treated treating "
    "cure cures cured use used using effective effectively good better best useful "
    "option options way ways thing things something anything everything new"
)
_NOT_TOPIC = frozenset(_NOT_TOPIC_WORDS.split())

#: A question with at most this many content words and this many words in all is too short to
#: stand alone ("side effects?", "were there side effects?"; not "what are the sources of MSCs?").
SHORT_QUESTION_TERMS = 2
SHORT_QUESTION_WORDS = 4
#: "the study" marks a follow-up only when the rest of the question has at most this many.
WEAK_CUE_TERMS = 3


@dataclass(frozen=True)
class Turn:
    """One message of the conversation, reduced to what resolution needs."""

    role: str
    text: str
    #: Documents this (assistant) message cited, if the client sent its citations back.
    cited: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Resolution:
    """The question to answer and how earlier turns bear on it."""

    question: str
    follow_up: bool
    #: What the question itself asks, back-references removed (the question if standalone).
    focus: str
    #: Subject words carried over from the earlier question ("" for a standalone question).
    topic: str = ""
    #: Restrict retrieval to these documents (None: search everything).
    document_ids: tuple[str, ...] | None = None
    #: Why the question was (or was not) treated as a follow-up, for logs and the reply.
    reason: str = "no earlier question"

    @property
    def retrieval_query(self) -> str:
        return f"{self.focus} {self.topic}".strip() if self.follow_up else self.question


@dataclass
class ResolvedAnswer:
    answer: Answer
    resolution: Resolution
    #: Which attempt produced the answer: standalone, focus, focus+topic or none.
    strategy: str
    attempts: list[str] = field(default_factory=list)
    #: The query retrieval ran with for the answer given (None for a follow-up abstention).
    retrieval_query: str | None = None


# -- message content ---------------------------------------------------------------------------


def message_text(content: object) -> str:
    """Text of an OpenAI message ``content``: a string or a list of content parts.

    Text parts (``{"type": "text", "text": ...}``, also ``input_text``) are joined with blank
    lines; other parts (images, audio, files) carry nothing this service can read.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    if isinstance(content, Sequence):
        for part in content:
            if isinstance(part, str):
                texts.append(part)
                continue
            kind = _get(part, "type")
            text = _get(part, "text")
            if kind in (None, "text", "input_text", "output_text") and isinstance(text, str):
                texts.append(text)
    return "\n\n".join(t for t in texts if t)


def _get(obj: object, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


# -- the corpus view used by resolution ----------------------------------------------------------


class CorpusTerms:
    """The word sets :func:`resolve` needs, built once per loaded index: which documents' titles
    hold a word (from the metadata held in memory), and each document's full vocabulary, read
    from its text the first time a conversation cites it (the last few are kept), so a large
    collection's texts are not all read to answer one follow-up."""

    TEXTS_KEPT = 256

    def __init__(self, documents: Mapping[str, Document]) -> None:
        self.documents = documents
        titled: dict[str, list[str]] = {}
        for d in documents.values():
            for term in set(tokenize(f"{d.title} {d.source_title or ''}")):
                titled.setdefault(term, []).append(d.id)
        self.titled: Mapping[str, Sequence[str]] = titled  # term -> documents, in order
        self.text_terms = lru_cache(maxsize=self.TEXTS_KEPT)(self._text_terms)

    @classmethod
    def build(cls, documents: Mapping[str, Document]) -> CorpusTerms:
        return cls(documents)

    def _text_terms(self, document_id: str) -> frozenset[str]:
        """Every stemmed word of a document: its title, source title and text."""
        d = self.documents[document_id]
        return frozenset(tokenize(f"{d.title} {d.source_title or ''} {d.text}"))


_CORPUS_CACHE: tuple[object, CorpusTerms] | None = None


def corpus_terms(documents: Mapping[str, Document]) -> CorpusTerms:
    """:class:`CorpusTerms` for ``documents``, cached for the last documents mapping seen."""
    global _CORPUS_CACHE
    cached = _CORPUS_CACHE
    if cached is not None and cached[0] is documents:
        return cached[1]
    terms = CorpusTerms.build(documents)
    _CORPUS_CACHE = (documents, terms)
    return terms


_REFERENCES_HEADING = re.compile(r"^[#*_\s]*references?\b[*_:\s]*$", re.IGNORECASE | re.MULTILINE)


def cited_documents(text: str, documents: Mapping[str, Document]) -> tuple[str, ...]:
    """Documents an assistant message cites.

    Under a "References" heading a document is recognised by its DOI, URL, PubMed link or
    title; elsewhere only by a link (an abstention lists every title as "the collection
    covers", which is no citation).
    """
    # The last heading: the answer itself might quote the word.
    headings = list(_REFERENCES_HEADING.finditer(text))
    references = _fold_ws(text[headings[-1].end() :]) if headings else ""
    folded = _fold_ws(text)
    found: list[str] = []
    for doc in documents.values():
        links = [n for n in (doc.doi, doc.url, doc.pubmed_url) if n and len(n) >= 8]
        names = [n for n in (doc.title, doc.source_title) if n and len(n) >= 8]
        if any(_fold_ws(n) in folded for n in links) or any(
            _fold_ws(n) in references for n in names
        ):
            found.append(doc.id)
    return tuple(sorted(found))


def _fold_ws(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("’", "'")).strip().lower()


# -- resolution ------------------------------------------------------------------------------


def content_terms(text: str) -> list[str]:
    """Stemmed content words (what retrieval and the grounding check compare)."""
    return tokenize(text)


def strip_back_references(question: str) -> str:
    """The question without the words that point back at earlier turns."""
    text = _OPENER.sub(" ", question)
    text = _SOURCE_REF.sub(" ", text)
    text = _DEFINITE_SOURCE.sub(" ", text)
    text = _PRONOUN.sub(" ", text)
    text = _DEMONSTRATIVE_PRONOUN.sub(" ", text)
    text = _DEMONSTRATIVE_OBJECT.sub(r"\1", text)
    text = _DEMONSTRATIVE.sub(" ", text)
    text = _TRAILING.sub(" ", text)
    text = re.sub(r"\s+([?.!,;])", r"\1", text)
    text = re.sub(r"\s{2,}", " ", text).strip(" ,;")
    return text


def back_reference(question: str) -> str | None:
    """What makes ``question`` refer back to earlier turns, or None."""
    checks = (
        (_OPENER, "starts like a continuation"),
        (_SOURCE_REF, "refers to the source"),
        (_DEMONSTRATIVE_PRONOUN, "uses a demonstrative"),
        (_DEMONSTRATIVE_OBJECT, "uses a demonstrative"),
        (_DEMONSTRATIVE, "uses a demonstrative"),
        (_PRONOUN, "uses a pronoun"),
        (_TRAILING, "ends like a continuation"),
        (_SHORT_CUES, "asks about the previous answer"),
    )
    for pattern, reason in checks:
        if match := pattern.search(question):
            return f"{reason} ('{match.group(0).strip()}')"
    return None


def topic_words(question: str) -> str:
    """The subject words of a question: content words minus question verbs, in order."""
    kept: list[str] = []
    for word in words(question):
        if word in STOPWORDS or word in _NOT_TOPIC or (len(word) < 2 and not word.isdigit()):
            continue
        if word not in kept:
            kept.append(word)
    return " ".join(kept)


def new_subject(question: str, previous: Iterable[str], corpus: CorpusTerms) -> str | None:
    """A word naming another document's subject that the previous documents never mention."""
    previous = [d for d in previous if d in corpus.documents]
    if not previous:
        return None
    for term in sorted(set(content_terms(question))):
        if any(d not in previous for d in corpus.titled.get(term, ())) and not any(
            term in corpus.text_terms(p) for p in previous
        ):
            return term
    return None


def resolve(turns: Sequence[Turn], corpus: CorpusTerms) -> Resolution:
    """Decide what the last user turn asks, given the turns before it.

    ``turns`` are the conversation's user and assistant messages in order (system and tool
    messages dropped); the last user turn is the question. Raises ``ValueError`` when there is
    no user turn with text.
    """
    user_positions = [i for i, t in enumerate(turns) if t.role == "user"]
    if not user_positions:
        raise ValueError("the conversation has no user message")
    last = user_positions[-1]
    question = turns[last].text.strip()
    if not question:
        raise ValueError("the last user message has no text")

    topic = ""
    documents: tuple[str, ...] | None = None
    resolution = Resolution(question=question, follow_up=False, focus=question)
    for position, turn in enumerate(turns[: last + 1]):
        if turn.role == "assistant":
            cited = turn.cited
            if cited is None:
                cited = cited_documents(turn.text, corpus.documents)
            cited = tuple(d for d in cited if d in corpus.documents)
            if cited:
                documents = cited
            continue
        if turn.role != "user" or not turn.text.strip():
            continue
        has_history = position != user_positions[0]
        resolution = _resolve_one(turn.text.strip(), has_history, topic, documents, corpus)
        if not resolution.follow_up:  # a new thread: its own topic, no documents yet
            topic = topic_words(resolution.question)
            documents = None
    return resolution


def _resolve_one(
    question: str,
    has_history: bool,
    topic: str,
    documents: tuple[str, ...] | None,
    corpus: CorpusTerms,
) -> Resolution:
    if not has_history:
        return Resolution(question=question, follow_up=False, focus=question)
    cue = back_reference(question)
    focus = strip_back_references(question)
    own_terms = len(set(content_terms(focus)))
    if cue is None and own_terms <= WEAK_CUE_TERMS and (match := _DEFINITE_SOURCE.search(question)):
        cue = f"refers to the source ('{match.group(0).strip()}')"
    if (
        cue is None
        and own_terms <= SHORT_QUESTION_TERMS
        and len(words(question)) <= SHORT_QUESTION_WORDS
    ):
        cue = "is too short to stand alone"
    if cue is None:
        return Resolution(question, False, question, reason="names its own subject")
    switched = new_subject(question, documents or (), corpus)
    if switched is not None:
        return Resolution(
            question,
            False,
            question,
            reason=f"new topic: '{switched}' is the subject of another document",
        )
    return Resolution(
        question=question,
        follow_up=True,
        focus=focus,
        topic=topic,
        document_ids=documents,
        reason=f"follow-up: the question {cue}",
    )


# -- answering -------------------------------------------------------------------------------


def answer_resolved(
    engine: Engine,
    resolution: Resolution,
    k: int | None = None,
    mode: str | None = None,
    document_ids: Sequence[str] | None = None,
) -> ResolvedAnswer:
    """Answer a resolved question (see the module docstring for the attempts).

    ``k`` and ``mode`` go to every retrieval; ``document_ids`` restricts a standalone question
    (a follow-up is restricted to the previous answer's documents, within these when given).
    """
    if not resolution.follow_up:
        answer = engine.ask(resolution.question, k=k, mode=mode, document_ids=document_ids)
        return ResolvedAnswer(answer, resolution, "standalone", ["standalone"], resolution.question)

    started = time.perf_counter()
    documents = list(resolution.document_ids) if resolution.document_ids else None
    if document_ids is not None:
        allowed = set(document_ids)
        documents = [d for d in documents if d in allowed] if documents else list(document_ids)
    focus_terms = set(content_terms(resolution.focus))
    attempts: list[str] = []
    last: Answer | None = None

    if focus_terms:
        attempts.append("focus")
        last = engine.ask(resolution.focus, k=k, mode=mode, document_ids=documents)
        if _grounded(last, focus_terms):
            return _finish(last, resolution, "focus", attempts, resolution.focus)

    if resolution.topic:
        attempts.append("focus+topic")
        if focus_terms:
            last = ask_in_context(
                engine, resolution.focus, resolution.retrieval_query, documents, k=k, mode=mode
            )
        else:  # "tell me more": nothing of its own to score sentences against
            last = engine.ask(resolution.retrieval_query, k=k, mode=mode, document_ids=documents)
        if _grounded(last, focus_terms):
            return _finish(last, resolution, "focus+topic", attempts, resolution.retrieval_query)

    answer = abstention(
        resolution.question,
        last.coverage if last is not None else Coverage(0.0, 0.0, 0.0, 0.0),
        "no passage of the documents in this conversation answers the follow-up",
        engine.data.documents,
    )
    answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 3)
    return ResolvedAnswer(answer, resolution, "none", attempts)


def _finish(
    answer: Answer, resolution: Resolution, strategy: str, attempts: list[str], query: str
) -> ResolvedAnswer:
    answer = dataclasses.replace(answer, question=resolution.question)
    return ResolvedAnswer(answer, resolution, strategy, attempts, query)


def _grounded(answer: Answer, focus_terms: set[str]) -> bool:
    """Not an abstention, and (if the focus has content words) quotes one of them."""
    if answer.abstained:
        return False
    if not focus_terms:
        return True
    quoted = set(content_terms(" ".join(s.text for s in answer.sentences)))
    return bool(quoted & focus_terms)


def ask_in_context(
    engine: Engine,
    question: str,
    retrieval_query: str,
    document_ids: Sequence[str] | None = None,
    k: int | None = None,
    mode: str | None = None,
) -> Answer:
    """Retrieve with ``retrieval_query``, then choose and score sentences against ``question``
    (:meth:`Engine.ask` with ``retrieval_query``). The coverage check sees the contextual
    query's retrieval signals, so callers must check the answer is grounded in the question's
    own words."""
    return engine.ask(question, k, mode, document_ids, retrieval_query=retrieval_query)
