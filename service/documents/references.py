"""Citation references ("Source: ...", APA or PubMed style) and the study type."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    text: str
    authors: tuple[str, ...] = ()
    year: int | None = None
    source_title: str | None = None
    journal: str | None = None
    doi: str | None = None
    pmid: str | None = None
    pmcid: str | None = None

    @property
    def url(self) -> str | None:
        return f"https://doi.org/{self.doi}" if self.doi else None


_REFERENCE_PREFIX = re.compile(r"^(?:source|reference|citation)s?\s*:\s*", re.IGNORECASE)
_DOI = re.compile(r"(?:\bdoi:\s*|https?://(?:dx\.)?doi\.org/)(10\.\d{4,9}/\S+)", re.IGNORECASE)
_PMID = re.compile(r"\bPMID:\s*(\d+)")
_PMCID = re.compile(r"\bPMCID:\s*(PMC\d+)")
# APA: "Zhang, W., Wang, D., & Li, J. (2023). Title. Journal, 11, 1155357."
_APA = re.compile(r"^(?P<authors>.+?)\s*\((?P<year>\d{4})[a-z]?\)\.\s*(?P<rest>.+)$")
_APA_AUTHOR = re.compile(r"([^\s,&][^,&]*?),\s*((?:[A-Z][a-z]?\.\s*-?\s*)+)")
# NLM/PubMed: "Li M, Huang H. Title. Journal Abbrev. 2025 Jun 4;10(1):179. doi: ..."
_NLM = re.compile(
    r"^(?P<authors>[^.]+)\.\s+(?P<title>.+?[.?!])\s+(?P<journal>[^.;]+?)\.\s+(?P<year>\d{4})\b"
)


def is_reference(paragraph: str) -> bool:
    return bool(_REFERENCE_PREFIX.match(paragraph))


def parse_reference(paragraph: str) -> Reference:
    """Parse a ``Source:`` line in APA or NLM (PubMed) style; unknown parts stay ``None``."""
    text = _REFERENCE_PREFIX.sub("", paragraph.strip(), count=1).strip()
    doi_match = _DOI.search(text)
    doi = doi_match.group(1).rstrip(".;,)") if doi_match else None
    pmid = m.group(1) if (m := _PMID.search(text)) else None
    pmcid = m.group(1) if (m := _PMCID.search(text)) else None

    authors: tuple[str, ...] = ()
    year: int | None = None
    title: str | None = None
    journal: str | None = None
    if apa := _APA.match(text):
        year = int(apa.group("year"))
        authors = tuple(
            f"{surname.strip()} {initials.replace('.', '').replace(' ', '')}"
            for surname, initials in _APA_AUTHOR.findall(apa.group("authors"))
        )
        parts = re.split(r"(?<=[.?!])\s+", apa.group("rest"), maxsplit=1)
        title = parts[0].rstrip(".")
        if len(parts) > 1:
            journal = re.split(r"[,.]", parts[1], maxsplit=1)[0].strip() or None
    elif nlm := _NLM.match(text):
        year = int(nlm.group("year"))
        authors = tuple(
            a.strip()
            for a in nlm.group("authors").split(",")
            if a.strip() and a.strip().lower() not in ("et al", "et al.")
        )
        title = nlm.group("title").rstrip(".")
        journal = nlm.group("journal").strip()
    else:
        if m := re.search(r"\b(19|20)\d{2}\b", text):
            year = int(m.group(0))
    return Reference(text, authors, year, title, journal, doi, pmid, pmcid)


def infer_study_type(source_title: str | None, text: str) -> str | None:
    """Best guess at the kind of study, from the cited title first and then the text."""
    cited = (source_title or "").lower()
    if "meta-analysis" in cited or "meta analysis" in cited:
        return (
            "systematic review and meta-analysis"
            if "systematic review" in cited
            else "meta-analysis"
        )
    for kind in ("scoping review", "systematic review", "umbrella review"):
        if kind in cited:
            return kind
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        lowered = sentence.lower()
        trial = re.search(
            r"\bphase\s+(i{1,3}v?|[1-4])(?:/(?:i{1,3}|[1-4]))?\b[^.]*\btrial\b", lowered
        )
        if trial:
            phase = trial.group(1).upper()
            randomized = "randomized " if re.search(r"\brandomi[sz]ed\b", lowered) else ""
            preclinical = re.search(r"\b(mouse|mice|rat|animal|preclinical)\b", text.lower())
            suffix = " with preclinical models" if preclinical else ""
            return f"phase {phase} {randomized}trial{suffix}"
    if "review" in cited or re.search(r"\b(this|the) review\b", text.lower()):
        return "narrative review"
    return None
