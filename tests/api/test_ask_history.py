"""Follow-up questions on ``/api/ask``: the page sends the conversation so far (``history``) and
the question is read in its context, by the same resolution as ``/v1/chat/completions``.

Fast tests use the hashing embedder on the real corpus; ``model`` tests the real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import CORPUS, make_settings
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.schemas import MAX_HISTORY_TURNS
from service.config import Settings

BACK_PAIN = "Does MSC therapy help with low back pain?"


@pytest.fixture(scope="module")
def hash_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("history"), CORPUS)
    with TestClient(create_app(settings, load_in_background=False)) as client:
        yield client


@pytest.fixture(scope="module")
def real_client(real_settings: Settings, real_engine: Any) -> Iterator[TestClient]:
    with TestClient(create_app(real_settings, engine=real_engine)) as client:
        yield client


def ask(client: TestClient, question: str, history: Any = None, **extra: Any) -> Any:
    body = {"question": question, **extra}
    if history is not None:
        body["history"] = history
    return client.post("/api/ask", json=body)


def test_without_history_there_is_no_resolution(hash_client: TestClient) -> None:
    body = ask(hash_client, BACK_PAIN).json()
    assert body["resolution"] is None
    assert ask(hash_client, BACK_PAIN, history=[]).json()["resolution"] is None


def test_a_follow_up_is_read_against_the_previous_answers_study(hash_client: TestClient) -> None:
    history = [
        {"role": "user", "text": BACK_PAIN},
        {"role": "assistant", "text": "...", "document_ids": ["zhang-2023"]},
    ]
    body = ask(hash_client, "How many patients were in that study?", history).json()
    resolution = body["resolution"]
    assert resolution["follow_up"] is True
    assert resolution["document_ids"] == ["zhang-2023"]
    assert resolution["about"] == ["Zhang et al. 2023"]
    assert "that study" not in resolution["retrieval_query"]
    assert body["question"] == "How many patients were in that study?"
    # Whatever it answered, it quoted only the study the conversation is about.
    assert {c["document_id"] for c in body["citations"]} <= {"zhang-2023"}


def test_a_question_naming_its_own_subject_stands_alone(hash_client: TestClient) -> None:
    history = [
        {"role": "user", "text": BACK_PAIN},
        {"role": "assistant", "document_ids": ["zhang-2023"]},
    ]
    body = ask(hash_client, "Can MSCs help Alzheimer's disease?", history).json()
    resolution = body["resolution"]
    assert resolution["follow_up"] is False
    assert resolution["document_ids"] is None and resolution["about"] == []
    assert resolution["strategy"] == "standalone"


def test_unknown_documents_in_the_history_are_ignored(hash_client: TestClient) -> None:
    history = [
        {"role": "user", "text": BACK_PAIN},
        {"role": "assistant", "document_ids": ["no-such-document"]},
    ]
    response = ask(hash_client, "Was it safe?", history)
    assert response.status_code == 200
    assert response.json()["resolution"]["document_ids"] is None


@pytest.mark.parametrize(
    ("history", "field"),
    [
        ([{"role": "system", "text": "be nice"}], "history.0.role"),
        ([{"role": "user", "text": "x", "extra": 1}], "history.0.extra"),
        ([{"role": "user", "text": 5}], "history.0.text"),
        ([{"role": "assistant", "document_ids": "zhang-2023"}], "history.0.document_ids"),
        ([{"role": "user", "text": "q"}] * (MAX_HISTORY_TURNS + 1), "history"),
        ([{"role": "user", "text": "x" * 2001}], "history.0.text"),
        ("not a list", "history"),
    ],
)
def test_bad_history_is_refused(hash_client: TestClient, history: Any, field: str) -> None:
    response = ask(hash_client, "Was it safe?", history)
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["details"]]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields


# -- real model --------------------------------------------------------------------------------


@pytest.mark.model
def test_follow_up_is_answered_in_context_like_the_chat_endpoint(real_client: TestClient) -> None:
    first = ask(real_client, BACK_PAIN).json()
    assert {c["document_id"] for c in first["citations"]} == {"zhang-2023"}
    history = [
        {"role": "user", "text": BACK_PAIN},
        {
            "role": "assistant",
            "text": first["answer"],
            "document_ids": [c["document_id"] for c in first["citations"]],
        },
    ]
    body = ask(real_client, "How many patients were in that study?", history).json()
    assert body["answer_status"] == "answered", body["answer"]
    assert "245" in body["answer"]
    assert [c["document_id"] for c in body["citations"]] == ["zhang-2023"]
    assert body["resolution"]["follow_up"] is True
    assert body["resolution"]["about"] == ["Zhang et al. 2023"]
    # The same question without the conversation is not about that study at all.
    alone = ask(real_client, "How many patients were in that study?").json()
    assert alone["resolution"] is None
    assert alone["answer"] != body["answer"]


@pytest.mark.model
def test_follow_up_the_sources_do_not_cover_declines(real_client: TestClient) -> None:
    history = [
        {"role": "user", "text": BACK_PAIN},
        {"role": "assistant", "document_ids": ["zhang-2023"]},
    ]
    body = ask(real_client, "How much does it cost?", history).json()
    assert body["abstained"] is True and body["citations"] == []
    assert body["resolution"]["follow_up"] is True
