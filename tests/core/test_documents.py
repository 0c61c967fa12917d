"""Corpus loading: front matter, references, web-page import, boilerplate and bad files."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
from conftest import CORPUS, SEED_PAGE

from service.documents import (
    CorpusFileError,
    Document,
    LoadProblem,
    load_corpus,
    parse_reference,
    split_front_matter,
)

METADATA = (
    "title",
    "authors",
    "year",
    "journal",
    "doi",
    "pmid",
    "pmcid",
    "url",
    "study_type",
    "source_title",
)


@pytest.fixture(scope="module")
def curated() -> dict[str, Document]:
    loaded = load_corpus(CORPUS)
    assert loaded.problems == []
    return {d.id: d for d in loaded.documents}


def source_line(doc_id: str) -> str:
    text = (CORPUS / f"{doc_id}.md").read_text(encoding="utf-8")
    return next(line for line in text.splitlines() if line.startswith("Source:"))


# -- front matter ------------------------------------------------------------------------------


def test_front_matter_of_the_curated_corpus(curated: dict[str, Document]) -> None:
    assert sorted(curated) == ["el-assaad-2024", "han-2025", "li-2025", "regmi-2022", "zhang-2023"]
    zhang = curated["zhang-2023"]
    assert zhang.title == (
        "Mesenchymal Stem Cell Therapy for Disc-Related Low Back Pain: Current Evidence"
    )
    assert zhang.authors == ("Zhang W", "Wang D", "Li H", "Xu G", "Zhang H", "Xu C", "Li J")
    assert zhang.year == 2023
    assert zhang.journal == "Frontiers in Bioengineering and Biotechnology"
    assert zhang.doi == "10.3389/fbioe.2023.1155357"
    assert zhang.pmid is None and zhang.pmcid is None
    assert zhang.study_type == "systematic review and meta-analysis"
    assert zhang.path == "zhang-2023.md"
    # The body is re-rendered Markdown: title heading first, no front matter left.
    assert zhang.text.startswith(f"# {zhang.title}\n\nLow back pain is one of")
    assert "---" not in zhang.text.split("\n", 1)[0]
    assert "\n## Reference\n\nSource: Zhang, W., Wang, D.," in zhang.text
    el = curated["el-assaad-2024"]
    assert el.pmid == "39312703"  # quoted in YAML, stays text
    assert el.pmcid == "PMC11372738"
    assert el.pubmed_url == "https://pubmed.ncbi.nlm.nih.gov/39312703/"


def test_split_front_matter() -> None:
    meta, body = split_front_matter("---\nid: x\npmid: 123\n---\n# T\n\nBody.\n")
    assert meta == {"id": "x", "pmid": 123} and body == "# T\n\nBody.\n"
    assert split_front_matter("# No front matter\n") == (None, "# No front matter\n")
    # An empty block is valid front matter (it used to be reported as unclosed).
    assert split_front_matter("---\n---\nBody\n") == ({}, "Body\n")
    with pytest.raises(CorpusFileError, match="no closing '---'"):
        split_front_matter("---\nid: x\n\nBody\n")
    with pytest.raises(CorpusFileError, match=r"does not parse: .*\(line 2\)"):
        split_front_matter("---\ntitle: [unclosed\n---\nBody\n")
    with pytest.raises(CorpusFileError, match="expected 'key: value' lines"):
        split_front_matter("---\n- a\n- b\n---\nBody\n")


def test_front_matter_fields_are_coerced(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "---\nyear: '2020'\npmid: 12345\nauthors: Smith J; Doe A and Roe B\n"
        "reference: 'Smith J, Doe A. A title. J Foo. 2020;1:1. doi: 10.1000/abc.'\n---\n\n"
        "# Heading Title\n\nSome text.\n",
        encoding="utf-8",
    )
    (doc,) = load_corpus(tmp_path).documents
    assert doc.id == "a"  # no id: the file name
    assert doc.title == "Heading Title"
    assert doc.year == 2020 and doc.pmid == "12345"
    assert doc.authors == ("Smith J", "Doe A", "Roe B")
    # Missing fields come from the declared reference.
    assert doc.doi == "10.1000/abc" and doc.journal == "J Foo"
    assert doc.url == "https://doi.org/10.1000/abc"


def test_front_matter_title_and_body_without_heading(tmp_path: Path) -> None:
    # The first paragraph used to be taken for a title heading and dropped.
    (tmp_path / "x.md").write_text(
        "---\nid: x\ntitle: Declared Title\n---\n\nFirst paragraph.\n\n## Part\n\nMore.\n",
        encoding="utf-8",
    )
    (doc,) = load_corpus(tmp_path).documents
    assert doc.text == "# Declared Title\n\nFirst paragraph.\n\n## Part\n\nMore.\n"


# -- references --------------------------------------------------------------------------------


def test_apa_reference() -> None:
    ref = parse_reference(source_line("zhang-2023"))
    assert ref.authors == ("Zhang W", "Wang D", "Li H", "Xu G", "Zhang H", "Xu C", "Li J")
    assert ref.year == 2023
    assert ref.source_title == (
        "Mesenchymal stem cells can improve discogenic pain in patients with intervertebral "
        "disc degeneration: A systematic review and meta-analysis"
    )
    assert ref.journal == "Frontiers in Bioengineering and Biotechnology"
    assert ref.doi == "10.3389/fbioe.2023.1155357"
    assert ref.url == "https://doi.org/10.3389/fbioe.2023.1155357"
    assert ref.pmid is None and ref.pmcid is None


@pytest.mark.parametrize(
    ("doc_id", "first_authors", "n_authors", "year", "journal", "doi", "pmid", "pmcid"),
    [
        ("el-assaad-2024", ("El Assaad N", "Chebly A"), 11, 2024, "World J Exp Med",
         "10.5493/wjem.v14.i3.97233", "39312703", "PMC11372738"),
        ("li-2025", ("Li M", "Huang H"), 21, 2025, "Signal Transduct Target Ther",
         "10.1038/s41392-025-02262-3", "40461474", "PMC12134356"),
        ("han-2025", ("Han X", "Liao R"), 10, 2025, "Signal Transduct Target Ther",
         "10.1038/s41392-025-02313-9", "40841367", "PMC12371117"),
        ("regmi-2022", ("Regmi S", "Liu DD"), 9, 2022, "Front Mol Neurosci",
         "10.3389/fnmol.2022.1011225", "36277497", "PMC9584646"),
    ],
)  # fmt: skip
def test_nlm_references(
    doc_id: str,
    first_authors: tuple[str, ...],
    n_authors: int,
    year: int,
    journal: str,
    doi: str,
    pmid: str,
    pmcid: str,
) -> None:
    ref = parse_reference(source_line(doc_id))
    assert ref.authors[:2] == first_authors and len(ref.authors) == n_authors
    assert (ref.year, ref.journal) == (year, journal)
    assert (ref.doi, ref.pmid, ref.pmcid) == (doi, pmid, pmcid)
    assert ref.source_title and not ref.source_title.endswith(".")


def test_reference_details() -> None:
    regmi = parse_reference(source_line("regmi-2022"))
    assert regmi.authors[-1] == "Thakor AS"
    assert regmi.source_title == (
        "Mesenchymal stromal cells for the treatment of Alzheimer’s disease: "
        "Strategies and limitations"
    )
    et_al = parse_reference("Source: Zhang W, Li J, et al. A title. J Foo. 2020;1:1.")
    assert et_al.authors == ("Zhang W", "Li J")  # "et al" is not an author
    apa = parse_reference(
        "Reference: van der Berg, A., O'Brien, K.-L., & Li, J. (2021). Cells? Yes. "
        "Stem Cells, 3(2), 1-10. doi:10.1000/xyz.123."
    )
    assert apa.authors == ("van der Berg A", "O'Brien K-L", "Li J")
    assert (apa.year, apa.source_title, apa.journal, apa.doi) == (
        2021,
        "Cells?",
        "Yes",
        "10.1000/xyz.123",
    )
    loose = parse_reference("Source: clinic website, retrieved 2021")
    assert (loose.authors, loose.year, loose.doi) == ((), 2021, None)


# -- importing the raw web page ----------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_import(tmp_path_factory: pytest.TempPathFactory) -> list[Document]:
    folder = tmp_path_factory.mktemp("seed")
    shutil.copy(SEED_PAGE, folder / SEED_PAGE.name)
    loaded = load_corpus(folder)
    assert loaded.problems == []
    return loaded.documents


def test_seed_page_gives_the_curated_articles(
    seed_import: list[Document], curated: dict[str, Document]
) -> None:
    # Page order, each article ending at its "Source:" line.
    assert [d.id for d in seed_import] == [
        "zhang-2023",
        "el-assaad-2024",
        "li-2025",
        "han-2025",
        "regmi-2022",
    ]
    for doc in seed_import:
        expected = curated[doc.id]
        for name in METADATA:
            assert getattr(doc, name) == getattr(expected, name), (doc.id, name)
        assert doc.text == expected.text, doc.id
        assert doc.path == "seed_page.txt"


def test_seed_page_boilerplate_is_gone(seed_import: list[Document]) -> None:
    raw = SEED_PAGE.read_text(encoding="utf-8")
    assert "Subscribe To Our Newsletter" in raw and "Request Information Packet" in raw
    for doc in seed_import:
        for field in (doc.text, doc.title, doc.reference or ""):
            for junk in ("Subscribe", "Request Information Packet", "Thanks for your interest"):
                assert junk not in field, (doc.id, junk)
        # The page repeats each title as its first heading; it is kept once.
        assert doc.text.count(doc.title) == 1


def test_boilerplate_between_articles_is_dropped(
    tmp_path: Path, curated: dict[str, Document]
) -> None:
    # A sign-up block before every article used to become each article's title.
    raw = SEED_PAGE.read_text(encoding="utf-8")
    body = raw.split("\nSubscribe To Our Newsletter", 1)[0].strip()
    block = (
        "Subscribe To Our Newsletter\n\nJoin our mailing list to receive the latest news.\n\n"
        "You have Successfully Subscribed!"
    )
    paragraphs = [block]
    for para in re.split(r"\n\s*\n", body):
        paragraphs.append(para)
        if para.startswith("Source:"):
            paragraphs.append(block)
    (tmp_path / "page.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    loaded = load_corpus(tmp_path)
    assert loaded.problems == []
    assert len(loaded.documents) == 5
    for doc in loaded.documents:
        assert doc.title == curated[doc.id].title
        assert doc.text == curated[doc.id].text


def test_shared_heading_with_its_own_content_is_kept(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(
        "MSC Therapy Overview\n\nFirst clinic: MSCs helped knees.\n\nResults\n\nPain fell.\n"
    )
    (tmp_path / "b.txt").write_text(
        "MSC Therapy Overview\n\nSecond clinic: MSCs helped hips.\n\nResults\n\nGait improved.\n"
    )
    docs = {d.id: d for d in load_corpus(tmp_path).documents}
    assert docs["a"].text == (
        "# MSC Therapy Overview\n\nFirst clinic: MSCs helped knees.\n\n## Results\n\nPain fell.\n"
    )
    assert docs["b"].title == "MSC Therapy Overview"
    assert "## Results\n\nGait improved." in docs["b"].text


# -- other formats -----------------------------------------------------------------------------


def test_html_import(tmp_path: Path) -> None:
    (tmp_path / "knee.html").write_text(
        """<!DOCTYPE html><html><head><title>Knee &amp; Stem Cells | Clinic</title>
<script>var banner = "Subscribe now";</script><style>p { color: red }</style></head>
<body><nav><a href="/">Home</a> <a href="/about">About us</a></nav>
<header><p>Call us today</p></header>
<main><h1>Stem Cells for Knee Osteoarthritis</h1>
<p>Knee osteoarthritis affects millions.   Injections of MSCs were tested.</p>
<h2>Results</h2><p>Pain scores fell by 30&nbsp;points.</p>
<ul><li>No serious adverse events.</li><li>Two had swelling.</li></ul>
<h4>Limitations</h4><p>No control group.</p></main>
<footer><p>Copyright 2024 Clinic</p></footer></body></html>""",
        encoding="utf-8",
    )
    (tmp_path / "lupus.htm").write_text(
        "<html><head><title>MSC Therapy for Lupus</title></head><body><div>Menu</div>"
        "<p>Lupus is an autoimmune disease. MSCs may calm it.</p></body></html>",
        encoding="utf-8",
    )
    loaded = load_corpus(tmp_path)
    assert loaded.problems == []
    docs = {d.id: d for d in loaded.documents}
    knee = docs["knee"]
    assert knee.title == "Stem Cells for Knee Osteoarthritis"
    assert knee.text == (
        "# Stem Cells for Knee Osteoarthritis\n\n"
        "Knee osteoarthritis affects millions. Injections of MSCs were tested.\n\n"
        "## Results\n\nPain scores fell by 30 points.\n\n"
        "No serious adverse events.\n\nTwo had swelling.\n\n"
        "## Limitations\n\nNo control group.\n"
    )
    for junk in ("Home", "About us", "Call us", "Copyright", "Subscribe", "color"):
        assert junk not in knee.text
    # Without an <h1>, the <title> is the title.
    assert docs["lupus"].title == "MSC Therapy for Lupus"
    assert docs["lupus"].text.startswith("# MSC Therapy for Lupus\n\nMenu\n\nLupus is")


def test_markdown_without_front_matter_and_plain_text(tmp_path: Path) -> None:
    (tmp_path / "Heart Failure Notes.md").write_text(
        "# Umbilical Cord MSCs in Heart Failure\n\nA short summary\nof an early trial.\n\n"
        "## Findings\n\nEjection fraction improved.\n",
        encoding="utf-8",
    )
    (tmp_path / "plain.txt").write_text(
        "\ufeffExosomes From Adipose MSCs\r\n\r\nExosomes are small vesicles.\r\n\r\n"
        "Key Findings\r\n\r\nTreated mice healed faster.\r\n\r\n"
        "Source: Ng K, Lo T. Exosomes heal wounds: a randomized phase II trial. "
        "Stem Cell Res Ther. 2022;13:5. doi: 10.1186/s13287-022-00005-5. PMID: 11111111.\r\n",
        encoding="utf-8",
    )
    docs = {d.id: d for d in load_corpus(tmp_path).documents}
    md = docs["heart-failure-notes"]
    assert md.title == "Umbilical Cord MSCs in Heart Failure"
    assert md.text == (
        "# Umbilical Cord MSCs in Heart Failure\n\nA short summary of an early trial.\n\n"
        "## Findings\n\nEjection fraction improved.\n"
    )
    assert md.authors == () and md.year is None
    txt = docs["ng-2022"]  # id from the first author and year of the reference
    assert txt.title == "Exosomes From Adipose MSCs"
    assert txt.text == (
        "# Exosomes From Adipose MSCs\n\nExosomes are small vesicles.\n\n"
        "## Key Findings\n\nTreated mice healed faster.\n\n## Reference\n\n"
        "Source: Ng K, Lo T. Exosomes heal wounds: a randomized phase II trial. "
        "Stem Cell Res Ther. 2022;13:5. doi: 10.1186/s13287-022-00005-5. PMID: 11111111.\n"
    )
    assert (txt.authors, txt.year, txt.journal, txt.pmid) == (
        ("Ng K", "Lo T"),
        2022,
        "Stem Cell Res Ther",
        "11111111",
    )
    assert txt.url == "https://doi.org/10.1186/s13287-022-00005-5"


def test_imported_articles_with_the_same_author_year_both_load(tmp_path: Path) -> None:
    shutil.copy(CORPUS / "li-2025.md", tmp_path)
    (tmp_path / "other-li.txt").write_text(
        "Exosomes for Wounds\n\nExosomes sped up healing in mice.\n\n"
        "Source: Li J, Wang X. Exosomes heal wounds. Stem Cell Res Ther. 2025;16:1. "
        "doi: 10.1186/s13287-025-00001-1.\n",
        encoding="utf-8",
    )
    loaded = load_corpus(tmp_path)
    assert loaded.problems == []
    assert [(d.id, d.title) for d in loaded.documents] == [
        ("li-2025", load_corpus(CORPUS).documents[2].title),
        ("li-2025b", "Exosomes for Wounds"),
    ]
    # The same article (same DOI) imported again is a duplicate, not a new document.
    shutil.copy(SEED_PAGE, tmp_path)
    loaded = load_corpus(tmp_path)
    assert sorted(d.id for d in loaded.documents) == [
        "el-assaad-2024",
        "han-2025",
        "li-2025",
        "li-2025b",
        "regmi-2022",
        "zhang-2023",
    ]
    assert loaded.problems == [
        LoadProblem("seed_page.txt", "duplicate id 'li-2025' (already used by li-2025.md)")
    ]


# -- bad files ---------------------------------------------------------------------------------

BAD_FILES: dict[str, tuple[bytes, str]] = {
    "empty.md": (b"", "empty file"),
    "blank.txt": (b"  \n\n\t\n", "empty file"),
    "latin1.txt": (b"Caf\xe9 au lait.\n\nMore text.\n", "not valid UTF-8 (byte 0xe9 at offset 3)"),
    "image.html": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file (contains NUL bytes)"),
    "zz-dup.md": (  # sorts after zhang-2023.md: the first file keeps the id
        b"---\nid: zhang-2023\ntitle: Copy\n---\n\nSome other text.\n",
        "duplicate id 'zhang-2023' (already used by zhang-2023.md)",
    ),
    "yaml.md": (b"---\ntitle: [unclosed\n---\n\nBody text.\n", "front matter does not parse"),
    "unclosed.md": (b"---\ntitle: x\n\nBody text.\n", "no closing '---' line"),
    "year.md": (b"---\nyear: soon\n---\n\nBody text.\n", "front matter field 'year'"),
    "notes.docx": (b"PK\x03\x04 word", "unsupported file type '.docx'"),
    "headings.md": (b"# Only a Title\n\n## And a Heading\n", "no text besides the title"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_skipped_with_one_problem(tmp_path: Path, name: str) -> None:
    shutil.copy(CORPUS / "zhang-2023.md", tmp_path / "zhang-2023.md")
    (tmp_path / "han.md").write_bytes((CORPUS / "han-2025.md").read_bytes())
    content, reason = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    loaded = load_corpus(tmp_path)
    assert [d.id for d in loaded.documents] == ["han-2025", "zhang-2023"]
    assert len(loaded.problems) == 1
    (problem,) = loaded.problems
    assert problem.path == name
    assert reason in problem.reason
    assert str(problem).startswith(f"{name}: skipped: ")


def test_all_bad_files_together_and_ignored_files(tmp_path: Path) -> None:
    shutil.copy(CORPUS / "zhang-2023.md", tmp_path / "zhang-2023.md")
    for name, (content, _) in BAD_FILES.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "README").write_text("not a document")
    (tmp_path / ".hidden.md").write_text("# Hidden\n\nNot loaded.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.txt").write_text("Nested Title\n\nNested text.\n")
    loaded = load_corpus(tmp_path)
    assert sorted(d.id for d in loaded.documents) == ["nested", "zhang-2023"]
    assert sorted(p.path for p in loaded.problems) == sorted(BAD_FILES)


def test_missing_corpus_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "nope")


def test_content_hash_covers_what_is_stored(curated: dict[str, Document]) -> None:
    from dataclasses import replace

    doc = curated["han-2025"]
    assert replace(doc).content_hash == doc.content_hash
    for change in ({"text": doc.text + "x"}, {"doi": "10.1/other"}, {"reference": "Other"}):
        assert replace(doc, **change).content_hash != doc.content_hash  # type: ignore[arg-type]


def test_page_spans_of_a_paged_document() -> None:
    """Pages start at 0, 10 and 25 of a 40-character text; a passage knows its pages."""
    doc = Document(id="p", title="P", text="x" * 40, pages=(0, 10, 25))
    span = doc.page_span(2, 8)
    assert span is not None and (span.first, span.last, span.label) == (1, 1, "p. 1")
    span = doc.page_span(8, 12)
    assert span is not None and (span.first, span.last, span.label) == (1, 2, "pp. 1-2")
    span = doc.page_span(10, 25)  # ends right before page 3 starts
    assert span is not None and (span.first, span.last) == (2, 2)
    span = doc.page_span(30, 40)
    assert span is not None and (span.first, span.last) == (3, 3)
    assert [doc.page_range(n) for n in (0, 1, 2, 3, 4)] == [None, (0, 10), (10, 25), (25, 40), None]


def test_documents_without_pages_have_none_and_keep_their_hash() -> None:
    doc = Document(id="p", title="P", text="Some text.")
    assert doc.page_span(0, 5) is None and doc.page_range(1) is None
    paged = Document(id="p", title="P", text="Some text.", pages=(0,))
    assert paged.content_hash != doc.content_hash  # the pages are part of what is indexed
    # Without pages the hash is what it was before pages existed: no rebuild on upgrade.
    fields = ("p", "P", (), None, None, None, None, None, None, None, None, None, "")
    meta = "\x1f".join(str(v) for v in fields)
    assert doc.content_hash == hashlib.sha256(f"{meta}\x1eSome text.".encode()).hexdigest()


@pytest.mark.parametrize(
    ("authors", "year", "expected"),
    [
        (("Zhang W", "Li X", "Wu Y"), 2023, "Zhang et al. 2023"),
        (("El Assaad N", "Bou Atme N"), 2024, "El Assaad and Bou Atme 2024"),
        (("Smith, Jane A.",), None, "Smith"),
        (("MSC Study Group",), 2020, "MSC Study Group 2020"),
        ((), 2021, "Knee Cartilage 2021"),
    ],
)
def test_short_label_names_the_study_as_a_reader_would(
    authors: tuple[str, ...], year: int | None, expected: str
) -> None:
    doc = Document(id="knee", title="Knee Cartilage", text="", authors=authors, year=year)
    assert doc.short_label == expected
