"""Citation export: the five corpus articles against hand-checked files in all three formats,
names, keys, LaTeX encoding, preprints and documents with missing fields; every output read
back by an independent reader (bibtexparser, rispy, citeproc-py)."""

from __future__ import annotations

import json
import warnings
from typing import Any

import bibtexparser
import pytest
import rispy
from bibtexparser.middlewares import LatexDecodingMiddleware, SeparateCoAuthors, SplitNameParts
from citeproc import Citation, CitationItem, CitationStylesBibliography, CitationStylesStyle
from citeproc import formatter as citeproc_formatter
from citeproc.source.json import CiteProcJSON
from conftest import CORPUS, FIXTURES
from pylatexenc.latex2text import LatexNodes2Text

from service.citation_export import (
    FORMATS,
    PersonName,
    citation_records,
    export,
    split_name,
    to_bibtex,
    to_csl_json,
    to_ris,
)
from service.documents import Document, load_corpus

EXPECTED = FIXTURES / "citations"
ARTICLES = ["el-assaad-2024", "han-2025", "li-2025", "regmi-2022", "zhang-2023"]
EXTENSIONS = {"bibtex": "bib", "ris": "ris", "csl-json": "json"}


@pytest.fixture(scope="module")
def corpus() -> dict[str, Document]:
    loaded = load_corpus(CORPUS)
    assert loaded.problems == []
    return {d.id: d for d in loaded.documents}


def parse_bibtex(text: str, *, decode: bool = True) -> Any:
    """bibtexparser's reading of ``text``: authors split into name parts and, with ``decode``,
    every value LaTeX-decoded (the middleware skips name lists, so they are decoded here)."""
    stack: list[Any] = [SeparateCoAuthors(), SplitNameParts()]
    library = bibtexparser.parse_string(
        text, append_middleware=[*stack, LatexDecodingMiddleware()] if decode else stack
    )
    assert library.failed_blocks == []
    if decode:
        latex = LatexNodes2Text()
        for entry in library.entries:
            for name in entry.fields_dict["author"].value if "author" in entry else []:
                for part in ("first", "von", "last", "jr"):
                    setattr(name, part, [latex.latex_to_text(p) for p in getattr(name, part)])
    return library


def render_csl(text: str) -> list[str]:
    """A bibliography from CSL-JSON ``text`` with citeproc-py and its bundled Harvard style.
    Warnings are errors: citeproc-py warns about variables CSL does not define."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source = CiteProcJSON(json.loads(text))
        style = CitationStylesStyle("harvard-cite-them-right", validate=True)
        bibliography = CitationStylesBibliography(style, source, citeproc_formatter.plain)
        for item in json.loads(text):
            bibliography.register(Citation([CitationItem(item["id"])]))
        return [str(entry) for entry in bibliography.bibliography()]


# -- the five articles, against files written by hand from their front matter ------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("doc_id", ARTICLES)
def test_corpus_article_matches_hand_checked_file(
    corpus: dict[str, Document], doc_id: str, fmt: str
) -> None:
    expected = (EXPECTED / f"{doc_id}.{EXTENSIONS[fmt]}").read_text(encoding="utf-8")
    got = export([corpus[doc_id]], fmt)  # type: ignore[arg-type]
    if fmt == "csl-json":
        assert json.loads(got) == json.loads(expected)
        assert "\\u" not in got  # UTF-8 as it is (Alzheimer’s), not \u2019 escapes
    else:
        assert got == expected


def test_one_file_for_several_is_the_entries_in_order(corpus: dict[str, Document]) -> None:
    order = ["zhang-2023", "li-2025", "el-assaad-2024"]
    docs = [corpus[i] for i in order]
    ris = "\n".join((EXPECTED / f"{i}.ris").read_text(encoding="utf-8") for i in order)
    assert to_ris(docs) == ris
    csl = [json.loads((EXPECTED / f"{i}.json").read_text(encoding="utf-8"))[0] for i in order]
    assert json.loads(to_csl_json(docs)) == csl
    bib = to_bibtex(docs)
    assert [e.key for e in parse_bibtex(bib).entries] == [
        "zhang2023mesenchymal",
        "li2025clinical",
        "elassaad2024antiaging",
    ]
    assert bib.count("\n\n@article{") == 2  # one blank line between entries


def test_bibtex_reads_back(corpus: dict[str, Document]) -> None:
    docs = [corpus[i] for i in ARTICLES]
    entries = parse_bibtex(to_bibtex(docs)).entries
    assert len(entries) == 5
    for doc, entry in zip(docs, entries, strict=True):
        fields = {f.key: f.value for f in entry.fields}
        assert entry.entry_type == "article"
        # Decoding gives back the article's title, less the case-protecting braces.
        assert fields["title"] == doc.source_title
        assert [" ".join(n.last) for n in fields["author"]] == [
            a.rsplit(" ", 1)[0] for a in doc.authors
        ]
        assert fields["doi"] == doc.doi
        assert fields["year"] == str(doc.year)
        assert fields.get("pmid") == doc.pmid
    regmi = {f.key: f.value for f in entries[3].fields}
    assert [n.first for n in regmi["author"]][:2] == [["S."], ["D.", "D."]]


def test_ris_reads_back(corpus: dict[str, Document]) -> None:
    docs = [corpus[i] for i in ARTICLES]
    entries = rispy.loads(to_ris(docs))
    assert len(entries) == 5
    for doc, entry in zip(docs, entries, strict=True):
        assert entry["type_of_reference"] == "JOUR"
        assert entry["title"] == doc.source_title
        assert entry["secondary_title"] == doc.journal
        assert [a.split(",")[0] for a in entry["authors"]] == [
            a.rsplit(" ", 1)[0] for a in doc.authors
        ]
        assert entry["doi"] == doc.doi
        assert entry.get("accession_number") == doc.pmid


def test_csl_json_renders_as_a_bibliography(corpus: dict[str, Document]) -> None:
    rendered = render_csl(to_csl_json([corpus[i] for i in ARTICLES]))
    assert len(rendered) == 5
    el_assaad = next(r for r in rendered if r.startswith("El Assaad, N."))
    assert "(2024) “Anti-aging based on stem cell therapy: A scoping review”" in el_assaad
    assert "World J Exp Med, 14(3), p. 97233" in el_assaad
    assert "https://doi.org/10.5493/wjem.v14.i3.97233" in el_assaad
    assert (
        "Regmi, S. et al. (2022) “Mesenchymal stromal cells for the treatment of Alzheimer’s "
        "disease: Strategies and limitations”, Front Mol Neurosci, 15, p. 1011225. Available at: "
        "https://doi.org/10.3389/fnmol.2022.1011225." in rendered
    )


# -- a document with nothing but a title ---------------------------------------------------------

BARE = Document(id="notes", title="Notes on MSC dosing", text="Some notes.")


def test_missing_fields_still_give_valid_files() -> None:
    assert to_bibtex([BARE]) == "@misc{anonnotes,\n  title = {Notes on {MSC} dosing},\n}\n"
    assert [e.key for e in parse_bibtex(to_bibtex([BARE])).entries] == ["anonnotes"]
    assert to_ris([BARE]) == "TY  - GEN\nTI  - Notes on MSC dosing\nER  - \n"
    assert rispy.loads(to_ris([BARE])) == [
        {"type_of_reference": "GEN", "title": "Notes on MSC dosing"}
    ]
    csl = to_csl_json([BARE])
    assert json.loads(csl) == [
        {"id": "anonnotes", "type": "document", "title": "Notes on MSC dosing"}
    ]
    assert render_csl(csl) == ["“Notes on MSC dosing” (no date) “Notes on MSC dosing”."]


def test_year_without_authors_or_journal() -> None:
    doc = Document(id="disc", title="Spinal Discs", text="x", year=2023, doi="10.1000/disc.2")
    assert to_bibtex([doc]) == (
        "@misc{anon2023spinal,\n"
        "  title = {Spinal {Discs}},\n"
        "  year  = {2023},\n"
        "  doi   = {10.1000/disc.2},\n"
        "}\n"
    )
    assert (
        to_ris([doc]) == "TY  - GEN\nTI  - Spinal Discs\nPY  - 2023\nDO  - 10.1000/disc.2\nER  - \n"
    )
    render_csl(to_csl_json([doc]))


# -- encoding ------------------------------------------------------------------------------------

ODD = Document(
    id="odd",
    title="Summary title, not exported",
    source_title=(
        "Umbilical cord MSC–derived vesicles lower TGF-β1: "
        "5 × 10⁶ cells in Müller’s 50% & x_2 model"
    ),
    text="x",
    authors=("Müller J-P", "Ørsted H", "Çelik A"),
    year=2021,
    journal="Stem Cell Res Ther",
    doi="10.1186/s13287-021-0000-x",
    reference=(
        "Müller J-P, Ørsted H, Çelik A. Umbilical cord ... model. Stem Cell Res Ther. "
        "2021 Mar;12(1):45-52. doi: 10.1186/s13287-021-0000-x."
    ),
)


def test_non_ascii_is_latex_in_bibtex_and_utf8_elsewhere() -> None:
    bib = to_bibtex([ODD])
    assert bib == (
        "@article{muller2021umbilical,\n"
        '  author  = {M{\\"u}ller, J.-P. and {\\O}rsted, H. and {\\c{C}}elik, A.},\n'
        "  title   = {Umbilical cord {MSC{\\textendash}derived} vesicles lower"
        " {TGF-{\\ensuremath{\\beta}}1}: 5 {\\texttimes} 10{\\ensuremath{^6}} cells in"
        ' {M{\\"u}ller{\\textquoteright}s} 50{\\%} {\\&} x{\\_}2 model},\n'
        "  journal = {Stem Cell Res Ther},\n"
        "  year    = {2021},\n"
        "  volume  = {12},\n"
        "  number  = {1},\n"
        "  pages   = {45--52},\n"
        "  doi     = {10.1186/s13287-021-0000-x},\n"
        "}\n"
    )
    assert bib.isascii()
    fields = {f.key: f.value for f in parse_bibtex(bib).entries[0].fields}
    # Decodes back to the same characters (pylatexenc's decoder leaves math as written: ^6).
    assert fields["title"] == str(ODD.source_title).replace("⁶", "^6")
    assert [" ".join(n.last) for n in fields["author"]] == ["Müller", "Ørsted", "Çelik"]

    ris = to_ris([ODD])
    assert "TI  - " + str(ODD.source_title) + "\n" in ris
    assert "AU  - Müller, J.-P.\nAU  - Ørsted, H.\nAU  - Çelik, A.\n" in ris
    assert "SP  - 45\nEP  - 52\n" in ris
    item = json.loads(to_csl_json([ODD]))[0]
    assert item["title"] == ODD.source_title and item["page"] == "45-52"
    assert "–" in to_csl_json([ODD])  # kept as the character, not \u2013


def test_doi_and_url_are_not_latex_encoded() -> None:
    sici = "10.1002/(SICI)1097-4636(199704)35:1<1::AID-JBM1>3.0.CO;2-#"
    doc = Document(id="u", title="T", text="x", doi=sici, url="https://a.org/p?q=1&r=_2#s")
    # Read as written: a URL is not LaTeX (no decoding of "&" or "#").
    fields = {
        f.key: f.value for f in parse_bibtex(to_bibtex([doc]), decode=False).entries[0].fields
    }
    assert fields["doi"] == sici
    assert fields["url"] == "https://a.org/p?q=1&r=_2#s"
    odd = Document(id="v", title="T", text="x", doi="10.1/a{b}", url="https://a.org/\\x")
    assert "doi   = {10.1/a%7Bb%7D}" in to_bibtex([odd])  # braces would end the value
    assert "url   = {https://a.org/%5Cx}" in to_bibtex([odd])


# -- names and keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("Zhang W", PersonName("Zhang", "W.")),
        ("Liu DD", PersonName("Liu", "D. D.")),
        ("Thakor AS", PersonName("Thakor", "A. S.")),
        ("El Assaad N", PersonName("El Assaad", "N.")),
        ("El-Assaad N", PersonName("El-Assaad", "N.")),
        ("Abou Zeid S", PersonName("Abou Zeid", "S.")),
        ("Kim J-H", PersonName("Kim", "J.-H.")),
        ("Smith JA Jr", PersonName("Smith", "J. A.", "Jr")),
        ("Zhang, W.", PersonName("Zhang", "W.")),
        ("Zhang, W", PersonName("Zhang", "W.")),
        ("Smith, Jane A., Jr.", PersonName("Smith", "Jane A.", "Jr.")),
        ("Jane A. Smith", PersonName("Smith", "Jane A.")),
        ("Wei Zhang", PersonName("Zhang", "Wei")),
        ("Maria de la Cruz", PersonName("de la Cruz", "Maria")),
        ("Li", PersonName("Li")),
        ("  Zhang   W ", PersonName("Zhang", "W.")),
        ("MSC Trial Investigators", PersonName(literal="MSC Trial Investigators")),
        ("WHO Study Group", PersonName(literal="WHO Study Group")),
    ],
)
def test_split_name(name: str, parts: PersonName) -> None:
    assert split_name(name) == parts


def test_empty_names_are_dropped() -> None:
    assert split_name(" , ") is None
    doc = Document(id="d", title="T", text="x", authors=("", "Ames K"))
    assert to_ris([doc]).count("AU  - ") == 1


def test_name_forms_in_each_format() -> None:
    doc = Document(
        id="n",
        title="T",
        text="x",
        authors=(
            "El Assaad N",
            "Maria de la Cruz",
            "Smith JA Jr",
            "Li",
            "WHO Study Group and Friends",
        ),
    )
    bib = to_bibtex([doc])
    assert (
        "author = {El Assaad, N. and de la Cruz, Maria and Smith, Jr, J. A. and Li"
        " and {WHO Study Group and Friends}}" in bib
    )
    names = parse_bibtex(bib).entries[0].fields_dict["author"].value
    assert [(n.first, n.von, n.last, n.jr) for n in names[:4]] == [
        (["N."], [], ["El", "Assaad"], []),
        (["Maria"], ["de", "la"], ["Cruz"], []),
        (["J.", "A."], [], ["Smith"], ["Jr"]),
        ([], [], ["Li"], []),
    ]
    assert len(names) == 5  # the group's "and" is inside braces: one name
    assert rispy.loads(to_ris([doc]))[0]["authors"] == [
        "El Assaad, N.",
        "de la Cruz, Maria",
        "Smith, J. A., Jr",
        "Li",
        "WHO Study Group and Friends",
    ]
    assert json.loads(to_csl_json([doc]))[0]["author"] == [
        {"family": "El Assaad", "given": "N."},
        {"family": "de la Cruz", "given": "Maria"},
        {"family": "Smith", "given": "J. A.", "suffix": "Jr"},
        {"family": "Li"},
        {"literal": "WHO Study Group and Friends"},
    ]


def test_keys_are_ascii_and_unique_within_one_file() -> None:
    a = Document(id="a", title="The Ørsted effect", text="x", authors=("Ørsted H",), year=2020)
    b = Document(id="b", title="Ørsted effect again", text="x", authors=("Ørsted K",), year=2020)
    c = Document(id="c", title="A study", text="x", authors=("Çelik A",))
    assert [r.key for r in citation_records([a, b, a, c])] == [
        "orsted2020orsted",
        "orsted2020orstedb",
        "orsted2020orstedc",
        "celikstudy",
    ]
    assert [r.key for r in citation_records([b])] == ["orsted2020orsted"]


# -- entry types ---------------------------------------------------------------------------------


def test_a_preprint_is_misc_unpb_and_article() -> None:
    doc = Document(
        id="p",
        title="Exosomes in aging mice",
        text="x",
        authors=("Ames K",),
        year=2024,
        journal="bioRxiv",
        doi="10.1101/2024.01.02.573123",
        study_type="preprint",
    )
    bib = to_bibtex([doc])
    assert bib.startswith("@misc{ames2024exosomes,\n")
    fields = {f.key: f.value for f in parse_bibtex(bib).entries[0].fields}
    assert fields["howpublished"] == "bioRxiv" and fields["note"] == "Preprint"
    assert "journal" not in fields
    ris = rispy.loads(to_ris([doc]))[0]
    assert ris["type_of_reference"] == "UNPB" and ris["publisher"] == "bioRxiv"
    item = json.loads(to_csl_json([doc]))[0]
    assert item["type"] == "article" and item["publisher"] == "bioRxiv"
    assert "container-title" not in item
    render_csl(to_csl_json([doc]))


@pytest.mark.parametrize(
    ("journal", "doi", "study_type", "server"),
    [
        (None, "10.1101/2023.05.06.539683", None, "bioRxiv"),  # known from the DOI alone
        ("medRxiv", None, None, "medRxiv"),
        (None, "10.21203/rs.3.rs-123456/v1", None, "Research Square"),
        ("Some Server", None, "preprint", "Some Server"),
    ],
)
def test_preprints_are_recognised(
    journal: str | None, doi: str | None, study_type: str | None, server: str
) -> None:
    doc = Document(id="p", title="T", text="x", journal=journal, doi=doi, study_type=study_type)
    record = citation_records([doc])[0]
    assert (record.kind, record.server, record.journal) == ("preprint", server, None)


def test_cold_spring_harbor_journals_are_not_preprints() -> None:
    doc = Document(id="g", title="T", text="x", journal="Genome Res", doi="10.1101/gr.123456.110")
    assert citation_records([doc])[0].kind == "article"


@pytest.mark.parametrize(
    ("reference", "journal", "located"),
    [
        ("A B. Title. J Exp. 2020;11(2):45-52. doi: x", "J Exp", ("11", "2", "45-52")),
        ("A B. Title. J Exp. 2020 Jan-Feb;11:e123.", "J Exp", ("11", None, "e123")),
        ("A B. Title. J Exp. 2020 Oct 6;15.", "J Exp", ("15", None, None)),
        (
            "Ames, K. (2020). Title. J Exp, 12(3), 100–110. https://doi.org/x",
            "J Exp",
            ("12", "3", "100-110"),
        ),
        ("Ames, K. (2020). Title. J Exp, 12, 7.", "J Exp", ("12", None, "7")),
        ("A B. Title. J Exp. Epub ahead of print.", "J Exp", (None, None, None)),
        ("A B. J Exp results. Title. J Exp. 2021;3(1):9.", "J Exp", ("3", "1", "9")),
    ],
)
def test_volume_issue_and_pages_from_the_reference(
    reference: str, journal: str, located: tuple[str | None, ...]
) -> None:
    doc = Document(id="r", title="T", text="x", journal=journal, reference=reference)
    record = citation_records([doc])[0]
    assert (record.volume, record.issue, record.pages) == located


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="bibtex, ris, csl-json"):
        export([BARE], "endnote")  # type: ignore[arg-type]
