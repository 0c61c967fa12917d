"""Word-level text handling shared by BM25 and the abstention check: tokenising and stemming."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

# A small English stop list: function words only, so that content words (including short
# medical ones such as "age", "pain", "dose") always count.
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "tell",
        "please",
        "know",
        "much",
        "many",
        "really",
        "get",
        "got",
        "also",
        "like",
    ]
)
# Letters and digits of any script ("tgf-β1" keeps its β), joined by hyphens or apostrophes.
_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover - PyStemmer is a dependency; stay usable without it
        return None


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return text.lower().replace("’", "'").replace("–", "-").replace("—", " ")


def words(text: str) -> list[str]:
    """Lower-cased words, hyphenated compounds also split into their parts."""
    out: list[str] = []
    for token in _WORD.findall(_fold(text)):
        token = re.sub(r"'s$", "", token).strip("'")
        if "-" in token:
            out.extend(p for p in token.split("-") if p)
            out.append(token.replace("-", ""))
        else:
            out.append(token)
    return out


def tokenize(text: str) -> list[str]:
    """Stemmed content words: what BM25 indexes and matches."""
    tokens = [w for w in words(text) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]
    stemmer = _stemmer()
    if stemmer is not None:
        return list(stemmer.stemWords(tokens))
    return tokens
