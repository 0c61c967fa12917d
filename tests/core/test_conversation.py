"""Follow-up resolution (service/conversation.py) without the embedding model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import CORPUS, make_settings

from service import conversation
from service.answering import Answer, AnswerSentence, Coverage
from service.conversation import (
    CorpusTerms,
    Resolution,
    Turn,
    answer_resolved,
    ask_in_context,
    back_reference,
    cited_documents,
    message_text,
    resolve,
    strip_back_references,
    topic_words,
)
from service.documents import Document
from service.engine import Engine


def doc(doc_id: str, title: str, text: str, doi: str) -> Document:
    return Document(
        id=doc_id,
        title=title,
        text=text,
        authors=("Someone A",),
        year=2023,
        journal="Journal",
        doi=doi,
        url=f"https://doi.org/{doi}",
        pmid=None,
    )


DOCS = {
    d.id: d
    for d in (
        doc(
            "zhang-2023",
            "Mesenchymal Stem Cell Therapy for Disc-Related Low Back Pain: Current Evidence",
            "Low back pain is common. These studies included 245 patients. Side effects were "
            "mild. MSC injections into the disc reduce pain. Disease of the disc.",
            "10.1/zhang",
        ),
        doc(
            "regmi-2022",
            "Mesenchymal Stem Cells as a Therapeutic Approach for Alzheimer’s Disease",
            "Alzheimer’s disease is the most common cause of dementia. Patients tolerated MSCs "
            "without serious adverse effects.",
            "10.1/regmi",
        ),
        doc(
            "li-2025",
            "Mesenchymal Stromal Cell–Derived Extracellular Vesicles: A Promising Therapeutic "
            "Strategy for Pulmonary Fibrosis",
            "Pulmonary fibrosis scars the lungs. Nebulized vesicles were safe in 24 adults.",
            "10.1/li",
        ),
    )
}
CORPUS_TERMS = CorpusTerms.build(DOCS)


def answer_with_references(*doc_ids: str) -> str:
    refs = "\n".join(
        f"- [{n}] *{DOCS[d].title}*. Someone A. Journal, 2023. https://doi.org/{DOCS[d].doi}"
        for n, d in enumerate(doc_ids, start=1)
    )
    return f"Some quoted sentence. [1]\n\n**References**\n\n{refs}\n\n_Not medical advice._"


ABSTENTION = (
    "The documents in this collection do not cover this question. The collection covers: "
    + "; ".join(d.title for d in DOCS.values())
    + "."
)


def chat(*pairs: tuple[str, str]) -> list[Turn]:
    return [Turn(role, text) for role, text in pairs]


# -- message content ---------------------------------------------------------------------------


def test_message_text_reads_strings_and_text_parts() -> None:
    assert message_text("Is it safe?") == "Is it safe?"
    assert message_text(None) == ""
    parts: list[Any] = [
        {"type": "text", "text": "Is it"},
        {"type": "image_url", "image_url": {"url": "data:..."}},
        {"type": "input_text", "text": "safe?"},
    ]
    assert message_text(parts) == "Is it\n\nsafe?"

    class Part:
        type = "text"
        text = "from an object"

    assert message_text([Part()]) == "from an object"
    assert message_text([{"type": "image_url"}]) == ""


# -- back-references -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "focus"),
    [
        ("How many patients were in that study?", "How many patients were?"),
        ("Was it safe?", "Was safe?"),
        ("What about the side effects?", "the side effects?"),
        ("And the dose?", "the dose?"),
        ("How long do they last?", "How long do last?"),
        ("Is that safe?", "Is safe?"),
        ("What did those researchers conclude?", "What did conclude?"),
        ("What is this?", "What is?"),
        ("Did these patients improve too?", "Did patients improve?"),
    ],
)
def test_back_references_are_found_and_removed(question: str, focus: str) -> None:
    assert back_reference(question) is not None
    assert strip_back_references(question) == focus


@pytest.mark.parametrize(
    "question",
    [
        "Is there evidence that MSCs help with back pain?",
        "What are the sources of MSCs?",
        "Does MSC therapy help with low back pain?",
    ],
)
def test_standalone_wording_is_no_back_reference(question: str) -> None:
    assert back_reference(question) is None
    assert strip_back_references(question) == question


def test_topic_words_drop_question_verbs() -> None:
    assert topic_words("Does MSC therapy help with low back pain?") == "msc therapy low back pain"
    assert (
        topic_words("Can stem cells treat pulmonary fibrosis?") == "stem cells pulmonary fibrosis"
    )
    assert topic_words("Can MSCs help Alzheimer's disease?") == "mscs alzheimer disease"


# -- cited documents -------------------------------------------------------------------------


def test_cited_documents_from_references_and_links() -> None:
    assert cited_documents(answer_with_references("zhang-2023"), DOCS) == ("zhang-2023",)
    both = answer_with_references("li-2025", "zhang-2023")
    assert cited_documents(both, DOCS) == ("li-2025", "zhang-2023")
    # A bare DOI link anywhere counts; a title outside a References list does not.
    assert cited_documents("see https://doi.org/10.1/regmi", DOCS) == ("regmi-2022",)
    assert cited_documents(f"About {DOCS['regmi-2022'].title}.", DOCS) == ()
    # An abstention lists every title but cites nothing.
    assert cited_documents(ABSTENTION, DOCS) == ()
    # Whitespace and case changes (a client re-wrapping the text) do not matter.
    title = DOCS["li-2025"].title.upper().replace(" ", "\n  ")
    assert cited_documents(f"References:\n{title}", DOCS) == ("li-2025",)


# -- resolution ------------------------------------------------------------------------------


def test_first_question_stands_alone() -> None:
    r = resolve(chat(("user", "Was it safe?")), CORPUS_TERMS)
    assert r == Resolution("Was it safe?", False, "Was it safe?")


def test_follow_up_is_restricted_to_the_previous_sources() -> None:
    turns = chat(
        ("user", "Does MSC therapy help with low back pain?"),
        ("assistant", answer_with_references("zhang-2023")),
        ("user", "How many patients were in that study?"),
    )
    r = resolve(turns, CORPUS_TERMS)
    assert r.follow_up
    assert r.question == "How many patients were in that study?"
    assert r.focus == "How many patients were?"
    assert r.topic == "msc therapy low back pain"
    assert r.document_ids == ("zhang-2023",)
    assert r.retrieval_query == "How many patients were? msc therapy low back pain"
    assert "that study" in r.reason


def test_structured_citations_win_over_the_text() -> None:
    turns = [
        Turn("user", "Can stem cells treat pulmonary fibrosis?"),
        Turn("assistant", answer_with_references("zhang-2023"), cited=("li-2025", "unknown-id")),
        Turn("user", "Was it safe?"),
    ]
    assert resolve(turns, CORPUS_TERMS).document_ids == ("li-2025",)


def test_follow_up_after_an_abstention_searches_everything() -> None:
    turns = chat(
        ("user", "What is the capital of France?"),
        ("assistant", ABSTENTION),
        ("user", "And Germany?"),
    )
    r = resolve(turns, CORPUS_TERMS)
    assert r.follow_up and r.document_ids is None
    assert r.topic == "capital france" and r.focus == "Germany?"


def test_naming_another_documents_subject_is_a_new_topic() -> None:
    turns = chat(
        ("user", "Does MSC therapy help with low back pain?"),
        ("assistant", answer_with_references("zhang-2023")),
        ("user", "What about Alzheimer's disease?"),
    )
    r = resolve(turns, CORPUS_TERMS)
    assert not r.follow_up and r.document_ids is None
    assert "alzheim" in r.reason


def test_an_aspect_missing_from_the_source_is_still_a_follow_up() -> None:
    # "side" is not in the Alzheimer's summary, but no title names it: still a follow-up.
    turns = chat(
        ("user", "Can MSCs help Alzheimer's disease?"),
        ("assistant", answer_with_references("regmi-2022")),
        ("user", "What about the side effects?"),
    )
    r = resolve(turns, CORPUS_TERMS)
    assert r.follow_up and r.document_ids == ("regmi-2022",)
    assert r.focus == "the side effects?"


@pytest.mark.parametrize(
    ("question", "follow_up"),
    [
        ("Side effects?", True),
        ("Were there side effects?", True),
        ("What are the sources of MSCs?", False),
        ("How many patients were in the study?", True),
        ("What does the research say about knee cartilage repair in athletes?", False),
        ("How are bone marrow stem cells collected from donors?", False),
    ],
)
def test_short_questions_and_weak_cues(question: str, follow_up: bool) -> None:
    turns = chat(
        ("user", "Does MSC therapy help with low back pain?"),
        ("assistant", answer_with_references("zhang-2023")),
        ("user", question),
    )
    assert resolve(turns, CORPUS_TERMS).follow_up is follow_up


def test_chains_keep_the_topic_and_new_questions_reset_it() -> None:
    turns = chat(
        ("user", "Does MSC therapy help with low back pain?"),
        ("assistant", answer_with_references("zhang-2023")),
        ("user", "How many patients were in that study?"),
        ("assistant", answer_with_references("zhang-2023")),
        ("user", "Were they older adults?"),
    )
    r = resolve(turns, CORPUS_TERMS)
    assert r.follow_up and r.topic == "msc therapy low back pain"
    assert r.document_ids == ("zhang-2023",)

    turns += chat(
        ("assistant", ABSTENTION),
        ("user", "Can stem cells treat pulmonary fibrosis?"),
        ("assistant", answer_with_references("li-2025")),
        ("user", "Is it safe?"),
    )
    r = resolve(turns, CORPUS_TERMS)
    assert r.follow_up and r.topic == "stem cells pulmonary fibrosis"
    assert r.document_ids == ("li-2025",)


def test_other_roles_are_ignored_and_bad_conversations_refused() -> None:
    turns = [
        Turn("system", "You are a pirate."),
        Turn("user", "Does MSC therapy help with low back pain?"),
        Turn("tool", "{}"),
        Turn("assistant", answer_with_references("zhang-2023")),
        Turn("user", "Was it safe?"),
    ]
    assert resolve(turns, CORPUS_TERMS).document_ids == ("zhang-2023",)
    with pytest.raises(ValueError, match="no user message"):
        resolve([Turn("assistant", "hello")], CORPUS_TERMS)
    with pytest.raises(ValueError, match="no text"):
        resolve([Turn("user", "Hi"), Turn("user", "  ")], CORPUS_TERMS)


# -- answering (a scripted engine) -------------------------------------------------------------


def fake_answer(text: str | None, question: str = "q") -> Answer:
    sentences = [AnswerSentence(text, 1)] if text else []
    return Answer(
        question=question,
        text=f"{text} [1]" if text else "The documents in this collection do not cover this.",
        sentences=sentences,
        citations=[],
        passages=[],
        status="answered" if text else "not_covered",
        abstain_reason=None if text else "low coverage",
        coverage=Coverage(0.5, 0.5, 0.5, 0.5),
    )


class ScriptedEngine:
    """Answers ``ask`` from a script and records the calls."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, list[str] | None]] = []

        class Data:
            documents = DOCS

        self.data = Data()

    def ask(self, question: str, document_ids: list[str] | None = None, **_: Any) -> Answer:
        self.calls.append((question, document_ids))
        return self.answers.pop(0)


@pytest.fixture
def in_context(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Replace ask_in_context with a scripted one; the list holds (answer to give, calls)."""
    script: list[Any] = [None, []]

    def fake(engine: Any, question: str, query: str, document_ids: Any = None, **_: Any) -> Answer:
        script[1].append((question, query, document_ids))
        answer: Answer = script[0]
        return answer

    monkeypatch.setattr(conversation, "ask_in_context", fake)
    yield script


FOLLOW_UP = Resolution(
    question="How many patients were in that study?",
    follow_up=True,
    focus="How many patients were?",
    topic="low back pain",
    document_ids=("zhang-2023",),
)


def test_standalone_goes_straight_to_the_engine() -> None:
    engine = ScriptedEngine(fake_answer("An answer."))
    resolution = Resolution("Does it help?", False, "Does it help?")
    result = answer_resolved(cast(Engine, engine), resolution)
    assert result.strategy == "standalone"
    assert engine.calls == [("Does it help?", None)]


def test_grounded_focus_answer_is_used(in_context: list[Any]) -> None:
    engine = ScriptedEngine(fake_answer("These studies included 245 patients."))
    result = answer_resolved(cast(Engine, engine), FOLLOW_UP)
    assert result.strategy == "focus"
    assert result.retrieval_query == "How many patients were?"
    assert engine.calls == [("How many patients were?", ["zhang-2023"])]
    assert result.answer.question == FOLLOW_UP.question
    assert in_context[1] == []


def test_topic_is_added_when_the_focus_alone_fails(in_context: list[Any]) -> None:
    engine = ScriptedEngine(fake_answer(None))
    in_context[0] = fake_answer("Of the 245 patients included, 193 received MSCs.")
    result = answer_resolved(cast(Engine, engine), FOLLOW_UP)
    assert result.strategy == "focus+topic"
    assert in_context[1] == [
        ("How many patients were?", "How many patients were? low back pain", ["zhang-2023"])
    ]
    assert result.attempts == ["focus", "focus+topic"]


def test_answers_that_only_match_the_topic_are_not_used(in_context: list[Any]) -> None:
    # Both attempts answer, but neither quotes a word of the question itself.
    engine = ScriptedEngine(fake_answer("Low back pain is common."))
    in_context[0] = fake_answer("MSC injections into the disc reduce pain.")
    result = answer_resolved(cast(Engine, engine), FOLLOW_UP)
    assert result.strategy == "none"
    assert result.answer.abstained and result.answer.citations == []
    assert result.answer.question == FOLLOW_UP.question
    assert result.answer.text.startswith("The documents in this collection do not cover")
    assert result.retrieval_query is None


def test_a_follow_up_without_words_of_its_own_uses_the_topic() -> None:
    engine = ScriptedEngine(fake_answer("Low back pain is common."))
    resolution = Resolution("Tell me more", True, "", "low back pain", ("zhang-2023",))
    result = answer_resolved(cast(Engine, engine), resolution)
    assert result.strategy == "focus+topic"
    assert engine.calls == [("low back pain", ["zhang-2023"])]


# -- ask_in_context on a real (hashing) engine -------------------------------------------------


def test_ask_in_context_keeps_to_the_documents_and_the_question(tmp_path: Path) -> None:
    engine, _ = Engine.start(make_settings(tmp_path, CORPUS))
    answer = ask_in_context(engine, "side effects", "side effects low back pain", ["zhang-2023"])
    assert answer.question == "side effects"
    assert all(c.document.id == "zhang-2023" for c in answer.citations)
    assert all(p.document.id == "zhang-2023" for p in answer.passages)
    assert "retrieval" in answer.timings_ms and "total" in answer.timings_ms
