"""Adding and removing documents over the API (``/api/admin/documents``) and with
``python -m service add``: stored safely, re-indexed live, refused with a 4xx naming why."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_settings, write_tiny_corpus
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import Settings
from service.embedding import HashEmbedder
from service.ingest import build_index

TOKEN = "uploads-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
HEART = (
    "# Cord Blood Cells in Heart Failure\n\n"
    "Umbilical cord blood cells were infused in forty patients with heart failure.\n\n"
    "Source: Okafor A, Lindqvist B. Cord blood cells in heart failure: a phase I trial. "
    "Cardiology Reports. 2026. doi:10.1234/cr.2026.001\n"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path, admin_token=TOKEN, max_file_bytes=4096)
    write_tiny_corpus(settings.corpus_dir)
    build_index(settings, HashEmbedder())
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, load_in_background=False)) as client:
        yield client


def upload(
    client: TestClient, name: str, data: bytes, metadata: bytes | None = None, **headers: str
) -> object:
    files = {"file": (name, data, "application/octet-stream")}
    if metadata is not None:
        files["metadata"] = ("paper.yml", metadata, "application/x-yaml")
    return client.post("/api/admin/documents", files=files, headers={**ADMIN, **headers})


def corpus_files(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.corpus_dir.iterdir())


def test_an_upload_is_stored_indexed_and_answered(client: TestClient, settings: Settings) -> None:
    before = client.get("/readyz").json()["documents"]
    response = upload(client, "Heart Study.md", HEART.encode())
    assert response.status_code == 201, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    [doc] = body["documents"]
    assert doc["id"] == "okafor-2026" and doc["path"] == "heart-study.md"
    assert doc["title"] == "Cord Blood Cells in Heart Failure" and doc["year"] == 2026
    assert doc["doi"] == "10.1234/cr.2026.001" and doc["chunk_count"] >= 1
    assert doc["page_count"] == 0
    assert body["reindex"]["documents"] == before + 1
    assert (settings.corpus_dir / "heart-study.md").read_text() == HEART
    assert client.get("/readyz").json()["documents"] == before + 1
    ids = [d["id"] for d in client.get("/api/documents").json()["documents"]]
    assert "okafor-2026" in ids
    hits = client.get("/api/search", params={"q": "cord blood heart failure", "top_k": 1})
    assert hits.json()["results"][0]["document_id"] == "okafor-2026"
    assert not [n for n in corpus_files(settings) if n.startswith(".")]  # no temporary files


@pytest.mark.parametrize(
    "name",
    [
        "../../outside.md",
        "..\\..\\outside.md",
        "/etc/outside.md",
        "a/b/../outside.md",
        ".outside.md",
    ],
)
def test_client_file_names_never_become_paths(
    client: TestClient, settings: Settings, name: str
) -> None:
    response = upload(client, name, HEART.encode())
    assert response.status_code == 201, response.text  # type: ignore[attr-defined]
    stored = response.json()["documents"][0]["path"]  # type: ignore[attr-defined]
    assert stored == "outside.md"
    assert (settings.corpus_dir / stored).is_file()
    tmp = settings.corpus_dir.parent
    assert not (tmp / "outside.md").exists() and not (tmp.parent / "outside.md").exists()


def test_a_taken_name_is_never_overwritten(client: TestClient, settings: Settings) -> None:
    original = (settings.corpus_dir / "knee.md").read_text()
    other = HEART.replace("Heart Failure", "Kidney Disease").replace("heart failure", "kidneys")
    other = other.replace("doi:10.1234/cr.2026.001", "doi:10.1234/cr.2026.002")
    response = upload(client, "knee.md", other.encode())
    assert response.status_code == 201, response.text  # type: ignore[attr-defined]
    assert response.json()["documents"][0]["path"] == "knee-2.md"  # type: ignore[attr-defined]
    assert (settings.corpus_dir / "knee.md").read_text() == original


@pytest.mark.parametrize(
    ("name", "data", "status", "says"),
    [
        ("tool.exe", b"MZ...", 415, "unsupported file type (.exe)"),
        ("notes", b"some text", 415, "unsupported file type (no suffix)"),
        ("big.txt", b"word " * 2000, 413, "limit of 4,096 bytes (QA_MAX_FILE_BYTES)"),
        ("latin1.txt", "caf\xe9 au lait\n".encode("latin-1"), 422, "not valid UTF-8"),
        ("binary.md", b"\x00\x01\x02 binary", 422, "binary file"),
        ("empty.html", b"   ", 422, "empty file"),
        ("fake.pdf", b"this is not a PDF at all", 422, "PDF"),
    ],
)
def test_bad_uploads_are_refused_and_change_nothing(
    client: TestClient, settings: Settings, name: str, data: bytes, status: int, says: str
) -> None:
    files, build = corpus_files(settings), client.get("/api/admin/status", headers=ADMIN).json()
    response = upload(client, name, data)
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert says in response.json()["error"]  # type: ignore[attr-defined]
    assert corpus_files(settings) == files
    assert client.get("/api/admin/status", headers=ADMIN).json()["serving"] == build["serving"]


def test_a_body_far_over_the_limit_is_refused_before_it_is_read(client: TestClient) -> None:
    response = upload(client, "huge.txt", b"x" * 1_000_000)
    assert response.status_code == 413  # type: ignore[attr-defined]


def test_duplicates_are_refused(client: TestClient, settings: Settings) -> None:
    assert upload(client, "heart.md", HEART.encode()).status_code == 201  # type: ignore[attr-defined]
    again = upload(client, "heart-copy.md", HEART.encode())
    assert again.status_code == 409  # type: ignore[attr-defined]
    assert "already has this document: 'okafor-2026'" in again.json()["error"]  # type: ignore[attr-defined]
    retitled = HEART.replace("a phase I trial", "a phase I trial (final)")  # same DOI and title
    assert upload(client, "heart-v2.md", retitled.encode()).status_code == 409  # type: ignore[attr-defined]
    assert "heart-copy.md" not in corpus_files(settings)


def test_delete_takes_a_document_out(client: TestClient, settings: Settings) -> None:
    response = client.delete("/api/admin/documents/skin", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["files"] == ["skin.md"] and response.json()["removed"] == "skin"
    assert not (settings.corpus_dir / "skin.md").exists()
    assert "skin" not in [d["id"] for d in client.get("/api/documents").json()["documents"]]
    assert client.get("/api/documents/skin").status_code == 404
    assert not [n for n in corpus_files(settings) if n.startswith(".")]
    missing = client.delete("/api/admin/documents/skin", headers=ADMIN)
    assert missing.status_code == 404 and "no document with id 'skin'" in missing.json()["error"]


def test_a_failed_rebuild_puts_the_corpus_back(client: TestClient, settings: Settings) -> None:
    """Deleting every document leaves nothing to index: the last delete fails, is undone, and
    the index in service keeps that document."""
    for doc_id in ("knee", "lung", "skin"):
        assert client.delete(f"/api/admin/documents/{doc_id}", headers=ADMIN).status_code == 200
    [last] = corpus_files(settings)
    failed = client.delete("/api/admin/documents/disc", headers=ADMIN)
    assert failed.status_code == 500 and failed.json()["status"] == "failed"
    assert corpus_files(settings) == [last]
    assert [d["id"] for d in client.get("/api/documents").json()["documents"]] == ["disc"]


def test_uploads_need_the_admin_token(client: TestClient, settings: Settings) -> None:
    files = corpus_files(settings)
    anonymous = client.post("/api/admin/documents", files={"file": ("a.md", HEART.encode())})
    assert anonymous.status_code == 401
    assert client.delete("/api/admin/documents/knee").status_code == 401
    assert corpus_files(settings) == files


def test_add_command(tmp_path: Path) -> None:
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    write_tiny_corpus(corpus)
    paper = tmp_path / "incoming" / "Heart Study.md"
    paper.parent.mkdir()
    paper.write_text(HEART)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env.update(QA_MODEL="hash", QA_CORPUS_DIR=str(corpus), QA_INDEX_DIR=str(index))
    command = [sys.executable, "-m", "service", "add", str(paper)]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("added okafor-2026: Cord Blood Cells in Heart Failure (2026)")
    assert (corpus / "heart-study.md").read_text() == HEART
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "already has this document" in again.stderr and "nothing was added" in again.stderr
    assert sorted(p.name for p in corpus.iterdir()) == [
        "disc.md", "heart-study.md", "knee.md", "lung.md", "skin.md"
    ]  # fmt: skip


def test_a_pdf_upload_with_its_metadata(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    from pdf_samples import two_column_article

    article = two_column_article(tmp_path / "draft (final) v2.pdf")
    sidecar = b"id: lima-knee\ntitle: Stromal Cells for Knee Osteoarthritis\njournal: SJM\n"
    with TestClient(
        create_app(settings.model_copy(update={"max_file_bytes": 1_000_000}),
                   load_in_background=False)
    ) as big:  # fmt: skip
        response = upload(big, article.path.name, article.path.read_bytes(), sidecar)
        assert response.status_code == 201, response.text  # type: ignore[attr-defined]
        [doc] = response.json()["documents"]  # type: ignore[attr-defined]
        assert doc["id"] == "lima-knee" and doc["journal"] == "SJM"
        assert doc["path"] == "draft-final-v2.pdf" and doc["page_count"] >= 2
        assert (settings.corpus_dir / "draft-final-v2.yml").read_bytes() == sidecar
        hit = big.get("/api/search", params={"q": "eleven trials participants", "mode": "bm25"})
        assert hit.json()["results"][0]["page_start"] >= 1
        removed = big.delete("/api/admin/documents/lima-knee", headers=ADMIN)
        assert removed.json()["files"] == ["draft-final-v2.pdf", "draft-final-v2.yml"]
    assert not (settings.corpus_dir / "draft-final-v2.yml").exists()
    assert upload(client, "notes.md", HEART.encode(), sidecar).status_code == 415  # type: ignore[attr-defined]


def test_malformed_upload_requests(client: TestClient) -> None:
    """The token is checked before the body is parsed; then the form's shape."""
    broken = {"content-type": "multipart/form-data"}  # no boundary
    assert client.post("/api/admin/documents", content=b"x", headers=broken).status_code == 401
    refused = client.post("/api/admin/documents", json={"file": "a.md"}, headers=ADMIN)
    assert refused.status_code == 415 and "multipart/form-data" in refused.json()["error"]
    bad = client.post("/api/admin/documents", content=b"x", headers={**ADMIN, **broken})
    assert bad.status_code == 400 and "malformed multipart" in bad.json()["error"]
    no_file = client.post("/api/admin/documents", data={"title": "x"}, headers=ADMIN,
                          files={"other": ("a.md", b"text")})  # fmt: skip
    assert no_file.status_code == 422 and "'file' part" in no_file.json()["error"]


def test_uploads_work_without_hard_links(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some mounted file systems refuse hard links: the file is then created exclusively."""

    def no_links(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    response = upload(client, "heart.md", HEART.encode())
    assert response.status_code == 201, response.text  # type: ignore[attr-defined]
    assert (settings.corpus_dir / "heart.md").read_text() == HEART
    assert not [n for n in corpus_files(settings) if n.startswith(".")]
