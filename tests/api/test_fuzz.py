"""Fuzz the API from its own OpenAPI schema with schemathesis (hashing embedder, ASGI app).

Every operation gets schema-valid and schema-invalid requests, a bounded number of each so the
file runs in well under a minute. Schemathesis' checks apply: no 5xx, a documented status code,
a body valid against the documented schema and content type, documented headers, invalid data
rejected (4xx), and unsupported methods refused with 405. Schema-valid requests are steered
to the model id and document ids that exist half of the time, so that they reach retrieval
and answering rather than stopping at a 404. The admin endpoints are fuzzed enabled, without
knowing the token: every request is refused (401 or 405) and no re-index ever starts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from conftest import CORPUS, make_settings
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.api.app import create_app
from service.config import load_settings
from service.engine import Engine

MAX_EXAMPLES = 40
MODEL = "msc-evidence-qa"
DOC_IDS = ["zhang-2023", "li-2025"]
ADMIN_TOKEN = "fuzz-admin-token-0123456789"

# The schema is read from the app at collection (no index is loaded for that); the requests go
# to an app serving a real (hashing-embedder) index, built once for the module.
schema = schemathesis.openapi.from_dict(
    create_app(load_settings(model="hash", corpus_dir="unused", index_dir="unused")).openapi()
)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=True,
)
admin_schema = schemathesis.openapi.from_dict(
    create_app(
        load_settings(
            model="hash", corpus_dir="unused", index_dir="unused", admin_token=ADMIN_TOKEN
        )
    ).openapi()
).include(path_regex="^/api/admin/")
admin_schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=True,
)

HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    config = make_settings(tmp_path_factory.mktemp("fuzz"), CORPUS)
    engine, _ = Engine.start(config)
    return engine


@pytest.fixture(scope="module")
def live_app(engine: Engine) -> Iterator[FastAPI]:
    yield create_app(engine.settings, engine=engine)


@pytest.fixture(scope="module")
def admin_app(engine: Engine) -> Iterator[FastAPI]:
    config = engine.settings.model_copy(update={"admin_token": ADMIN_TOKEN})
    yield create_app(config, engine=engine)


def steer(case: schemathesis.Case) -> None:
    """Point schema-valid cases at the model and (half of them) at documents that exist."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    path = case.operation.path
    choose = hash(repr(case.body) + repr(case.path_parameters)) % 2 == 0
    if path == "/v1/chat/completions" and isinstance(case.body, dict):
        case.body["model"] = MODEL
        if choose:  # generated conversations seldom end with a user message that has text
            question = {"role": "user", "content": f"stem cells and back pain {len(case.body)}"}
            case.body["messages"] = [*case.body.get("messages", []), question]
    elif path == "/v1/models/{model_id}" and choose:
        case.path_parameters = {"model_id": MODEL}
    elif path.startswith("/api/documents/{document_id}") and choose:  # the document, citation
        case.path_parameters = {"document_id": DOC_IDS[len(repr(case.path_parameters)) % 2]}
    elif path == "/api/citations" and choose and isinstance(case.query, dict):
        case.query["document_ids"] = DOC_IDS


@schema.parametrize()
@HYPOTHESIS
def test_api_conforms_to_its_schema(case: schemathesis.Case, live_app: FastAPI) -> None:
    steer(case)
    # Schema-valid requests may still be refused for reasons a schema cannot say (an unknown
    # document id, a question that is only control characters): those 4xx are expected.
    case.call_and_validate(app=live_app, excluded_checks=[positive_data_acceptance])


@admin_schema.parametrize()
@HYPOTHESIS
def test_admin_without_the_token_is_refused(case: schemathesis.Case, admin_app: FastAPI) -> None:
    response = case.call_and_validate(app=admin_app, excluded_checks=[positive_data_acceptance])
    assert response.status_code in (401, 405), response.text
