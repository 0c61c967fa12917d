"""Which kind of answer a question asks for, and which sentences hold one."""

from __future__ import annotations

import pytest

from service.answer_types import AnswerType


@pytest.mark.parametrize(
    ("question", "sentence"),
    [
        ("How many patients were in the meta-analysis?", "These studies included 245 patients."),
        ("how many adult patients took part?", "It enrolled 24 adults and 10 adult patients."),
        ("What number of studies met the criteria?", "Of the 2,392 studies, 9 were kept."),
        ("What percentage needed another operation?", "The reoperation rate was around 7%."),
        ("How long were they followed up?", "No serious events during one year of follow-up."),
        ("How often was it inhaled?", "Patients inhaled it twice daily for seven days."),
        ("When was the search run?", "Databases were searched through September 18, 2022."),
        ("What dose of cells was given?", "Doses ranged from 2×10⁵ to 1×10⁹ cells."),
        ("How much was given?", "Each patient received 2 mg."),
        ("Which journal published the review?", "Source: Regmi S, et al. Front Mol Neurosci."),
        ("What is the PMID of the trial?", "Source: Li M, et al. PMID: 40000000."),
    ],
)
def test_sentence_with_the_asked_for_answer(question: str, sentence: str) -> None:
    kind = AnswerType.of(question)
    assert kind.known
    assert kind.found_in(sentence)


@pytest.mark.parametrize(
    ("question", "sentence"),
    [
        ("How many patients were in the meta-analysis?", "Of the 2,392 studies, 9 were kept."),
        ("How many patients were in the meta-analysis?", "Patients reported less pain."),
        ("What percentage needed another operation?", "Most patients needed nothing more."),
        ("When was the search run?", "The search covered four databases."),
        ("How long were they followed up?", "Follow-up was short."),
        ("Which journal published the review?", "The review was widely read."),
    ],
)
def test_sentence_without_it(question: str, sentence: str) -> None:
    assert not AnswerType.of(question).found_in(sentence)


@pytest.mark.parametrize(
    "question",
    ["Is it safe?", "Why do discs degenerate?", "Which cells are used?", "What is inflammaging?"],
)
def test_questions_without_a_typed_answer(question: str) -> None:
    kind = AnswerType.of(question)
    assert not kind.known
    assert not kind.found_in("In 2022, 245 patients (7%) were followed for one year at 2 mg.")
