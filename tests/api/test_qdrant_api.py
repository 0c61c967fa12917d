"""Faults of the Qdrant backend over HTTP: a collection deleted under a running server, and an
unreachable QA_QDRANT_URL at start-up; 503 with a message naming it, never a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CORPUS, make_settings
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.backends import rebuild
from service.embedding import HashEmbedder
from service.engine import Engine
from service.qdrant_index import close_clients, meta_collection, open_client


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    yield
    close_clients()


def test_a_deleted_collection_answers_503_then_recovers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CORPUS, backend="qdrant", qdrant_path=str(tmp_path / "q"))
    engine, _ = Engine.start(settings, embedder=HashEmbedder(), reader=None)
    name = engine.data.build_name
    with TestClient(create_app(settings, engine=engine)) as client:
        assert client.get("/readyz").status_code == 200
        qdrant = open_client(settings)
        qdrant.delete_collection(name)
        qdrant.delete_collection(meta_collection(name))
        ready = client.get("/readyz")
        assert ready.status_code == 503 and name in ready.json()["error"]
        search = client.get("/api/search", params={"q": "knee cartilage"})
        assert search.status_code == 503 and name in search.json()["error"]
        assert search.headers["retry-after"] == "2"
        ask = client.post("/api/ask", json={"question": "Does it help knee cartilage?"})
        assert ask.status_code == 503
        rebuild(settings, HashEmbedder())  # re-published: the server follows the alias
        assert client.get("/readyz").status_code == 200
        assert client.get("/api/search", params={"q": "knee cartilage"}).status_code == 200


def test_an_unreachable_url_answers_503_and_keeps_retrying(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1"  # nothing listens there: connection refused, for real
    settings = make_settings(tmp_path, CORPUS, backend="qdrant", qdrant_url=url, qdrant_timeout_s=1)
    app = create_app(settings)
    with TestClient(app) as client:
        deadline = time.monotonic() + 20
        while app.state.qa.load_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        ready = client.get("/readyz")
        assert time.monotonic() - started < 2  # never a hang
        assert ready.status_code == 503 and url in ready.json()["error"]
        assert "retrying" in ready.json()["error"]
        search = client.get("/api/search", params={"q": "knee"})
        assert search.status_code == 503 and url in search.json()["error"]
        loader = [t for t in __import__("threading").enumerate() if t.name == "index-loader"]
        assert loader and loader[0].is_alive()  # still trying in the background
