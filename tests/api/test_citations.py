"""Citation export over HTTP: ``GET /api/documents/{id}/citation`` and ``GET /api/citations``
in each format, their headers, bad input, and the public rate limit. The tiny corpus and the
hashing embedder; the formats themselves are checked in tests/core/test_citation_export.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rispy
from conftest import make_settings, write_tiny_corpus
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.citation_routes import content_disposition
from service.citation_export import MAX_EXPORT_DOCUMENTS
from service.config import Settings
from service.engine import Engine

KNEE: dict[str, Any] = {
    "bibtex": (
        "@article{ames2021knee,\n"
        "  author  = {Ames, K.},\n"
        "  title   = {Knee {Cartilage}},\n"
        "  journal = {Knee Journal},\n"
        "  year    = {2021},\n"
        "  doi     = {10.1000/knee.1},\n"
        "  url     = {https://doi.org/10.1000/knee.1},\n"
        "}\n"
    ),
    "ris": (
        "TY  - JOUR\n"
        "AU  - Ames, K.\n"
        "TI  - Knee Cartilage\n"
        "T2  - Knee Journal\n"
        "PY  - 2021\n"
        "DO  - 10.1000/knee.1\n"
        "UR  - https://doi.org/10.1000/knee.1\n"
        "ER  - \n"
    ),
    "csl-json": [
        {
            "id": "ames2021knee",
            "type": "article-journal",
            "title": "Knee Cartilage",
            "author": [{"family": "Ames", "given": "K."}],
            "issued": {"date-parts": [[2021]]},
            "container-title": "Knee Journal",
            "DOI": "10.1000/knee.1",
            "URL": "https://doi.org/10.1000/knee.1",
        }
    ],
}
MEDIA_TYPES = {
    "bibtex": "application/x-bibtex; charset=utf-8",
    "ris": "application/x-research-info-systems; charset=utf-8",
    "csl-json": "application/vnd.citationstyles.csl+json",
}
EXTENSIONS = {"bibtex": "bib", "ris": "ris", "csl-json": "json"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    settings = make_settings(tmp_path_factory.mktemp("citations"))
    write_tiny_corpus(settings.corpus_dir)
    engine, _ = Engine.start(settings)
    return engine


def app_client(engine: Engine, **overrides: object) -> TestClient:
    settings: Settings = engine.settings.model_copy(update=overrides)
    return TestClient(create_app(settings, engine=engine))


@pytest.fixture(scope="module")
def client(engine: Engine) -> Iterator[TestClient]:
    with app_client(engine) as test_client:
        yield test_client


def body_of(fmt: str, text: str) -> object:
    return json.loads(text) if fmt == "csl-json" else text


# -- one document ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["bibtex", "ris", "csl-json"])
def test_one_document_in_each_format(client: TestClient, fmt: str) -> None:
    response = client.get("/api/documents/knee/citation", params={"format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPES[fmt]
    assert response.headers["content-disposition"] == (
        f'attachment; filename="knee.{EXTENSIONS[fmt]}"'
    )
    assert body_of(fmt, response.text) == KNEE[fmt]
    assert response.headers["x-content-type-options"] == "nosniff"  # like every response


def test_the_default_format_is_bibtex(client: TestClient) -> None:
    response = client.get("/api/documents/knee/citation")
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPES["bibtex"]
    assert response.text == KNEE["bibtex"]


def test_a_document_with_only_a_title_and_year(client: TestClient) -> None:
    response = client.get("/api/documents/disc/citation", params={"format": "ris"})
    assert response.text == "TY  - GEN\nTI  - Spinal Discs\nPY  - 2023\nER  - \n"
    assert rispy.loads(response.text) == [
        {"type_of_reference": "GEN", "title": "Spinal Discs", "year": "2023"}
    ]


def test_unknown_document_is_404(client: TestClient) -> None:
    response = client.get("/api/documents/no-such-doc/citation", params={"format": "ris"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": "no document with id 'no-such-doc'", "details": []}


@pytest.mark.parametrize("bad", ["endnote", "BibTeX", "", "csl"])
def test_unknown_format_is_422_naming_the_formats(client: TestClient, bad: str) -> None:
    for path, params in (
        ("/api/documents/knee/citation", {"format": bad}),
        ("/api/citations", {"document_ids": "knee", "format": bad}),
    ):
        response = client.get(path, params=params)
        assert response.status_code == 422, path
        assert response.json() == {
            "error": "invalid request",
            "details": [
                {"field": "format", "message": "Input should be 'bibtex', 'ris' or 'csl-json'"}
            ],
        }


# -- several documents -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["bibtex", "ris", "csl-json"])
def test_several_documents_in_one_file(client: TestClient, fmt: str) -> None:
    ids = ["lung", "knee", "lung", "disc", "knee"]  # order kept, repeats dropped
    response = client.get("/api/citations", params={"document_ids": ids, "format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPES[fmt]
    assert response.headers["content-disposition"] == (
        f'attachment; filename="references.{EXTENSIONS[fmt]}"'
    )
    if fmt == "csl-json":
        items = response.json()
        assert [i["id"] for i in items] == ["anon2025lung", "ames2021knee", "anon2023spinal"]
        assert items[1] == KNEE["csl-json"][0]
    elif fmt == "ris":
        entries = rispy.loads(response.text)
        assert [e["title"] for e in entries] == ["Lung Fibrosis", "Knee Cartilage", "Spinal Discs"]
        assert KNEE["ris"] in response.text
    else:
        assert response.text.startswith("@misc{anon2025lung,\n")
        assert response.text.count("@") == 3
        assert "@article{ames2021knee," in response.text


def test_several_documents_default_to_bibtex(client: TestClient) -> None:
    response = client.get("/api/citations", params={"document_ids": "knee"})
    assert response.headers["content-disposition"] == 'attachment; filename="references.bib"'
    assert response.text == KNEE["bibtex"]


def test_unknown_ids_are_404_naming_each(client: TestClient) -> None:
    response = client.get("/api/citations", params={"document_ids": ["knee", "x1", "x2", "x1"]})
    assert response.status_code == 404
    assert response.json() == {
        "error": "no documents with ids 'x1', 'x2'",
        "details": [
            {"field": "document_ids", "message": "no document with id 'x1'"},
            {"field": "document_ids", "message": "no document with id 'x2'"},
        ],
    }
    one = client.get("/api/citations", params={"document_ids": ["x1"]})
    assert one.json()["error"] == "no document with id 'x1'"


def test_no_ids_or_an_empty_id_is_422(client: TestClient) -> None:
    for params in ({}, {"format": "ris"}):
        response = client.get("/api/citations", params=params)
        assert response.status_code == 422
        assert response.json()["details"] == [
            {"field": "document_ids", "message": "name at least one document"}
        ]
    response = client.get("/api/citations", params={"document_ids": ["knee", ""]})
    assert response.status_code == 422
    assert response.json()["details"][0]["message"] == "a document id must not be empty"


def test_at_most_100_ids(client: TestClient) -> None:
    allowed = client.get("/api/citations", params={"document_ids": ["knee"] * MAX_EXPORT_DOCUMENTS})
    assert allowed.status_code == 200
    assert allowed.text == KNEE["bibtex"]
    too_many = ["knee"] * MAX_EXPORT_DOCUMENTS + ["disc"]
    response = client.get("/api/citations", params={"document_ids": too_many})
    assert response.status_code == 422
    assert response.json()["details"] == [
        {"field": "document_ids", "message": "at most 100 documents per export (got 101)"}
    ]


# -- the service around them -------------------------------------------------------------------


def test_the_public_rate_limit_applies(engine: Engine) -> None:
    with app_client(engine, rate_limit_per_minute=2) as limited:
        assert limited.get("/api/documents/knee/citation").status_code == 200
        assert limited.get("/api/citations", params={"document_ids": "knee"}).status_code == 200
        for path in ("/api/documents/knee/citation", "/api/citations?document_ids=knee"):
            refused = limited.get(path)
            assert refused.status_code == 429, path
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"].startswith("rate limit exceeded (2 requests per minute")
        spec = limited.get("/openapi.json")  # not limited: not under /api/
        assert spec.status_code == 200
        for path in ("/api/documents/{document_id}/citation", "/api/citations"):
            assert "429" in spec.json()["paths"][path]["get"]["responses"]


def test_openapi_lists_the_formats_and_files(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/api/citations"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["document_ids"]["schema"]["anyOf"][0]["type"] == "array"
    assert params["format"]["schema"]["enum"] == ["bibtex", "ris", "csl-json"]
    assert params["format"]["schema"]["default"] == "bibtex"
    content = operation["responses"]["200"]["content"]
    assert set(content) == {
        "application/x-bibtex",
        "application/x-research-info-systems",
        "application/vnd.citationstyles.csl+json",
    }
    assert "/api/documents/{document_id}/citation" in spec["paths"]


def test_not_ready_is_503(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    (tmp_path / "corpus").rmdir()  # no corpus, no index: loading fails
    with TestClient(create_app(settings, load_in_background=False)) as not_ready:
        for path in ("/api/documents/knee/citation", "/api/citations?document_ids=knee"):
            response = not_ready.get(path)
            assert response.status_code == 503
            assert "index could not be loaded" in response.json()["error"]


@pytest.mark.parametrize(
    ("filename", "header"),
    [
        ("zhang-2023.bib", 'attachment; filename="zhang-2023.bib"'),
        ("my paper.ris", "attachment; filename=\"my_paper.ris\"; filename*=UTF-8''my%20paper.ris"),
        (
            'müller"2020.json',
            "attachment; filename=\"m_ller_2020.json\"; filename*=UTF-8''m%C3%BCller%222020.json",
        ),
    ],
)
def test_content_disposition_is_always_a_safe_header(filename: str, header: str) -> None:
    assert content_disposition(filename) == header
