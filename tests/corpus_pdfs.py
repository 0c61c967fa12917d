"""PDF versions of the corpus articles, printed by headless Chromium, for the PDF tests.

Each curated Markdown file becomes ``<stem>.pdf`` (its text rendered as a journal page: the
title and authors across the top, the body in one or two columns, a running header and page
numbers) and ``<stem>.yml`` (its front matter, as the metadata file a user would write).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import yaml
from conftest import CHROMIUM, CHROMIUM_ARGS

from service.documents import split_front_matter

_CSS = """
@page { size: A4; margin: 22mm 16mm 20mm 16mm; }
body { font-family: 'DejaVu Serif', 'Liberation Serif', serif; font-size: 10pt; line-height: 1.35; }
h1 { font-size: 17pt; margin: 0 0 6pt; }
.authors { font-size: 10.5pt; margin: 0 0 14pt; }
h2 { font-size: 12pt; font-weight: bold; margin: 10pt 0 4pt; break-after: avoid; }
h3 { font-size: 10.5pt; font-weight: bold; margin: 8pt 0 3pt; break-after: avoid; }
p { margin: 0 0 6pt; text-align: justify; hyphens: auto; }
.body.two { column-count: 2; column-gap: 9mm; }
"""


def markdown_html(title: str, authors: list[str], body: str, columns: int) -> str:
    """A small Markdown subset (headings, paragraphs) as a printable HTML page."""
    parts = []
    for block in re.split(r"\n\s*\n", body.strip()):
        text = " ".join(block.split())
        heading = re.match(r"^(#{1,6})\s+(.*)$", text)
        if heading:
            if len(heading.group(1)) == 1:
                continue  # the title, set above the columns
            level = min(len(heading.group(1)), 3)
            parts.append(f"<h{level}>{html.escape(heading.group(2))}</h{level}>")
        else:
            parts.append(f"<p>{html.escape(text)}</p>")
    names = html.escape(", ".join(authors))
    layout = "two" if columns == 2 else "one"
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><style>{_CSS}</style>"
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='authors'>{names}</p><div class='body {layout}'>{''.join(parts)}</div>"
        "</body></html>"
    )


def print_corpus(corpus: Path, out: Path, columns: int) -> list[Path]:
    """Print every curated article of ``corpus`` into ``out``; returns the PDFs written."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        for source in sorted(corpus.glob("*.md")):
            meta, body = split_front_matter(source.read_text(encoding="utf-8"))
            assert meta is not None, f"{source} has no front matter"
            title = str(meta["title"])
            page.set_content(markdown_html(title, list(meta.get("authors") or []), body, columns))
            header = (
                "<div style='font-size:7pt; width:100%; padding:0 16mm; color:#555'>"
                f"{html.escape(str(meta.get('journal') or 'MSC evidence'))} · "
                f"{meta.get('year') or ''}</div>"
            )
            footer = (
                "<div style='font-size:8pt; width:100%; text-align:center'>"
                "<span class='pageNumber'></span></div>"
            )
            target = out / f"{source.stem}.pdf"
            page.pdf(
                path=str(target),
                format="A4",
                display_header_footer=True,
                header_template=header,
                footer_template=footer,
                margin={"top": "22mm", "bottom": "20mm", "left": "16mm", "right": "16mm"},
            )
            (out / f"{source.stem}.yml").write_text(
                yaml.safe_dump(meta, allow_unicode=True, sort_keys=False), encoding="utf-8"
            )
            written.append(target)
        browser.close()
    return written
