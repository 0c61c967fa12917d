"""Documents -> sentence-aware, heading-aware :class:`Chunk` records.

Chunks never cut a sentence and never cross a section heading (a section that is too long is
split between sentences). Each chunk keeps character offsets into its document's text, its
section heading and its sentences, so a passage and the sentences quoted from it can be
highlighted in the document.

Size: all-MiniLM-L6-v2 truncates at 256 word pieces and was trained on pairs of at most 128, so
long passages dilute the one sentence a question is about. Chunks are packed up to
``chunk_max_tokens`` word pieces *including* the "title. section." context prefix, with one
sentence of overlap so a fact split across a boundary is still found whole. The default (160)
was chosen by measuring retrieval on the evaluation set; see the README, "Chunking".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from service.documents import Document

TokenCounter = Callable[[str], int]

# Abbreviations after which a full stop does not end a sentence.
_ABBREVIATIONS = {
    "al", "e.g", "i.e", "etc", "vs", "fig", "figs", "dr", "mr", "mrs", "ms", "prof", "approx",
    "ca", "no", "vol", "ref", "refs", "st", "jr", "sr", "inc", "ltd", "co", "cf", "resp", "dept",
}  # fmt: skip
# A sentence ends after . ! or ? plus any closing quotes or brackets (kept in the sentence).
_BOUNDARY = re.compile(r"(?<=[.!?])([\"”’)\]]*)\s+(?=[\"“‘(\[]?[A-Z0-9])")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Span:
    """Character range ``[start, end)`` in a document's text."""

    start: int
    end: int


@dataclass(frozen=True)
class Chunk:
    id: str
    document_id: str
    ordinal: int
    section: str
    text: str
    start: int
    end: int
    sentences: tuple[Span, ...]

    def embedding_text(self, title: str, with_context: bool = True) -> str:
        """What the encoder sees: the passage, prefixed by where it comes from."""
        if not with_context:
            return self.text
        if self.section and self.section != title:
            return f"{title}. {self.section}.\n{self.text}"
        return f"{title}.\n{self.text}"

    def sentence_texts(self, document_text: str) -> list[str]:
        return [document_text[s.start : s.end] for s in self.sentences]

    def to_json(self) -> str:
        record = {
            "id": self.id,
            "document_id": self.document_id,
            "ordinal": self.ordinal,
            "section": self.section,
            "start": self.start,
            "end": self.end,
            "sentences": [[s.start, s.end] for s in self.sentences],
            "text": self.text,
        }
        return json.dumps(record, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Chunk:
        r = json.loads(line)
        return cls(
            id=r["id"],
            document_id=r["document_id"],
            ordinal=int(r["ordinal"]),
            section=r["section"],
            text=r["text"],
            start=int(r["start"]),
            end=int(r["end"]),
            sentences=tuple(Span(int(a), int(b)) for a, b in r["sentences"]),
        )


@dataclass(frozen=True)
class Section:
    heading: str
    paragraphs: tuple[Span, ...]


def split_sentences(text: str, offset: int = 0) -> list[Span]:
    """Sentence spans of one paragraph (offsets shifted by ``offset``).

    A reference ("Source: ...") is one sentence: its full stops separate citation parts.
    """
    if re.match(r"(?:source|reference|citation)s?\s*:", text, re.IGNORECASE):
        stripped = text.rstrip()
        return [Span(offset, offset + len(stripped))] if stripped else []
    spans: list[Span] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        candidate = text[start : match.end(1)].rstrip()
        last_word = re.search(r"(\S+)$", candidate)
        token = last_word.group(1).strip('.!?"“”‘’()[]').lower() if last_word else ""
        # "al.", "Fig.", a single letter, or dotted initials ("U.S.", "e.g.") end no sentence.
        if token in _ABBREVIATIONS or re.fullmatch(r"[a-z]|(?:[a-z]\.)+[a-z]", token):
            continue
        # A lone capital initial ("Zhang W. et al") is not a sentence end either.
        if last_word and re.fullmatch(r"[A-Z]\.", last_word.group(1)):
            continue
        spans.append(Span(offset + start, offset + start + len(candidate)))
        start = match.end()
    tail = text[start:].rstrip()
    if tail:
        spans.append(Span(offset + start, offset + start + len(tail)))
    return [s for s in spans if s.end > s.start]


def sections(document: Document) -> list[Section]:
    """Sections of a document's Markdown text: (heading, paragraph spans)."""
    text = document.text
    headings = [(m.start(), m.end(), m.group(2).strip()) for m in _HEADING.finditer(text)]
    bounds = [*headings, (len(text), len(text), "")]
    result: list[Section] = []
    current_heading = document.title
    position = 0
    for h_start, h_end, heading in bounds:
        body = text[position:h_start]
        paragraphs = []
        for m in re.finditer(r"[^\n](?:.|\n(?!\s*\n))*", body):
            chunk = m.group(0)
            stripped = chunk.strip()
            if stripped:
                lead = len(chunk) - len(chunk.lstrip())
                start = position + m.start() + lead
                paragraphs.append(Span(start, start + len(stripped)))
        if paragraphs:
            result.append(Section(current_heading, tuple(paragraphs)))
        current_heading = heading
        position = h_end
    return result


def approximate_tokens(text: str) -> int:
    """Word-piece estimate when no tokenizer is at hand (about 1.3 pieces per word)."""
    return int(len(re.findall(r"\w+|[^\w\s]", text)) * 1.15) + 1


def _chunk_id(
    document_id: str, section: str, text: str, settings_key: str, occurrence: int = 0
) -> str:
    """Stable id from the chunk's content; ``occurrence`` tells apart repeats of the same text."""
    key = f"{document_id}\x1f{section}\x1f{text}\x1f{settings_key}"
    if occurrence:
        key += f"\x1f{occurrence}"
    digest = hashlib.sha256(key.encode())
    return f"{document_id}:{digest.hexdigest()[:12]}"


def chunk_document(
    document: Document,
    *,
    max_tokens: int = 160,
    overlap_sentences: int = 1,
    count_tokens: TokenCounter = approximate_tokens,
    with_context: bool = True,
) -> list[Chunk]:
    """Pack each section's sentences into chunks of at most ``max_tokens`` word pieces.

    A single sentence longer than the budget becomes a chunk of its own (never cut).
    """
    settings_key = f"{max_tokens}/{overlap_sentences}/{int(with_context)}"
    text = document.text
    chunks: list[Chunk] = []
    seen: dict[tuple[str, str], int] = {}
    for section in sections(document):
        prefix = count_tokens(f"{document.title}. {section.heading}.\n") if with_context else 0
        budget = max(8, max_tokens - prefix)
        sentences = [
            s for p in section.paragraphs for s in split_sentences(text[p.start : p.end], p.start)
        ]
        for group in _pack(sentences, budget, overlap_sentences, text, count_tokens):
            start, end = group[0].start, group[-1].end
            chunk_text = text[start:end]
            # A paragraph repeated within a section must not give two chunks the same id.
            occurrence = seen.get((section.heading, chunk_text), 0)
            seen[(section.heading, chunk_text)] = occurrence + 1
            chunks.append(
                Chunk(
                    id=_chunk_id(
                        document.id, section.heading, chunk_text, settings_key, occurrence
                    ),
                    document_id=document.id,
                    ordinal=len(chunks),
                    section=section.heading,
                    text=chunk_text,
                    start=start,
                    end=end,
                    sentences=tuple(group),
                )
            )
    return chunks


def _pack(
    sentences: list[Span], budget: int, overlap: int, text: str, count: TokenCounter
) -> Iterator[list[Span]]:
    sizes = [count(text[s.start : s.end]) for s in sentences]
    i = 0
    while i < len(sentences):
        group = [i]
        used = sizes[i]
        j = i + 1
        while j < len(sentences) and used + sizes[j] <= budget:
            group.append(j)
            used += sizes[j]
            j += 1
        yield [sentences[k] for k in group]
        if j >= len(sentences):
            break
        # Start the next chunk `overlap` sentences back, but always move forward.
        back = min(overlap, len(group) - 1)
        if back and sum(sizes[j - back : j]) + sizes[j] > budget:
            back = 0
        i = j - back
