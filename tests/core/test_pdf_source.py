"""PDFs in the corpus folder: one document each, with its pages, its metadata file, bad files
reported one line each, and extraction done once per unchanged file."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from conftest import make_settings, write_tiny_corpus
from fastapi.testclient import TestClient
from pdf_samples import (
    AUTHORS,
    REFERENCES,
    TITLE,
    encrypted_pdf,
    garbled_pdf,
    image_only_pdf,
    simple_pdf,
    truncated_pdf,
    two_column_article,
    zero_page_pdf,
)

from service.api.app import create_app
from service.api.openai_routes import reply_text
from service.documents import Document, load_corpus, pdf_source
from service.embedding import HashEmbedder
from service.ingest import PDF_CACHE, build_index, ensure_index

SIDECAR = """\
id: lima-knee-2024
title: Stromal Cells for Knee Osteoarthritis (a test article)
journal: Synthetic Journal of Medicine
doi: 10.5555/sjm.2024.101
study_type: meta-analysis
"""


def page_of(article: object, words: str) -> int:
    """The page on which the typeset line starting with ``words`` stands."""
    for page, _column, line in article.lines:  # type: ignore[attr-defined]
        if line.replace("\u00ad", "").startswith(words):
            return int(page)
    raise AssertionError(f"no line starts with {words!r}")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    return folder


def only_document(folder: Path, **limits: object) -> Document:
    loaded = load_corpus(folder, **limits)  # type: ignore[arg-type]
    assert loaded.problems == []
    [doc] = loaded.documents
    return doc


def test_a_pdf_is_a_document_with_its_pages(corpus: Path) -> None:
    article = two_column_article(corpus / "knee-trial.pdf")
    doc = only_document(corpus)
    assert doc.title == TITLE and doc.authors == AUTHORS
    assert doc.path == "knee-trial.pdf" and doc.year == 2024
    assert doc.id == "lima-2024"  # first author's surname and year, as for imported files
    assert len(doc.pages) == max(p for p, _, _ in article.lines) >= 2
    assert doc.pages[0] == 0 and list(doc.pages) == sorted(doc.pages)
    for heading in ("## Introduction", "## Methods", "### Cell culture", "## Results"):
        assert f"\n{heading}\n" in doc.text
    for entry in REFERENCES:  # the reference list is not indexed
        assert entry.split("] ", 1)[1][:40] not in doc.text
    where = doc.text.index("Eleven trials with six hundred and twelve participants")
    span = doc.page_span(where, where + 50)
    assert span is not None and span.first == page_of(article, "Eleven trials")


def test_the_study_type_is_inferred_as_for_other_formats(corpus: Path) -> None:
    simple_pdf(corpus / "trial.pdf", text="A phase II trial of stromal cells in 40 knees.")
    assert only_document(corpus).study_type == "phase II trial"


def test_a_metadata_file_beside_the_pdf_wins(corpus: Path) -> None:
    two_column_article(corpus / "knee-trial.pdf")
    (corpus / "knee-trial.yml").write_text(SIDECAR)
    doc = only_document(corpus)
    assert doc.id == "lima-knee-2024"
    assert doc.title == "Stromal Cells for Knee Osteoarthritis (a test article)"
    assert doc.journal == "Synthetic Journal of Medicine" and doc.doi == "10.5555/sjm.2024.101"
    assert doc.url == "https://doi.org/10.5555/sjm.2024.101"
    assert doc.study_type == "meta-analysis" and doc.authors == AUTHORS  # not in the file: read
    assert doc.text.startswith("# Stromal Cells for Knee Osteoarthritis (a test article)\n")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: encrypted_pdf(p), "encrypted; remove the password"),
        (
            lambda p: image_only_pdf(p),
            "no extractable text (a scanned image?); OCR is not supported",
        ),
        (lambda p: truncated_pdf(p), "not a readable PDF"),
        (lambda p: garbled_pdf(p), "not a readable PDF"),
        (lambda p: zero_page_pdf(p), "no pages"),
        (
            lambda p: simple_pdf(p, pages=4),
            "too many pages (4; the limit is 3, set by QA_MAX_PDF_PAGES)",
        ),
        (lambda p: p.write_bytes(b"Just some text with a .pdf name."), "not a PDF file"),
        (lambda p: p.write_bytes(b""), "empty"),
    ],
)
def test_bad_pdfs_are_reported_and_the_rest_loaded(corpus: Path, make: object, reason: str) -> None:
    write_tiny_corpus(corpus)
    make(corpus / "bad.pdf")  # type: ignore[operator]
    loaded = load_corpus(corpus, max_pdf_pages=3)
    assert [p.path for p in loaded.problems] == ["bad.pdf"]
    assert reason in loaded.problems[0].reason, loaded.problems[0].reason
    assert "\n" not in loaded.problems[0].reason
    assert len(loaded.documents) == 4


def test_too_large_and_orphan_metadata_files(corpus: Path) -> None:
    write_tiny_corpus(corpus)
    simple_pdf(corpus / "big.pdf", pages=2, text="Padding. " * 40)
    (corpus / "lonely.yml").write_text("title: Nothing to describe\n")
    loaded = load_corpus(corpus, max_file_bytes=1024)
    reasons = {p.path: p.reason for p in loaded.problems}
    assert (
        reasons["big.pdf"].startswith("file is too large (")
        and "QA_MAX_FILE_BYTES" in reasons["big.pdf"]
    )
    assert reasons["lonely.yml"] == "metadata file without a PDF beside it (lonely.pdf)"
    assert len(loaded.documents) == 4


def test_a_bad_metadata_file_is_reported(corpus: Path) -> None:
    two_column_article(corpus / "knee-trial.pdf")
    (corpus / "knee-trial.yml").write_text("year: [not a year\n")
    loaded = load_corpus(corpus)
    assert [(p.path, p.reason.split(":")[0]) for p in loaded.problems] == [
        ("knee-trial.pdf", "metadata file knee-trial.yml does not parse")
    ]


def test_an_unchanged_pdf_is_read_once(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = pdf_source.read_pdf

    def counting(path: Path, **kwargs: object) -> object:
        calls.append(path.name)
        return real(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pdf_source, "read_pdf", counting)
    write_tiny_corpus(corpus)
    two_column_article(corpus / "knee-trial.pdf")
    settings = make_settings(tmp_path)
    first = build_index(settings, HashEmbedder())
    assert calls == ["knee-trial.pdf"] and first.manifest.documents == 5
    again = ensure_index(settings, HashEmbedder())
    assert again.build is None and calls == ["knee-trial.pdf"]  # up to date, not re-read
    assert list((settings.index_dir / PDF_CACHE).glob("*.json"))
    simple_pdf(corpus / "second.pdf", text="Stromal cells were frozen before shipping.")
    grown = ensure_index(settings, HashEmbedder())
    assert grown.build is not None and calls == ["knee-trial.pdf", "second.pdf"]
    assert grown.build.reused > 0  # the first PDF's texts are not embedded again
    pdf = corpus / "knee-trial.pdf"
    pdf.write_bytes(pdf.read_bytes())  # written again (new mtime), same bytes: same cache entry
    assert ensure_index(settings, HashEmbedder()).build is None
    assert calls == ["knee-trial.pdf", "second.pdf"]


def test_pages_reach_the_api_and_the_references(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    write_tiny_corpus(settings.corpus_dir)
    article = two_column_article(settings.corpus_dir / "knee-trial.pdf")
    expected = page_of(article, "Eleven trials")
    with TestClient(create_app(settings, load_in_background=False)) as client:
        found = client.get(
            "/api/search",
            params={"q": "eleven trials six hundred twelve participants", "mode": "bm25"},
        ).json()["results"][0]
        assert found["document_id"] == "lima-2024"
        assert found["page_start"] <= expected <= found["page_end"]
        detail = client.get("/api/documents/lima-2024").json()
        pages = detail["pages"]
        assert [p["page"] for p in pages] == list(range(1, len(pages) + 1))
        assert pages[0]["start"] == 0 and pages[-1]["end"] == len(detail["text"])
        assert all(a["end"] == b["start"] for a, b in itertools.pairwise(pages))
        tiny = client.get("/api/documents/knee").json()
        assert tiny["pages"] == []
        knee = client.get("/api/search", params={"q": "knee cartilage", "mode": "bm25"}).json()
        assert knee["results"][0]["page_start"] is None
    from service.engine import Engine

    engine, _ = Engine.start(settings, reader=None)
    answer = engine.ask("How many trials and participants met the inclusion criteria?", k=3,
                        mode="bm25")  # fmt: skip
    assert answer.status == "answered"
    cited = answer.citations[0]
    pages = cited.passages[0].pages
    assert cited.document.id == "lima-2024" and pages is not None
    assert pages.first == expected
    assert f"[{cited.marker}] ({cited.page_label})" in reply_text(answer)
