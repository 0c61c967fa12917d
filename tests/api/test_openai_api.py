"""The OpenAI-compatible endpoints, driven by the real ``openai`` client against a live server.

The server runs in a background thread (uvicorn on a free local port). Tests marked ``model``
use the real bundled model and corpus (loaded once per session); the error and auth tests use
the hashing embedder, since they never reach retrieval.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import CORPUS, ScriptedReader, make_settings, never, serving

from service.api.app import create_app
from service.config import Settings
from service.engine import Engine

MODEL = "msc-evidence-qa"
KEY = "s3cret-test-key"
BACK_PAIN = "Does MSC therapy help with low back pain?"
ZHANG_TITLE = "Mesenchymal Stem Cell Therapy for Disc-Related Low Back Pain: Current Evidence"
ZHANG_DOI = "https://doi.org/10.3389/fbioe.2023.1155357"
DISCLAIMER_START = "Research summaries for information only, not medical advice."


def make_client(base_url: str, api_key: str = "anything") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=60)


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_url(real_settings: Settings, real_engine: Engine) -> Iterator[str]:
    with serving(create_app(real_settings, engine=real_engine)) as url:
        yield url


@pytest.fixture(scope="module")
def client(real_url: str) -> openai.OpenAI:
    return make_client(real_url)


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Hashing embedder (no model), with an API key required on /v1."""
    settings = make_settings(tmp_path_factory.mktemp("keyed"), CORPUS, openai_api_key=KEY)
    engine, _ = Engine.start(settings)
    with serving(create_app(settings, engine=engine)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed(keyed_url: str) -> openai.OpenAI:
    return make_client(keyed_url, KEY)


def ask(client: openai.OpenAI, messages: list[dict[str, Any]]) -> Any:
    return client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]


def cited_ids(completion: Any) -> set[str]:
    return {c["document_id"] for c in completion.model_extra["citations"]}


# -- models ----------------------------------------------------------------------------------


@pytest.mark.model
def test_lists_the_one_model(client: openai.OpenAI, real_url: str) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].object == "model"
    assert models.data[0].owned_by
    raw = httpx.get(f"{real_url}/v1/models").json()
    assert raw["object"] == "list"
    assert set(raw["data"][0]) == {"id", "object", "created", "owned_by"}
    assert isinstance(raw["data"][0]["created"], int)
    assert client.models.retrieve(MODEL).id == MODEL


# -- answers ---------------------------------------------------------------------------------


@pytest.mark.model
def test_completion_is_the_cited_answer_with_references(
    client: openai.OpenAI, real_url: str
) -> None:
    completion = ask(client, [{"role": "user", "content": BACK_PAIN}])
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    content = choice.message.content or ""
    answer, _, rest = content.partition("**References**")
    assert "[1]" in answer
    assert ZHANG_TITLE in rest and ZHANG_DOI in rest
    assert "Zhang W" in rest and "2023" in rest and "Frontiers in Bioengineering" in rest
    assert rest.rstrip().endswith("_") and DISCLAIMER_START in rest
    # Exactly the cited sources: no other document's title is listed.
    assert "Alzheimer" not in rest and "Pulmonary Fibrosis" not in rest

    extra = completion.model_extra
    assert extra["abstained"] is False
    citations = extra["citations"]
    assert citations and citations[0]["marker"] == 1
    assert cited_ids(completion) == {"zhang-2023"}
    # The same citation fields as /api/ask.
    api = httpx.post(f"{real_url}/api/ask", json={"question": BACK_PAIN}, timeout=60).json()
    assert citations == api["citations"]
    for citation in citations:
        assert f"[{citation['marker']}]" in answer
    assert completion.usage is not None and completion.usage.total_tokens > 0


@pytest.mark.model
def test_content_parts_and_extra_fields_are_accepted(client: openai.OpenAI) -> None:
    plain = ask(client, [{"role": "user", "content": BACK_PAIN}])
    parts = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "text", "text": BACK_PAIN}]},
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        n=1,
        stop=["\n\n\n"],
        user="patient-1",
        seed=7,
        extra_body={"some_unknown_field": {"x": 1}},
    )
    assert parts.choices[0].message.content == plain.choices[0].message.content


@pytest.mark.model
def test_streaming_gives_the_same_reply_and_citations(client: openai.OpenAI) -> None:
    plain = ask(client, [{"role": "user", "content": BACK_PAIN}])
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": BACK_PAIN}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    with_choices = [c for c in chunks if c.choices]
    assert len(with_choices) > 3  # the content really arrives in pieces
    final = with_choices[-1]
    assert final.choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    assert final.model_extra["citations"] == plain.model_extra["citations"]
    assert final.model_extra["abstained"] is False
    assert chunks[-1].usage is not None and chunks[-1].choices == []


@pytest.mark.model
def test_stream_is_server_sent_events_ending_with_done(real_url: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": BACK_PAIN}], "stream": True}
    with httpx.stream("POST", f"{real_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert events[-1]["citations"][0]["document_id"] == "zhang-2023"
    assert "citations" not in events[1]
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert "**References**" in content and ZHANG_DOI in content


@pytest.mark.model
def test_unrelated_question_is_a_normal_abstaining_reply(client: openai.OpenAI) -> None:
    completion = ask(client, [{"role": "user", "content": "What is the capital of France?"}])
    content = completion.choices[0].message.content or ""
    assert completion.choices[0].finish_reason == "stop"
    assert "do not cover" in content
    assert "References" not in content and "doi.org" not in content and "[1]" not in content
    assert completion.model_extra["citations"] == []
    assert completion.model_extra["abstained"] is True
    assert completion.model_extra["answer_status"] == "not_covered"


def test_not_stated_reply_lists_related_reading_not_references(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = make_settings(tmp_path_factory.mktemp("declining"), CORPUS)
    engine, _ = Engine.start(settings, reader=ScriptedReader(never))
    with serving(create_app(settings, engine=engine)) as url:
        question = "What is the recommended ibuprofen dose after a disc injection?"
        completion = ask(make_client(url), [{"role": "user", "content": question}])
    content = completion.choices[0].message.content or ""
    assert completion.model_extra["answer_status"] == "not_stated"
    assert completion.model_extra["abstained"] is True
    assert completion.model_extra["citations"] == []
    assert content.startswith("The documents do not mention ibuprofen.")
    assert "**Related reading (not an answer)**" in content
    assert "**References**" not in content and "[1]" not in content
    assert content.rstrip().endswith("_")  # the disclaimer closes the reply
    assert DISCLAIMER_START in content


# -- follow-up questions ---------------------------------------------------------------------

FOLLOW_UPS = [
    # (first question, follow-up, document the follow-up must cite, text it must contain)
    (BACK_PAIN, "How many patients were in that study?", "zhang-2023", "245"),
    ("Can stem cells treat pulmonary fibrosis?", "Was it safe?", "li-2025", "safe"),
    ("Can MSCs help Alzheimer's disease?", "What about the side effects?", "regmi-2022", "adverse"),
]


@pytest.mark.model
@pytest.mark.parametrize(("first", "follow_up", "document", "expected"), FOLLOW_UPS)
def test_follow_up_is_answered_from_the_previous_sources(
    client: openai.OpenAI, first: str, follow_up: str, document: str, expected: str
) -> None:
    earlier = ask(client, [{"role": "user", "content": first}])
    assert cited_ids(earlier) == {document}
    messages = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": earlier.choices[0].message.content},
        {"role": "user", "content": follow_up},
    ]
    completion = ask(client, messages)
    content = completion.choices[0].message.content or ""
    answer = content.partition("**References**")[0]
    assert cited_ids(completion) == {document}
    assert expected in answer
    assert "[1]" in answer
    resolution = completion.model_extra["resolution"]
    assert resolution["follow_up"] is True
    assert resolution["question"] == follow_up
    assert resolution["document_ids"] == [document]

    # Asked on its own, the follow-up does not get this answer.
    alone = ask(client, [{"role": "user", "content": follow_up}])
    assert alone.choices[0].message.content != content


@pytest.mark.model
def test_follow_up_uses_citations_sent_back_without_references(client: openai.OpenAI) -> None:
    """A client may drop the References text but echo the structured citations."""
    earlier = ask(client, [{"role": "user", "content": BACK_PAIN}])
    messages = [
        {"role": "user", "content": BACK_PAIN},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Some answer without references."}],
            "citations": earlier.model_extra["citations"],
        },
        {"role": "user", "content": [{"type": "text", "text": "How many patients were in it?"}]},
    ]
    completion = ask(client, messages)
    assert cited_ids(completion) == {"zhang-2023"}
    assert "245" in (completion.choices[0].message.content or "")


@pytest.mark.model
def test_a_chain_of_follow_ups_and_a_change_of_topic(client: openai.OpenAI) -> None:
    messages: list[dict[str, Any]] = []
    cited: list[set[str]] = []
    for question in (
        BACK_PAIN,
        "How many patients were in that study?",
        "Were there side effects?",
        "What about Alzheimer's disease?",
    ):
        messages.append({"role": "user", "content": question})
        completion = ask(client, messages)
        messages.append({"role": "assistant", "content": completion.choices[0].message.content})
        cited.append(cited_ids(completion))
    assert cited == [{"zhang-2023"}, {"zhang-2023"}, {"zhang-2023"}, {"regmi-2022"}]
    assert "side effects" in messages[5]["content"]


@pytest.mark.model
def test_follow_up_the_sources_do_not_cover_abstains(client: openai.OpenAI) -> None:
    earlier = ask(client, [{"role": "user", "content": BACK_PAIN}])
    messages = [
        {"role": "user", "content": BACK_PAIN},
        {"role": "assistant", "content": earlier.choices[0].message.content},
        {"role": "user", "content": "How much does it cost?"},
    ]
    completion = ask(client, messages)
    assert completion.model_extra["abstained"] is True
    assert "do not cover" in (completion.choices[0].message.content or "")
    assert completion.model_extra["citations"] == []


# -- errors (hashing embedder; an API key is required) -----------------------------------------


def assert_error_shape(body: Any, param: str | None = None, code: str | None = None) -> None:
    assert set(body) == {"message", "type", "param", "code"}
    assert isinstance(body["message"], str) and body["message"]
    assert body["type"] in ("invalid_request_error", "authentication_error", "server_error")
    assert body["param"] == param
    assert body["code"] == code


def test_missing_messages_is_a_400_naming_the_parameter(keyed: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        keyed.chat.completions.create(model=MODEL, messages=openai.omit)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert_error_shape(caught.value.body, "messages", "missing_required_parameter")


def test_empty_or_userless_messages_are_400(keyed: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        keyed.chat.completions.create(model=MODEL, messages=[])
    assert_error_shape(caught.value.body, "messages", "invalid_value")
    with pytest.raises(openai.BadRequestError) as caught:
        keyed.chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": "Be brief."}]
        )
    assert_error_shape(caught.value.body, "messages")
    assert "no user message" in caught.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        keyed.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": " \u200b"}]
        )
    assert_error_shape(caught.value.body, "messages")
    with pytest.raises(openai.BadRequestError) as caught:
        keyed.chat.completions.create(
            model=MODEL,
            messages=[{"role": "robot", "content": "hi"}],  # type: ignore[list-item]
        )
    assert_error_shape(caught.value.body, "messages[0].role", "invalid_value")


def test_too_long_question_is_400(keyed: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        keyed.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x" * 2001}]
        )
    assert_error_shape(caught.value.body, "messages", "string_above_max_length")


def test_unknown_model_is_404_model_not_found(keyed: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        keyed.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404
    assert_error_shape(caught.value.body, "model", "model_not_found")
    assert "gpt-4o" in caught.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as caught:
        keyed.models.retrieve("gpt-4o")
    assert_error_shape(caught.value.body, "model", "model_not_found")


def test_missing_or_wrong_key_is_401(keyed_url: str) -> None:
    for key in ("wrong-key", KEY + "x", "s3cret"):
        with pytest.raises(openai.AuthenticationError) as caught:
            make_client(keyed_url, key).models.list()
        assert caught.value.status_code == 401
        assert_error_shape(caught.value.body, None, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        make_client(keyed_url, "wrong-key").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    response = httpx.get(f"{keyed_url}/v1/models")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error_shape(response.json()["error"], None, None)
    response = httpx.get(f"{keyed_url}/v1/models", headers={"Authorization": f"Basic {KEY}"})
    assert response.status_code == 401
    # The key is checked before the body is looked at, and on unknown /v1 paths too.
    for method, path, content in (
        ("POST", "/v1/chat/completions", b"{not json"),
        ("POST", "/v1/chat/completions", b"{}"),
        ("GET", "/v1/nothing-here", b""),
    ):
        response = httpx.request(method, f"{keyed_url}{path}", content=content)
        assert response.status_code == 401, path
    # The rest of the API is not behind the key.
    assert httpx.get(f"{keyed_url}/healthz").status_code == 200


def test_right_key_lists_the_model(keyed: openai.OpenAI) -> None:
    assert [m.id for m in keyed.models.list().data] == [MODEL]


def test_bad_json_is_400(keyed_url: str) -> None:
    response = httpx.post(
        f"{keyed_url}/v1/chat/completions",
        content=b'{"model": "msc-evidence-qa", "messages": [',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert_error_shape(response.json()["error"])
    # Other paths keep the service's own error shape.
    response = httpx.post(
        f"{keyed_url}/api/ask",
        content=b"{",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "malformed JSON"


def test_oversize_body_is_413(keyed_url: str) -> None:
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 70_000}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    response = httpx.post(f"{keyed_url}/v1/chat/completions", json=big, headers=headers)
    assert response.status_code == 413
    assert_error_shape(response.json()["error"], None, "request_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused while reading
        yield json.dumps(big).encode()

    response = httpx.post(
        f"{keyed_url}/v1/chat/completions",
        content=chunked(),
        headers={**headers, "Content-Type": "application/json"},
    )
    # Refused while reading, in OpenAI's shape.
    assert response.status_code == 413
    assert_error_shape(response.json()["error"], None, "request_too_large")
    response = httpx.post(f"{keyed_url}/api/ask", json={"question": "x" * 70_000})
    assert response.status_code == 413
    assert "details" in response.json()


def test_unknown_v1_path_is_404_in_openai_shape(keyed_url: str) -> None:
    response = httpx.post(
        f"{keyed_url}/v1/completions",
        json={"model": MODEL, "prompt": "hi"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 404
    assert_error_shape(response.json()["error"])
    assert "/v1/completions" in response.json()["error"]["message"]


def test_engine_not_ready_is_503_in_openai_shape(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    app = create_app(make_settings(tmp_path, CORPUS))
    test_client = TestClient(app)  # not entered: the lifespan (index loading) never runs
    response = test_client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert_error_shape(response.json()["error"])
    assert response.json()["error"]["type"] == "server_error"
