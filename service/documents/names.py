"""Author names as the front matter writes them -> family and given parts.

``Zhang W`` and ``Liu DD`` (PubMed's family name and initials), ``Zhang, W.``, ``Jane A. Smith``
and ``Maria de la Cruz`` become family and given parts (initials with periods: ``D. D.``);
family names of several words (``El Assaad N``, ``Bou Atme N``) stay whole; group authors
(``... Study Group``, ``... Consortium``) are kept as one literal name. Used by the citation
export (:mod:`service.citation_export`) and by :attr:`Document.short_label`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PersonName:
    """One author: family and given parts, or one ``literal`` name for a group."""

    family: str = ""
    given: str = ""
    suffix: str = ""
    literal: str = ""


_INITIALS = re.compile(r"^(?:[A-Z]\.?(?:-(?=[A-Z]))?){1,3}$")  # W, DD, J-H, W., J.A.
_SUFFIXES = {"jr", "sr", "ii", "iii", "iv", "2nd", "3rd"}
_PARTICLES = {"van", "von", "de", "der", "den", "da", "di", "la", "le", "du", "dos", "del",
              "des", "ter", "ten", "y", "bin", "ibn"}  # fmt: skip
_GROUP = re.compile(
    r"\b(?:group|consortium|collaborat\w*|committee|society|association|investigators|"
    r"network|council|organi[sz]ation|institute|team|task force|working party)\b",
    re.IGNORECASE,
)


def _dotted(initials: str) -> str:
    """``DD`` -> ``D. D.``, ``J-H`` -> ``J.-H.``."""
    parts = [p for p in initials.replace(".", "").split("-") if p]
    return "-".join(" ".join(f"{c}." for c in part) for part in parts)


def _given(words: Iterable[str]) -> str:
    """Given names as written, with a period after a bare initial (``Jane A`` -> ``Jane A.``)."""
    return " ".join(f"{w}." if len(w) == 1 and w.isupper() else w for w in words)


def split_name(name: str) -> PersonName | None:
    """One author string from the front matter as family and given parts (None when empty)."""
    name = " ".join(name.split()).strip(" ,;")
    if not name:
        return None
    if _GROUP.search(name):
        return PersonName(literal=name)
    if "," in name:  # "Zhang, W." or "Smith, Jane A., Jr."
        family, *rest = (part.strip() for part in name.split(","))
        suffix = ""
        if len(rest) > 1 and rest[-1].rstrip(".").lower() in _SUFFIXES:
            suffix = rest.pop()
        given = " ".join(rest)
        if _INITIALS.match(given.replace(" ", "")):
            given = _dotted(given.replace(" ", ""))
        return PersonName(family=family, given=_given(given.split()), suffix=suffix)
    words = name.split(" ")
    suffix = ""
    if len(words) > 2 and words[-1].rstrip(".").lower() in _SUFFIXES:
        suffix = words.pop()
    if len(words) == 1:
        return PersonName(family=words[0], suffix=suffix)
    if _INITIALS.match(words[-1]):  # PubMed: family name(s), then initials
        return PersonName(family=" ".join(words[:-1]), given=_dotted(words[-1]), suffix=suffix)
    start = len(words) - 1  # natural order: the last word and the particles before it
    while start > 1 and words[start - 1] in _PARTICLES:
        start -= 1
    return PersonName(family=" ".join(words[start:]), given=_given(words[:start]), suffix=suffix)
