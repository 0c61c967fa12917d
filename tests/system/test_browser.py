"""The chat page in a real browser: headless Debian Chromium driven by Playwright.

A module fixture starts the real server (``python -m service serve``) on a free port with the
real bundled model, a temporary copy of the corpus and a fresh index folder. One browser serves
the whole module; a desktop page and a phone page are reused across tests.

Needs ``/usr/bin/chromium`` (``apt-get install chromium chromium-driver``); the module is
skipped without it. ``QA_SCREENSHOTS=1`` also writes ``docs/screenshot-desktop.png`` and
``docs/screenshot-phone.png``.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, running

from service.config import Settings
from service.evaluation.bench.harness import ServerProcess

if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's Chromium at /usr/bin/chromium; enable them with "
        "`apt-get install chromium chromium-driver`",
        allow_module_level=True,
    )
pytest.importorskip(
    "playwright.sync_api", reason="install the test extras: pip install -e '.[test]'"
)

from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    Route,
    ViewportSize,
    expect,
    sync_playwright,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "corpus"
DOCS = ROOT / "docs"
# Building the index with the real model takes 50-90 s on a busy 2-CPU machine.
READY_TIMEOUT_S = float(os.environ.get("QA_BROWSER_READY_TIMEOUT", "180"))
ANSWER_TIMEOUT_MS = 30_000
ON_TOPIC = "What was the reoperation rate after MSC disc injection?"
OFF_TOPIC = "What is the capital of France?"
BACK_PAIN = "Does MSC therapy help with low back pain?"
FOLLOW_UP = "How many patients were in that study?"
# The documents discuss disc injections, but never ibuprofen: the reader declines it.
NOT_STATED = "What is the recommended ibuprofen dose after a disc injection?"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 360, "height": 740}
REPLIES = "#conversation > li.msg-assistant:not(.is-pending)"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, real_settings: Settings, real_engine: object
) -> Iterator[str]:
    """The real server as a subprocess; yields its base URL once /readyz says 200.

    It serves the session's real corpus copy and the index ``real_engine`` already built, so the
    model is the real one and no second index build is needed.
    """
    tmp = tmp_path_factory.mktemp("browser-server")
    env = dict(os.environ)
    env.pop("QA_MODEL", None)  # the real bundled model
    env.update(
        QA_CORPUS_DIR=str(real_settings.corpus_dir),
        QA_INDEX_DIR=str(real_settings.index_dir),
        PYTHONUNBUFFERED="1",
    )
    server = ServerProcess(
        tmp / "server.log", env=env, cwd=ROOT, timeout_s=READY_TIMEOUT_S, poll_s=0.25
    )
    with running(server):
        yield server.url + "/"


@dataclass
class Problems:
    """Script errors and Content-Security-Policy refusals seen by any page."""

    seen: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.seen.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.seen.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )


@pytest.fixture(scope="module")
def problems() -> Problems:
    return Problems()


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    chromium = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


def _open(browser: Browser, server: str, problems: Problems, viewport: ViewportSize) -> Page:
    context: BrowserContext = browser.new_context(viewport=viewport, reduced_motion="reduce")
    page = context.new_page()
    problems.watch(page)
    page.goto(server)
    expect(page.locator("#question")).to_be_visible()
    return page


@pytest.fixture(scope="module")
def desktop(browser: Browser, server: str, problems: Problems) -> Iterator[Page]:
    page = _open(browser, server, problems, DESKTOP)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def phone(browser: Browser, server: str, problems: Problems) -> Iterator[Page]:
    page = _open(browser, server, problems, PHONE)
    yield page
    page.context.close()


def replies(page: Page) -> Locator:
    return page.locator(REPLIES)


def ask(page: Page, question: str) -> Locator:
    """Type a question, press Enter, and return the reply that appears for it."""
    before = replies(page).count()
    box = page.locator("#question")
    box.fill(question)
    box.press("Enter")
    expect(replies(page)).to_have_count(before + 1, timeout=ANSWER_TIMEOUT_MS)
    return replies(page).nth(before)


def back_to_chat(page: Page) -> None:
    page.locator("#nav-chat").click()
    expect(page.locator("#chat-view")).to_be_visible()


def no_horizontal_scroll(page: Page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"page scrolls sideways: scrollWidth {widths[0]} > {widths[1]}"


# ------------------------------------------------------------------------------------- tests


def test_first_load_shows_disclaimer_and_clickable_examples(desktop: Page) -> None:
    disclaimer = desktop.locator("#disclaimer")
    expect(disclaimer).to_be_visible()
    expect(disclaimer).to_contain_text("not medical advice")
    expect(desktop.locator("#conversation")).to_have_attribute("aria-live", "polite")
    examples = desktop.locator("#examples button")
    assert examples.count() >= 5
    expect(examples.first).to_be_visible()

    before = replies(desktop).count()
    examples.filter(has_text="reoperation").click()
    expect(replies(desktop)).to_have_count(before + 1, timeout=ANSWER_TIMEOUT_MS)
    expect(replies(desktop).last.locator(".answer-text .marker").first).to_be_visible()
    expect(desktop.locator("#welcome")).to_be_hidden()
    expect(disclaimer).to_be_in_viewport()


def test_question_gets_a_cited_answer(desktop: Page) -> None:
    reply = ask(desktop, ON_TOPIC)
    expect(reply).not_to_have_class("is-abstained")
    assert reply.locator(".answer-text .marker").count() >= 1
    card = reply.locator(".source-card").first
    expect(card.locator(".card-title")).not_to_be_empty()
    expect(card.locator(".badge")).to_be_visible()
    doi = card.locator("a.ext-link").first
    expect(doi).to_have_attribute("target", "_blank")
    expect(doi).to_have_attribute("rel", "noopener")
    assert (doi.get_attribute("href") or "").startswith("https://")
    assert reply.locator("details.read-more").count() == 1
    assert reply.locator("details.read-more[open]").count() == 0  # collapsed


def test_one_source_card_per_study_with_its_quoted_passages(desktop: Page) -> None:
    """Markers number studies: every sentence quoted from one study carries its marker, and its
    one card lists each quoted passage with the quoted sentences marked."""
    reply = ask(desktop, ON_TOPIC)
    cards = reply.locator(".source-card")
    studies = [cards.nth(i).get_attribute("data-document-id") for i in range(cards.count())]
    assert studies and len(studies) == len(set(studies))
    count = len(studies)
    expect(reply.locator(".answer-label")).to_have_text(
        f"Answer quoted from {count} {'study' if count == 1 else 'studies'}"
    )
    markers = {m.get_attribute("data-marker") for m in reply.locator(".answer-text .marker").all()}
    assert markers == {str(n) for n in range(1, count + 1)}
    passages = cards.first.locator(".card-passage")
    assert passages.count() >= 2, "the reoperation answer quotes two passages of one study"
    for i in range(passages.count()):
        expect(passages.nth(i).locator("summary")).to_contain_text(f"Quoted passage {i + 1}")
        assert passages.nth(i).locator("mark.hl").count() >= 1
    reply.locator(".answer-text .marker").first.click()
    expect(cards.first.locator("details.card-passage[open]")).to_have_count(passages.count())


def test_marker_highlights_its_source_card(desktop: Page) -> None:
    reply = ask(desktop, ON_TOPIC)
    markers = reply.locator(".answer-text .marker")
    for i in range(min(markers.count(), 2)):
        marker = markers.nth(i)
        number = marker.get_attribute("data-marker")
        marker.click()
        active = desktop.locator(".source-card.is-active")
        expect(active).to_have_count(1)
        expect(active).to_have_attribute("data-marker", number or "")
        expect(active).to_be_in_viewport()
        assert reply.locator(".source-card.is-active").count() == 1  # in this answer
        highlight = active.locator("mark.hl").first
        expect(highlight).to_be_visible()
        expect(marker).to_have_class(re.compile(r"\bis-current\b"))


def test_follow_up_is_read_in_context_until_a_new_conversation(
    browser: Browser, server: str, problems: Problems
) -> None:
    page = _open(browser, server, problems, DESKTOP)  # a conversation of its own
    sent: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: sent.append(r.post_data_json) if r.url.endswith("/api/ask") else None,
    )
    try:
        expect(page.locator("#new-conversation")).to_be_hidden()
        first = ask(page, BACK_PAIN)
        expect(first.locator(".follow-up-note")).to_have_count(0)
        expect(page.locator("#new-conversation")).to_be_visible()
        reply = ask(page, FOLLOW_UP)
        expect(reply.locator(".follow-up-note")).to_contain_text("Zhang et al. 2023")
        expect(reply.locator(".answer-text")).to_contain_text("245")
        assert sent[0] == {"question": BACK_PAIN}
        history = sent[1]["history"]
        assert [t["role"] for t in history] == ["user", "assistant"]
        assert history[0]["text"] == BACK_PAIN and history[1]["document_ids"] == ["zhang-2023"]

        page.locator("#new-conversation").click()
        expect(page.locator("#conversation > li")).to_have_count(0)
        expect(page.locator("#welcome")).to_be_visible()
        expect(page.locator("#new-conversation")).to_be_hidden()
        again = ask(page, FOLLOW_UP)
        expect(again.locator(".follow-up-note")).to_have_count(0)
        assert sent[2] == {"question": FOLLOW_UP}  # the old conversation is forgotten
    finally:
        page.context.close()


def test_export_references_downloads_the_answers_studies(desktop: Page) -> None:
    reply = ask(desktop, ON_TOPIC)
    studies = [c.get_attribute("data-document-id") for c in reply.locator(".source-card").all()]
    menu = reply.locator(".export-menu")
    expect(menu.locator("summary")).to_have_text(
        "Export reference" if len(studies) == 1 else f"Export {len(studies)} references"
    )
    menu.locator("summary").click()
    expected = {"bibtex": ("@article{", ".bib"), "ris": ("TY  - JOUR", ".ris")}
    for fmt, (start, suffix) in expected.items():
        with desktop.expect_download() as download_info:
            menu.locator(f'a.export-link[data-format="{fmt}"]').click()
        download = download_info.value
        assert download.suggested_filename == f"references{suffix}"
        text = Path(download.path()).read_text(encoding="utf-8")
        assert text.lstrip().startswith(start), text[:80]
        assert "10.3389/fbioe.2023.1155357" in text  # the back pain meta-analysis's DOI
    with desktop.expect_download() as download_info:
        menu.locator('a.export-link[data-format="csl-json"]').click()
    items = json.loads(Path(download_info.value.path()).read_text(encoding="utf-8"))
    assert len(items) == len(studies)
    assert items[0]["DOI"] == "10.3389/fbioe.2023.1155357"


def test_feedback_rates_an_answer_and_stores_the_comment(
    desktop: Page, real_settings: Settings
) -> None:
    import sqlite3

    reply = ask(desktop, ON_TOPIC)
    box = reply.locator(".feedback")
    expect(box.locator(".feedback-comment-row")).to_be_hidden()
    box.get_by_role("button", name="Not helpful").click()
    expect(box.locator(".feedback-status")).to_have_text("Thanks, your rating was saved.")
    expect(box.get_by_role("button", name="Not helpful")).to_have_attribute("aria-pressed", "true")
    expect(box.get_by_role("button", name="Helpful", exact=True)).to_have_attribute(
        "aria-pressed", "false"
    )
    comment = "The 7% figure is what I needed, but the dose is missing."
    box.locator(".feedback-comment").fill(comment)
    box.get_by_role("button", name="Send comment").click()
    expect(box.locator(".feedback-status")).to_have_text("Thanks, your comment was saved.")
    expect(box.locator(".feedback-comment")).to_be_disabled()

    database = real_settings.index_dir / "feedback.sqlite3"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT rating, question, answer_status, ratings FROM feedback WHERE comment = ?",
            (comment,),
        ).fetchall()
    assert rows == [("down", ON_TOPIC, "answered", 2)]  # the rating, then the comment


def test_unrelated_question_shows_the_abstained_state(desktop: Page) -> None:
    reply = ask(desktop, OFF_TOPIC)
    expect(reply).to_have_class(re.compile(r"\bis-abstained\b"))
    expect(reply).to_contain_text("The documents don't cover this")
    assert reply.locator(".marker").count() == 0
    assert reply.locator(".source-card").count() == 0


def test_unanswered_near_topic_question_shows_not_stated_and_related_reading(
    desktop: Page,
) -> None:
    reply = ask(desktop, NOT_STATED)
    expect(reply).to_have_class(re.compile(r"\bis-not-stated\b"))
    expect(reply).not_to_have_class(re.compile(r"\bis-not-covered\b"))
    expect(reply.locator(".answer-label")).to_have_text("Not stated in the documents")
    expect(reply.locator(".abstain-text")).to_contain_text("do not mention ibuprofen")
    expect(reply.locator(".abstain-text")).to_contain_text("do not answer this question")
    related = reply.locator("section.related-reading")
    expect(related).to_be_visible()
    expect(related.locator(".related-title")).to_have_text("Related reading — not an answer")
    assert 1 <= related.locator("li.passage").count() <= 3
    assert reply.locator(".marker").count() == 0
    assert reply.locator(".source-card").count() == 0
    expect(reply.locator(".answer-disclaimer")).to_contain_text("not medical advice")
    # Related passages open in the document view like any other passage.
    related.locator("li.passage").first.get_by_role("button", name="View in document").click()
    expect(desktop.locator("#doc-panel")).to_be_visible()
    back_to_chat(desktop)


def test_not_covered_and_not_stated_look_different(desktop: Page) -> None:
    off = ask(desktop, OFF_TOPIC)
    near = ask(desktop, NOT_STATED)
    expect(off).to_have_class(re.compile(r"\bis-not-covered\b"))
    off_colour = off.locator(".answer").evaluate("e => getComputedStyle(e).backgroundColor")
    near_colour = near.locator(".answer").evaluate("e => getComputedStyle(e).backgroundColor")
    assert off_colour != near_colour


def test_server_error_is_shown_and_the_page_keeps_working(desktop: Page) -> None:
    held: list[Route] = []
    desktop.route("**/api/ask", lambda route: held.append(route), times=1)
    box = desktop.locator("#question")
    box.fill("Will this one fail?")
    box.press("Enter")
    # While the request is out: a visible loading state and the send button disabled.
    expect(desktop.locator("#conversation > li.is-pending")).to_be_visible()
    expect(desktop.locator("#send")).to_be_disabled()
    for _ in range(100):
        if held:
            break
        desktop.wait_for_timeout(50)
    body = {"error": "internal error", "details": [{"field": None, "message": "simulated fault"}]}
    held[0].fulfill(status=500, content_type="application/json", body=json.dumps(body))
    error = desktop.locator("#conversation > li.is-error").last
    expect(error).to_contain_text("The server had a problem")
    expect(error).to_contain_text("internal error (HTTP 500)")
    expect(error).to_contain_text("simulated fault")
    expect(desktop.locator("#send")).to_be_enabled()
    desktop.unroute("**/api/ask")

    reply = ask(desktop, ON_TOPIC)
    assert reply.locator(".answer-text .marker").count() >= 1

    # "Try again" on the failed message re-asks the same question, now successfully.
    before = replies(desktop).count()
    error.get_by_role("button", name="Try again").click()
    expect(replies(desktop)).to_have_count(before + 1, timeout=ANSWER_TIMEOUT_MS)
    expect(desktop.locator(".msg-user .question-text").last).to_have_text("Will this one fail?")


def test_network_failure_is_shown(desktop: Page) -> None:
    desktop.route("**/api/ask", lambda route: route.abort(), times=1)
    reply = ask(desktop, ON_TOPIC)
    expect(reply).to_have_class(re.compile(r"\bis-error\b"))
    expect(reply).to_contain_text("Could not reach the server")
    desktop.unroute("**/api/ask")
    expect(desktop.locator("#send")).to_be_enabled()


def test_markup_in_a_question_is_shown_as_text(desktop: Page) -> None:
    question = '<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> <b>bold?</b>'
    ask(desktop, question)
    expect(desktop.locator(".msg-user .question-text").last).to_have_text(question)
    assert desktop.locator("#conversation img, #conversation script, #conversation b").count() == 0
    desktop.wait_for_timeout(200)
    assert desktop.evaluate("typeof window.__xss") == "undefined"


def test_question_box_takes_its_limit_from_the_server(desktop: Page, server: str) -> None:
    with urllib.request.urlopen(server + "api/limits", timeout=10) as response:
        limit = json.loads(response.read())["max_question_chars"]
    expect(desktop.locator("#question")).to_have_attribute("maxlength", str(limit))


def test_enter_sends_and_shift_enter_adds_a_line(desktop: Page) -> None:
    box = desktop.locator("#question")
    questions = desktop.locator(".msg-user")
    before = questions.count()
    box.fill("")
    box.focus()
    box.type("What was the reoperation rate")
    box.press("Shift+Enter")
    box.type("after MSC disc injection?")
    expect(box).to_have_value("What was the reoperation rate\nafter MSC disc injection?")
    assert questions.count() == before
    box.press("Enter")
    expect(questions).to_have_count(before + 1)
    expect(box).to_have_value("")
    text = questions.last.locator(".question-text").text_content()
    assert text == "What was the reoperation rate\nafter MSC disc injection?"
    expect(desktop.locator("#send")).to_be_enabled(timeout=ANSWER_TIMEOUT_MS)


def test_documents_view_lists_and_opens_documents(desktop: Page) -> None:
    desktop.locator("#nav-docs").click()
    cards = desktop.locator("#doc-list .doc-card")
    expect(cards).to_have_count(5)
    title = cards.first.locator(".doc-card-title a")
    name = title.text_content() or ""
    title.click()
    expect(desktop.locator("#doc-title")).to_have_text(name)
    assert desktop.locator(".doc-body p").count() > 5
    assert desktop.locator(".doc-body h2").count() >= 2
    expect(desktop.locator("#disclaimer")).to_be_visible()
    back_to_chat(desktop)


def test_view_in_document_highlights_the_cited_passage(desktop: Page) -> None:
    reply = ask(desktop, ON_TOPIC)
    conversation_size = desktop.locator("#conversation > li").count()
    card = reply.locator(".source-card").first
    card.locator(".card-passage summary").first.click()
    quoted = " ".join(t.strip() for t in card.locator("mark.hl").all_text_contents())
    card.get_by_role("button", name="View in document").click()

    expect(desktop.locator("#doc-panel")).to_be_visible()
    marks = desktop.locator(".doc-body mark.hl-quote")
    expect(marks.first).to_be_in_viewport()
    assert " ".join(t.strip() for t in marks.all_text_contents()) == quoted
    assert desktop.locator(".doc-body mark.hl-passage").count() >= 1

    desktop.get_by_role("link", name="Back to the conversation").click()
    expect(desktop.locator("#chat-view")).to_be_visible()
    expect(desktop.locator("#conversation > li")).to_have_count(conversation_size)


def test_pages_of_a_pdf_source_are_shown(browser: Browser, server: str, problems: Problems) -> None:
    """A citation from a PDF (here: the real answer, given pages on its way to the page) shows
    its pages on the card, and the document view marks the page break before the passage."""
    cited: dict[str, Any] = {}
    desktop = _open(browser, server, problems, DESKTOP)  # its own page: no cached documents

    def with_pages(route: Route) -> None:
        body = route.fetch().json()
        citation = body["citations"][0]
        first = citation["passages"][0]
        first["page_start"], first["page_end"] = 2, 3
        cited.update(first, document_id=citation["document_id"])
        route.fulfill(json=body)

    def paged_document(route: Route) -> None:
        body = route.fetch().json()
        start = cited["start"]
        body["pages"] = [
            {"page": 1, "start": 0, "end": start},
            {"page": 2, "start": start, "end": len(body["text"])},
        ]
        route.fulfill(json=body)

    desktop.route("**/api/ask", with_pages, times=1)
    reply = ask(desktop, ON_TOPIC)
    card = reply.locator(".source-card").first
    expect(card.locator(".card-passage .passage-pages").first).to_have_text(", pp. 2-3")
    desktop.route(f"**/api/documents/{cited['document_id']}", paged_document, times=1)
    card.get_by_role("button", name="View in document").click()
    marker = desktop.locator(".doc-body .page-marker")
    expect(marker).to_have_count(1)
    expect(marker).to_have_text(re.compile("page 2", re.I))
    # The marker stands right before the block holding the cited passage.
    following = marker.locator("xpath=following-sibling::*[1]")
    expect(following.locator("mark.hl-passage").first).to_be_visible()
    desktop.context.close()


def test_phone_width_has_no_horizontal_scroll(phone: Page) -> None:
    expect(phone.locator("#disclaimer")).to_be_in_viewport()
    no_horizontal_scroll(phone)
    reply = ask(phone, ON_TOPIC)
    reply.locator(".answer-text .marker").first.click()
    expect(phone.locator(".source-card.is-active")).to_be_in_viewport()
    reply.locator("details.read-more summary").click()
    no_horizontal_scroll(phone)
    expect(phone.locator("#disclaimer")).to_be_in_viewport()

    phone.locator(".source-card.is-active").get_by_role("button", name="View in document").click()
    expect(phone.locator(".doc-body mark.hl-quote").first).to_be_in_viewport()
    no_horizontal_scroll(phone)
    phone.locator("#nav-docs").click()
    expect(phone.locator("#doc-list .doc-card")).to_have_count(5)
    no_horizontal_scroll(phone)
    back_to_chat(phone)


def test_no_script_errors_or_csp_refusals(browser: Browser, server: str) -> None:
    """A walk through every view on a fresh page of its own, watched from the first load, so
    the result does not depend on which other tests ran before."""
    seen = Problems()
    for viewport in (DESKTOP, PHONE):
        page = _open(browser, server, seen, viewport)
        try:
            ask(page, ON_TOPIC).locator(".answer-text .marker").first.click()
            expect(page.locator(".source-card.is-active")).to_have_count(1)
            ask(page, NOT_STATED)
            ask(page, OFF_TOPIC)
            page.locator("#nav-docs").click()
            page.locator("#doc-list .doc-card").first.locator(".doc-card-title a").click()
            expect(page.locator("#doc-panel")).to_be_visible()
        finally:
            page.context.close()
    assert seen.seen == []


def test_no_script_errors_in_the_other_tests(problems: Problems) -> None:
    """What the module's shared pages saw while the tests before this one ran."""
    assert problems.seen == []


@pytest.mark.skipif(os.environ.get("QA_SCREENSHOTS") != "1", reason="set QA_SCREENSHOTS=1")
def test_write_screenshots(browser: Browser, server: str, problems: Problems) -> None:
    DOCS.mkdir(exist_ok=True)
    page = _open(browser, server, problems, DESKTOP)
    ask(page, ON_TOPIC).locator(".answer-text .marker").first.click()
    expect(page.locator(".source-card.is-active")).to_be_in_viewport()
    # Frame the exchange: the question at the top, then the answer and the open source card.
    page.locator(".msg-user").last.evaluate("node => node.scrollIntoView({block: 'start'})")
    page.mouse.move(0, 0)
    page.screenshot(path=str(DOCS / "screenshot-desktop.png"))
    page.context.close()

    # A follow-up read in context and rated, with the export button beside the rating.
    page = _open(browser, server, problems, DESKTOP)
    ask(page, BACK_PAIN)
    reply = ask(page, FOLLOW_UP)
    expect(reply.locator(".follow-up-note")).to_be_visible()
    reply.get_by_role("button", name="Helpful", exact=True).click()
    expect(reply.locator(".feedback-status")).to_have_text("Thanks, your rating was saved.")
    page.locator(".msg-user").last.evaluate("node => node.scrollIntoView({block: 'start'})")
    page.evaluate("window.scrollBy(0, 120)")  # down to the export and rating row
    page.mouse.move(0, 0)
    page.screenshot(path=str(DOCS / "screenshot-follow-up.png"))
    page.context.close()

    page = _open(browser, server, problems, PHONE)
    ask(page, ON_TOPIC)
    page.locator("#question").blur()
    page.screenshot(path=str(DOCS / "screenshot-phone.png"))
    page.context.close()
