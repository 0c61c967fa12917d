/* MSC evidence QA: chat page.
 *
 * Plain script, no build step, no dependencies. Every piece of text that comes from the
 * corpus, the server or the user is inserted with textContent / text nodes, never as HTML.
 */
(() => {
  "use strict";

  const EXAMPLES = [
    { topic: "Back pain", question: "Do MSC injections reduce disc-related low back pain?" },
    { topic: "Back pain", question: "What was the reoperation rate after MSC disc injection?" },
    { topic: "Aging", question: "Can mesenchymal stem cells slow aging?" },
    {
      topic: "Pulmonary fibrosis",
      question: "How could MSC-derived extracellular vesicles help pulmonary fibrosis?",
    },
    {
      topic: "Alzheimer's disease",
      question: "Could mesenchymal stem cells help treat Alzheimer's disease?",
    },
    {
      topic: "Regenerative medicine",
      question: "What are MSCs used for in regenerative medicine?",
    },
  ];
  const REQUEST_TIMEOUT_MS = 90000;
  /** The longest question the server accepts: learned from GET /api/limits at start. */
  let maxQuestionChars = null;
  const reduceMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  // ---------------------------------------------------------------- DOM helpers

  /** Create an element. attrs: class, text, on<event> (functions), other attributes. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = String(value);
        else if (key.startsWith("on") && typeof value === "function") {
          node.addEventListener(key.slice(2), value);
        } else if (key.startsWith("on")) {
          throw new Error("event handlers must be functions");
        } else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    appendAll(node, children);
    return node;
  }

  function appendAll(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Only http(s) URLs become links. */
  function safeUrl(value) {
    if (typeof value !== "string") return null;
    try {
      const url = new URL(value);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch {
      return null;
    }
  }

  function externalLink(href, label, className) {
    const url = safeUrl(href);
    if (!url) return null;
    return h(
      "a",
      { class: className || "ext-link", href: url, target: "_blank", rel: "noopener" },
      label,
      h("span", { class: "visually-hidden", text: " (opens in a new tab)" }),
    );
  }

  function capitalise(text) {
    return text ? text.charAt(0).toUpperCase() + text.slice(1) : text;
  }

  function scrollIntoViewSoft(node, block) {
    node.scrollIntoView({ behavior: reduceMotion ? "auto" : "smooth", block: block || "nearest" });
  }

  /**
   * Text with some ranges wrapped in <mark>. `ranges` are {start, end, cls} in the same
   * coordinates as `offset` (the position of `text` in a larger string, 0 by default).
   * Overlapping ranges produce one <mark> per segment carrying every class that covers it.
   */
  function highlighted(text, ranges, offset) {
    const base = offset || 0;
    const end = base + text.length;
    const cuts = new Set([base, end]);
    const useful = ranges.filter((r) => r.end > base && r.start < end && r.end > r.start);
    for (const r of useful) {
      if (r.start > base) cuts.add(r.start);
      if (r.end < end) cuts.add(r.end);
    }
    const points = [...cuts].sort((a, b) => a - b);
    const frag = document.createDocumentFragment();
    for (let i = 0; i < points.length - 1; i += 1) {
      const a = points[i];
      const b = points[i + 1];
      const piece = text.slice(a - base, b - base);
      if (!piece) continue;
      const classes = useful.filter((r) => r.start <= a && r.end >= b).map((r) => r.cls);
      if (classes.length) {
        frag.append(h("mark", { class: [...new Set(classes)].join(" ") }, piece));
      } else {
        frag.append(document.createTextNode(piece));
      }
    }
    return frag;
  }

  // ---------------------------------------------------------------- metadata rendering

  function studyBadge(studyType) {
    if (!studyType) return null;
    return h(
      "span",
      { class: "badge" },
      h("span", { class: "visually-hidden", text: "Study type: " }),
      capitalise(studyType),
    );
  }

  /** "p. 4" or "pp. 4-5" for a passage of a PDF; null for other formats. */
  function pageLabel(item) {
    if (!Number.isInteger(item.page_start)) return null;
    const last = Number.isInteger(item.page_end) ? item.page_end : item.page_start;
    return last === item.page_start ? `p. ${item.page_start}` : `pp. ${item.page_start}-${last}`;
  }

  function metaLine(item) {
    const bits = [];
    if (item.journal) bits.push(h("span", { class: "journal" }, item.journal));
    if (item.year) bits.push(h("span", { class: "year" }, String(item.year)));
    const pages = pageLabel(item);
    if (pages) bits.push(h("span", { class: "pages" }, pages));
    if (!bits.length) return null;
    const line = h("span", { class: "meta-line" });
    bits.forEach((bit, i) => {
      if (i) line.append(h("span", { class: "sep", "aria-hidden": "true", text: " · " }));
      line.append(bit);
    });
    return line;
  }

  function authorsLine(authors, className) {
    if (!Array.isArray(authors) || !authors.length) return null;
    return h(
      "p",
      { class: className || "authors" },
      h("span", { class: "visually-hidden", text: "Authors: " }),
      authors.join(", "),
    );
  }

  function sourceLinks(item) {
    const links = [];
    const doi = externalLink(item.url, item.doi ? `DOI ${item.doi}` : "Article", "ext-link");
    if (doi) links.push(doi);
    const pubmed = externalLink(
      item.pubmed_url,
      item.pmid ? `PubMed ${item.pmid}` : "PubMed",
      "ext-link",
    );
    if (pubmed) links.push(pubmed);
    return links;
  }

  // ---------------------------------------------------------------- elements

  const els = {
    chatView: document.getElementById("chat-view"),
    docsView: document.getElementById("docs-view"),
    welcome: document.getElementById("welcome"),
    examples: document.getElementById("examples"),
    conversation: document.getElementById("conversation"),
    composer: document.getElementById("composer"),
    question: document.getElementById("question"),
    send: document.getElementById("send"),
    charCount: document.getElementById("char-count"),
    newConversation: document.getElementById("new-conversation"),
    disclaimerText: document.getElementById("disclaimer-text"),
    dock: document.getElementById("dock"),
    navChat: document.getElementById("nav-chat"),
    navDocs: document.getElementById("nav-docs"),
    docsListPanel: document.getElementById("docs-list-panel"),
    docsTitle: document.getElementById("docs-title"),
    docsStatus: document.getElementById("docs-status"),
    docList: document.getElementById("doc-list"),
    docPanel: document.getElementById("doc-panel"),
    docStatus: document.getElementById("doc-status"),
    docArticle: document.getElementById("doc-article"),
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(kind, status, data) {
      super(kind);
      this.kind = kind; // "http" | "network" | "timeout" | "format"
      this.status = status;
      this.data = data;
    }
  }

  async function api(path, options) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(path, {
        ...options,
        headers: { accept: "application/json", ...(options && options.headers) },
        signal: controller.signal,
      });
    } catch (err) {
      throw new ApiError(err && err.name === "AbortError" ? "timeout" : "network", 0, null);
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) throw new ApiError("http", response.status, data);
    if (data === null || typeof data !== "object") throw new ApiError("format", response.status, null);
    return data;
  }

  /** A readable explanation of a failed request: {title, detail, items}. */
  function describeError(err, subject) {
    const what = subject || "question";
    if (!(err instanceof ApiError)) {
      return { title: "Something went wrong while showing the answer.", detail: String(err), items: [] };
    }
    if (err.kind === "network") {
      return {
        title: "Could not reach the server.",
        detail: "Check your connection and try again.",
        items: [],
      };
    }
    if (err.kind === "timeout") {
      return { title: "The server took too long to answer.", detail: "Please try again.", items: [] };
    }
    if (err.kind === "format") {
      return { title: "The server sent an answer this page could not read.", detail: "", items: [] };
    }
    const status = err.status;
    let title;
    if (status === 503) title = "The service is starting up or unavailable right now.";
    else if (status === 404 && what === "document") title = "That document was not found.";
    else if (status === 413) title = "That question is too long.";
    else if (status >= 500 && what === "question") {
      title = "The server had a problem answering this question.";
    } else if (status >= 500) title = `The server had a problem loading the ${what}.`;
    else if (what === "question") title = "The question could not be processed.";
    else title = `The ${what} could not be loaded.`;
    const data = err.data && typeof err.data === "object" ? err.data : {};
    const said = typeof data.error === "string" && data.error ? data.error : "no details given";
    const items = [];
    if (Array.isArray(data.details)) {
      for (const d of data.details) {
        if (!d || typeof d !== "object") continue;
        const message = typeof d.message === "string" ? d.message : "";
        const field = typeof d.field === "string" && d.field ? d.field : null;
        if (message) items.push(field ? `${field}: ${message}` : message);
      }
    }
    return { title, detail: `Server said: ${said} (HTTP ${status}).`, items };
  }

  // ---------------------------------------------------------------- chat

  let busy = false;
  let messageSeq = 0;
  /**
   * The conversation so far, sent with each question so a follow-up ("how many patients were
   * in that study?") is read in context: user turns with their text, assistant turns with the
   * studies they cited. Only the latest `maxHistoryTurns` are sent.
   */
  let history = [];
  let maxHistoryTurns = 20;
  let maxCommentChars = 1000;

  function setBusy(value) {
    busy = value;
    els.send.disabled = value;
    els.send.textContent = value ? "Asking…" : "Ask";
    els.composer.setAttribute("aria-busy", value ? "true" : "false");
    for (const button of els.examples.querySelectorAll("button")) button.disabled = value;
  }

  function updateCharCount() {
    const n = els.question.value.length;
    if (maxQuestionChars !== null && n > maxQuestionChars - Math.min(300, maxQuestionChars / 4)) {
      els.charCount.hidden = false;
      els.charCount.textContent = `${n} / ${maxQuestionChars}`;
    } else {
      els.charCount.hidden = true;
    }
  }

  /** Apply the server's limits (without them the server still refuses what is too long). */
  async function loadLimits() {
    try {
      const limits = await api("api/limits");
      if (Number.isInteger(limits.max_question_chars) && limits.max_question_chars > 0) {
        maxQuestionChars = limits.max_question_chars;
        els.question.maxLength = maxQuestionChars;
        updateCharCount();
      }
      if (Number.isInteger(limits.max_history_turns) && limits.max_history_turns >= 0) {
        maxHistoryTurns = limits.max_history_turns;
      }
      if (Number.isInteger(limits.max_comment_chars) && limits.max_comment_chars > 0) {
        maxCommentChars = limits.max_comment_chars;
      }
    } catch (err) {
      // Not ready yet or unreachable: the first answer will say so.
    }
  }

  function autoGrow() {
    const box = els.question;
    if (!box.value) {
      box.style.height = "";
      return;
    }
    box.style.height = "auto";
    box.style.height = `${Math.min(box.scrollHeight + 2, 168)}px`;
  }

  function appendUserMessage(question) {
    const li = h(
      "li",
      { class: "msg msg-user" },
      h(
        "div",
        { class: "bubble" },
        h("span", { class: "visually-hidden", text: "You asked: " }),
        h("p", { class: "question-text" }, question),
      ),
    );
    els.conversation.append(li);
    return li;
  }

  function appendPending() {
    const li = h(
      "li",
      { class: "msg msg-assistant is-pending", "aria-busy": "true" },
      h(
        "div",
        { class: "loading" },
        h("span", { class: "spinner", "aria-hidden": "true" }),
        h("span", { text: "Searching the research summaries…" }),
      ),
    );
    els.conversation.append(li);
    return li;
  }

  async function ask(rawQuestion) {
    if (busy) return;
    const question = rawQuestion.trim();
    if (!question) {
      els.question.focus();
      return;
    }
    setBusy(true);
    els.welcome.hidden = true;
    const userLi = appendUserMessage(question);
    const pending = appendPending();
    scrollIntoViewSoft(pending, "end");
    let reply;
    try {
      const sent = maxHistoryTurns > 0 ? history.slice(-maxHistoryTurns) : [];
      const data = await api("api/ask", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(sent.length ? { question, history: sent } : { question }),
      });
      if (!Array.isArray(data.sentences) || typeof data.abstained !== "boolean") {
        throw new ApiError("format", 200, data);
      }
      reply = renderAnswer(data);
      history.push(
        { role: "user", text: question },
        {
          role: "assistant",
          text: data.answer || "",
          document_ids: (data.citations || []).map((c) => c.document_id),
        },
      );
      els.newConversation.hidden = false;
      if (typeof data.disclaimer === "string" && data.disclaimer.trim()) {
        els.disclaimerText.textContent = data.disclaimer;
      }
    } catch (err) {
      reply = renderError(err, question);
    }
    pending.replaceWith(reply);
    setBusy(false);
    // Show the start of the exchange: the question and the top of its answer.
    scrollIntoViewSoft(userLi, "start");
  }

  function renderError(err, question) {
    const info = describeError(err);
    const li = h("li", { class: "msg msg-assistant is-error" });
    const box = h(
      "div",
      { class: "answer error-box" },
      h("p", { class: "answer-label error-label", text: "Something went wrong" }),
      h("p", { class: "error-title", text: info.title }),
      info.detail ? h("p", { class: "error-detail", text: info.detail }) : null,
      info.items.length ? h("ul", { class: "error-items" }, info.items.map((t) => h("li", { text: t }))) : null,
    );
    const retry = h("button", {
      type: "button",
      class: "button button-secondary",
      text: "Try again",
      onclick: () => {
        if (!busy) ask(question);
      },
    });
    const edit = h("button", {
      type: "button",
      class: "button button-quiet",
      text: "Edit the question",
      onclick: () => {
        els.question.value = question;
        autoGrow();
        updateCharCount();
        els.question.focus();
      },
    });
    box.append(h("div", { class: "actions" }, retry, edit));
    li.append(box);
    return li;
  }

  function renderAnswer(data) {
    messageSeq += 1;
    const id = `a${messageSeq}`;
    const li = h("li", { class: "msg msg-assistant", id });
    const article = h("article", { class: "answer", "aria-labelledby": `${id}-label` });
    li.append(article);

    const status = data.answer_status || (data.abstained ? "not_covered" : "answered");
    const note = followUpNote(data.resolution);
    if (note) article.append(note);
    if (status === "not_stated") {
      li.classList.add("is-abstained", "is-not-stated");
      article.append(
        h("p", { class: "answer-label abstain-label not-stated-label", id: `${id}-label` }, "Not stated in the documents"),
        h("p", { class: "abstain-text" }, data.answer || ""),
      );
    } else if (status !== "answered") {
      li.classList.add("is-abstained", "is-not-covered");
      article.append(
        h("p", { class: "answer-label abstain-label", id: `${id}-label` }, "The documents don't cover this"),
        h("p", { class: "abstain-text" }, data.answer || ""),
        h(
          "p",
          { class: "abstain-hint" },
          "Try rephrasing the question, or ",
          h("a", { href: "#documents", text: "browse the documents" }),
          ".",
        ),
      );
    } else {
      const citations = new Map();
      for (const c of data.citations || []) citations.set(c.marker, c);
      const count = new Set((data.citations || []).map((c) => c.document_id)).size;
      article.append(
        h(
          "p",
          { class: "answer-label", id: `${id}-label` },
          `Answer quoted from ${count} ${count === 1 ? "study" : "studies"}`,
        ),
      );
      const text = h("p", { class: "answer-text" });
      const sentences = data.sentences.length ? data.sentences : [{ text: data.answer || "", marker: 0 }];
      sentences.forEach((s, i) => {
        if (i) text.append(" ");
        text.append(h("span", { class: "sentence" }, s.text));
        const citation = citations.get(s.marker);
        if (citation) {
          text.append("\u00a0", markerButton(id, citation));
        }
      });
      article.append(text);
      if (citations.size) article.append(renderSources(id, [...citations.values()]));
    }
    if (Array.isArray(data.passages) && data.passages.length) {
      article.append(status === "not_stated" ? renderRelated(data.passages) : renderPassages(data.passages));
    }
    const tools = answerTools(data, status);
    if (tools) article.append(tools);
    if (typeof data.disclaimer === "string" && data.disclaimer) {
      article.append(h("p", { class: "answer-disclaimer" }, data.disclaimer));
    }
    return li;
  }

  // ---------------------------------------------------------------- export and feedback

  const EXPORT_FORMATS = [
    { format: "bibtex", label: "BibTeX (.bib)" },
    { format: "ris", label: "RIS (.ris): EndNote, Zotero, Mendeley" },
    { format: "csl-json", label: "CSL-JSON (.json)" },
  ];

  /** The row under an answer: export its references, and rate it. */
  function answerTools(data, status) {
    const parts = [];
    const ids = [...new Set((data.citations || []).map((c) => c.document_id))];
    if (status === "answered" && ids.length) parts.push(exportMenu(ids));
    if (typeof data.answer_id === "string" && data.answer_id) parts.push(feedbackBox(data.answer_id));
    return parts.length ? h("div", { class: "answer-tools" }, parts) : null;
  }

  function exportMenu(documentIds) {
    const query = documentIds.map((id) => `document_ids=${encodeURIComponent(id)}`).join("&");
    const n = documentIds.length;
    return h(
      "details",
      { class: "export-menu" },
      h("summary", { class: "button button-quiet" }, `Export ${n === 1 ? "reference" : `${n} references`}`),
      h(
        "ul",
        { class: "export-list" },
        EXPORT_FORMATS.map((f) =>
          h(
            "li",
            {},
            h("a", {
              href: `api/citations?${query}&format=${f.format}`,
              download: "",
              class: "export-link",
              "data-format": f.format,
              text: f.label,
            }),
          ),
        ),
      ),
    );
  }

  /** Thumbs up or down, then an optional comment; both go to POST /api/feedback. */
  function feedbackBox(answerId) {
    const box = h("div", { class: "feedback", role: "group", "aria-label": "Rate this answer" });
    const status = h("p", { class: "feedback-status", role: "status" });
    let rating = null;
    const comment = h("textarea", {
      class: "feedback-comment",
      rows: "2",
      maxlength: String(maxCommentChars),
      placeholder: "What was missing or wrong? (optional; don't include personal details)",
      "aria-label": "Comment on this answer (optional)",
    });
    const sendComment = h("button", {
      type: "button",
      class: "button button-secondary feedback-send",
      text: "Send comment",
    });
    const commentRow = h("div", { class: "feedback-comment-row", hidden: true }, comment, sendComment);

    async function send(withComment) {
      const body = { answer_id: answerId, rating };
      const text = comment.value.trim();
      if (withComment && text) body.comment = text;
      status.textContent = "Saving…";
      try {
        await api("api/feedback", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        status.textContent = withComment && text ? "Thanks, your comment was saved." : "Thanks, your rating was saved.";
        box.classList.add("is-saved");
        return true;
      } catch (err) {
        status.textContent = describeError(err, "rating").title;
        box.classList.remove("is-saved");
        return false;
      }
    }

    const buttons = [
      { value: "up", label: "Helpful", icon: "✓" },
      { value: "down", label: "Not helpful", icon: "✗" },
    ].map((b) =>
      h(
        "button",
        {
          type: "button",
          class: "feedback-button",
          "data-rating": b.value,
          "aria-pressed": "false",
          onclick: async (event) => {
            rating = b.value;
            for (const other of buttons) {
              other.setAttribute("aria-pressed", String(other === event.currentTarget));
            }
            commentRow.hidden = false;
            await send(false);
          },
        },
        h("span", { class: "feedback-icon", "aria-hidden": "true", text: b.icon }),
        b.label,
      ),
    );
    sendComment.addEventListener("click", async () => {
      if (!rating) return;
      if (await send(true)) {
        comment.disabled = true;
        sendComment.disabled = true;
      }
    });
    box.append(h("span", { class: "feedback-label", text: "Was this helpful?" }), ...buttons, commentRow, status);
    return box;
  }

  /** "Read as a follow-up about: Zhang et al. 2023" above an answer read in context. */
  function followUpNote(resolution) {
    if (!resolution || !resolution.follow_up) return null;
    const about = Array.isArray(resolution.about) ? resolution.about.filter((a) => typeof a === "string") : [];
    return h(
      "p",
      { class: "follow-up-note", title: resolution.reason || "" },
      h("span", { class: "follow-up-icon", "aria-hidden": "true", text: "↳" }),
      about.length
        ? ["Read as a follow-up about: ", h("strong", {}, about.join("; "))]
        : "Read as a follow-up to your earlier question",
    );
  }

  /** Forget the conversation: the next question stands alone. */
  function newConversation() {
    if (busy) return;
    history = [];
    els.conversation.replaceChildren();
    els.welcome.hidden = false;
    els.newConversation.hidden = true;
    els.question.focus();
  }

  function markerButton(messageId, citation) {
    return h(
      "button",
      {
        type: "button",
        class: "marker",
        "data-marker": citation.marker,
        "aria-controls": `${messageId}-src-${citation.marker}`,
        "aria-label": `Source ${citation.marker}: ${citation.title}`,
        title: citation.title,
        onclick: () => showSource(messageId, citation.marker),
      },
      String(citation.marker),
    );
  }

  function showSource(messageId, marker) {
    const card = document.getElementById(`${messageId}-src-${marker}`);
    if (!card) return;
    for (const old of document.querySelectorAll(".source-card.is-active")) {
      old.classList.remove("is-active");
    }
    for (const old of document.querySelectorAll(".marker.is-current")) {
      old.classList.remove("is-current");
    }
    card.classList.add("is-active");
    const message = document.getElementById(messageId);
    if (message) {
      for (const m of message.querySelectorAll(`.marker[data-marker="${Number(marker)}"]`)) {
        m.classList.add("is-current");
      }
    }
    for (const passage of card.querySelectorAll("details.card-passage")) passage.open = true;
    card.focus({ preventScroll: true });
    scrollIntoViewSoft(card, "nearest");
  }

  function renderSources(messageId, citations) {
    const list = h("ol", { class: "source-list" });
    for (const c of citations) list.append(sourceCard(messageId, c));
    return h(
      "section",
      { class: "sources", "aria-label": "Sources" },
      h("h3", { class: "sources-title", text: "Sources" }),
      list,
    );
  }

  /** One card per cited study; every passage of it the answer quotes is listed inside. */
  function sourceCard(messageId, c) {
    const passages = Array.isArray(c.passages) ? c.passages : [];
    const many = passages.length > 1;
    const card = h(
      "li",
      {
        class: "source-card",
        id: `${messageId}-src-${c.marker}`,
        "data-marker": c.marker,
        "data-document-id": c.document_id,
        tabindex: "-1",
      },
      h(
        "div",
        { class: "card-head" },
        h("span", { class: "card-marker", "aria-hidden": "true", text: String(c.marker) }),
        h(
          "div",
          { class: "card-titles" },
          h(
            "h4",
            { class: "card-title" },
            h("span", { class: "visually-hidden", text: `Source ${c.marker}: ` }),
            c.title,
          ),
          c.source_title ? h("p", { class: "card-orig" }, "Summary of: ", h("cite", {}, c.source_title)) : null,
        ),
      ),
      h("p", { class: "card-meta" }, studyBadge(c.study_type), metaLine(c)),
      authorsLine(c.authors, "authors"),
      passages.map((p, i) => quotedPassage(p, many ? i + 1 : 0)),
      h(
        "div",
        { class: "card-actions" },
        sourceLinks(c),
        h("button", {
          type: "button",
          class: "button button-secondary view-doc",
          text: "View in document",
          onclick: () => openDocumentAtPassages(c.document_id, passages, `source ${c.marker}`),
        }),
      ),
    );
    return card;
  }

  /** A quoted passage of a source card: section, pages, and the quoted sentences marked. */
  function quotedPassage(p, number) {
    const quoteRanges = (p.highlights || []).map((r) => ({ start: r.start, end: r.end, cls: "hl" }));
    const pages = pageLabel(p);
    return h(
      "details",
      { class: "card-passage", "data-chunk-id": p.chunk_id },
      h(
        "summary",
        {},
        number ? `Quoted passage ${number}` : "Quoted passage",
        p.section ? h("span", { class: "section-name" }, ` — ${p.section}`) : null,
        pages ? h("span", { class: "section-name passage-pages" }, `, ${pages}`) : null,
      ),
      h("blockquote", { class: "passage-text" }, highlighted(p.text || "", quoteRanges, 0)),
    );
  }

  function renderRelated(passages) {
    const n = passages.length;
    return h(
      "section",
      { class: "related-reading", "aria-label": "Related reading, not an answer" },
      h("h3", { class: "related-title", text: "Related reading — not an answer" }),
      h(
        "p",
        { class: "read-more-note" },
        `${n === 1 ? "This passage discusses" : "These passages discuss"} the topic, but the documents do not answer the question.`,
      ),
      passageList(passages),
    );
  }

  function renderPassages(passages) {
    const n = passages.length;
    return h(
      "details",
      { class: "read-more" },
      h("summary", {}, `Read more: ${n} related ${n === 1 ? "passage" : "passages"}`),
      h(
        "p",
        { class: "read-more-note" },
        "Other passages the search found relevant. They are not quoted in the answer.",
      ),
      passageList(passages),
    );
  }

  function passageList(passages) {
    const list = h("ol", { class: "passage-list" });
    for (const p of passages) {
      list.append(
        h(
          "li",
          { class: "passage" },
          h(
            "p",
            { class: "passage-head" },
            h("span", { class: "passage-title" }, p.title),
            p.year ? h("span", { class: "passage-year" }, ` (${p.year})`) : null,
          ),
          p.section || pageLabel(p)
            ? h("p", { class: "passage-section" }, [p.section, pageLabel(p)].filter(Boolean).join(", "))
            : null,
          h("p", { class: "passage-body" }, p.text || ""),
          h(
            "div",
            { class: "card-actions" },
            sourceLinks(p),
            h("button", {
              type: "button",
              class: "button button-quiet view-doc",
              text: "View in document",
              onclick: () => openDocumentAt(p.document_id, p.start, p.end, [], "related passage"),
            }),
          ),
        ),
      );
    }
    return list;
  }

  // ---------------------------------------------------------------- documents

  let documentsPromise = null;
  const documentCache = new Map();
  /** Ranges to highlight the next time a given document opens: {id, ranges, label}. */
  let pendingHighlight = null;

  function loadDocuments() {
    if (!documentsPromise) {
      documentsPromise = api("api/documents").catch((err) => {
        documentsPromise = null;
        throw err;
      });
    }
    return documentsPromise;
  }

  function loadDocument(id) {
    if (!documentCache.has(id)) {
      const promise = api(`api/documents/${encodeURIComponent(id)}`).catch((err) => {
        documentCache.delete(id);
        throw err;
      });
      documentCache.set(id, promise);
    }
    return documentCache.get(id);
  }

  function statusMessage(container, err, retry, subject) {
    const info = describeError(err, subject);
    container.replaceChildren(
      h(
        "div",
        { class: "error-box", role: "alert" },
        h("p", { class: "error-title", text: info.title }),
        info.detail ? h("p", { class: "error-detail", text: info.detail }) : null,
        h("button", { type: "button", class: "button button-secondary", text: "Try again", onclick: retry }),
      ),
    );
  }

  async function showDocumentList() {
    els.docPanel.hidden = true;
    els.docsListPanel.hidden = false;
    if (els.docList.childElementCount) return;
    els.docsStatus.replaceChildren(h("p", { class: "loading", text: "Loading the documents…" }));
    try {
      const data = await loadDocuments();
      els.docsStatus.replaceChildren();
      els.docList.replaceChildren(...(data.documents || []).map(documentListItem));
    } catch (err) {
      statusMessage(els.docsStatus, err, () => showDocumentList(), "list of documents");
    }
  }

  function documentListItem(doc) {
    return h(
      "li",
      { class: "doc-card" },
      h("h2", { class: "doc-card-title" }, h("a", { href: `#documents/${encodeURIComponent(doc.id)}`, text: doc.title })),
      doc.source_title ? h("p", { class: "card-orig" }, "Summary of: ", h("cite", {}, doc.source_title)) : null,
      h("p", { class: "card-meta" }, studyBadge(doc.study_type), metaLine(doc)),
      authorsLine(doc.authors, "authors"),
      h(
        "div",
        { class: "card-actions" },
        sourceLinks(doc),
        h("a", {
          class: "button button-secondary view-doc",
          href: `#documents/${encodeURIComponent(doc.id)}`,
          text: "Read the summary",
        }),
      ),
    );
  }

  function openDocumentAt(id, start, end, quoteHighlights, label) {
    openDocumentAtPassages(id, [{ start, end, highlights: quoteHighlights }], label);
  }

  /** Open a document with passages (document offsets) and their quoted sentences marked. */
  function openDocumentAtPassages(id, passages, label) {
    const ranges = [];
    for (const p of passages) {
      ranges.push({ start: p.start, end: p.end, cls: "hl-passage" });
      for (const r of p.highlights || []) {
        ranges.push({ start: p.start + r.start, end: p.start + r.end, cls: "hl-quote" });
      }
    }
    pendingHighlight = { id, ranges, label };
    navigate(`#documents/${encodeURIComponent(id)}`);
  }

  /** Split Markdown text into heading and paragraph blocks, keeping offsets into the text. */
  function parseBlocks(text) {
    const blocks = [];
    let para = null;
    let pos = 0;
    const flush = () => {
      if (para) blocks.push({ type: "p", start: para.start, text: text.slice(para.start, para.end) });
      para = null;
    };
    for (const line of text.split("\n")) {
      const lineStart = pos;
      const lineEnd = pos + line.length;
      pos = lineEnd + 1;
      const heading = /^(#{1,6})[ \t]+/.exec(line);
      if (!line.trim()) {
        flush();
      } else if (heading) {
        flush();
        const start = lineStart + heading[0].length;
        blocks.push({
          type: "heading",
          level: heading[1].length,
          start,
          text: text.slice(start, lineEnd).replace(/[ \t#]+$/, ""),
        });
      } else if (para) {
        para.end = lineEnd;
      } else {
        para = { start: lineStart, end: lineEnd };
      }
    }
    flush();
    return blocks;
  }

  async function showDocument(id) {
    els.docsListPanel.hidden = true;
    els.docPanel.hidden = false;
    const highlight = pendingHighlight && pendingHighlight.id === id ? pendingHighlight : null;
    pendingHighlight = null;
    els.docArticle.replaceChildren();
    els.docStatus.replaceChildren(h("p", { class: "loading", text: "Loading the document…" }));
    let doc;
    try {
      doc = await loadDocument(id);
    } catch (err) {
      statusMessage(els.docStatus, err, () => {
        pendingHighlight = highlight;
        showDocument(id);
      }, "document");
      return;
    }
    if (currentRoute().docId !== id) return; // the reader moved on meanwhile
    els.docStatus.replaceChildren();
    renderDocument(doc, highlight);
  }

  function renderDocument(doc, highlight) {
    const ranges = highlight ? highlight.ranges : [];
    const article = els.docArticle;
    const meta = h(
      "div",
      { class: "doc-meta" },
      doc.source_title ? h("p", { class: "card-orig" }, "Summary of: ", h("cite", {}, doc.source_title)) : null,
      h("p", { class: "card-meta" }, studyBadge(doc.study_type), metaLine(doc)),
      authorsLine(doc.authors, "authors"),
      h("div", { class: "card-actions" }, sourceLinks(doc)),
    );
    const body = h("div", { class: "doc-body" });
    let titleDone = false;
    let titleNode = null;
    const pages = Array.isArray(doc.pages) ? doc.pages : [];
    let nextPage = 0;
    for (const block of parseBlocks(doc.text || "")) {
      // A PDF's page breaks, before the first block on each page ("Page 4").
      while (nextPage < pages.length && pages[nextPage].start <= block.start) {
        if (titleDone) {
          body.append(
            h("p", { class: "page-marker", id: `page-${pages[nextPage].page}`, text: `Page ${pages[nextPage].page}` }),
          );
        }
        nextPage += 1;
      }
      if (block.type === "heading") {
        const level = titleDone ? Math.max(2, Math.min(block.level, 6)) : 1;
        const node = h(`h${level}`, { class: "doc-heading" }, highlighted(block.text, ranges, block.start));
        body.append(node);
        if (!titleDone) {
          titleDone = true;
          titleNode = node;
          node.setAttribute("tabindex", "-1");
          node.id = "doc-title";
          body.append(meta);
          if (highlight) body.append(highlightLegend(highlight));
        }
      } else {
        body.append(h("p", {}, highlighted(block.text, ranges, block.start)));
      }
    }
    if (!titleDone) {
      titleNode = h("h1", { class: "doc-heading", id: "doc-title", tabindex: "-1" }, doc.title);
      body.prepend(titleNode, meta);
    }
    if (doc.reference) {
      body.append(
        h("section", { class: "doc-reference" }, h("h2", { text: "Reference" }), h("p", {}, doc.reference)),
      );
    }
    article.replaceChildren(body);
    article.setAttribute("aria-labelledby", "doc-title");
    document.title = `${doc.title} · MSC evidence QA`;
    const firstMark = body.querySelector("mark.hl-quote") || body.querySelector("mark");
    titleNode.focus({ preventScroll: true });
    if (firstMark) {
      firstMark.scrollIntoView({ block: "center" });
    } else {
      window.scrollTo(0, 0);
    }
  }

  function highlightLegend(highlight) {
    return h(
      "p",
      { class: "doc-legend" },
      h("span", { class: "legend-swatch swatch-passage", "aria-hidden": "true", text: "passage" }),
      ` Highlighted: the ${highlight.label} from your answer. `,
      highlight.ranges.some((r) => r.cls === "hl-quote")
        ? [
            h("span", { class: "legend-swatch swatch-quote", "aria-hidden": "true", text: "quoted" }),
            " The sentences quoted in the answer.",
          ]
        : null,
    );
  }

  // ---------------------------------------------------------------- views and routing

  let chatScrollY = 0;
  let currentView = "chat";

  function currentRoute() {
    const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
    if (hash === "documents") return { view: "docs", docId: null };
    if (hash.startsWith("documents/")) return { view: "docs", docId: hash.slice("documents/".length) };
    return { view: "chat", docId: null };
  }

  function navigate(hash) {
    if ((location.hash || "#") === hash) route();
    else location.hash = hash;
  }

  function setNav(view) {
    const chat = view === "chat";
    if (chat) els.navChat.setAttribute("aria-current", "page");
    else els.navChat.removeAttribute("aria-current");
    if (!chat) els.navDocs.setAttribute("aria-current", "page");
    else els.navDocs.removeAttribute("aria-current");
  }

  function route() {
    const r = currentRoute();
    if (r.view === "chat") {
      const wasDocs = currentView !== "chat";
      currentView = "chat";
      els.docsView.hidden = true;
      els.chatView.hidden = false;
      els.composer.hidden = false;
      setNav("chat");
      document.title = "MSC evidence QA";
      if (wasDocs) {
        window.scrollTo(0, chatScrollY);
        const active = document.querySelector(".source-card.is-active");
        (active || els.question).focus({ preventScroll: true });
      }
      return;
    }
    if (currentView === "chat") chatScrollY = window.scrollY;
    currentView = "docs";
    els.chatView.hidden = true;
    els.composer.hidden = true;
    els.docsView.hidden = false;
    setNav("docs");
    if (r.docId) {
      showDocument(r.docId);
    } else {
      document.title = "Documents · MSC evidence QA";
      window.scrollTo(0, 0);
      els.docsTitle.focus({ preventScroll: true });
      showDocumentList();
    }
  }

  // ---------------------------------------------------------------- wiring

  function keepDockClear() {
    // Scrolling a source card or highlight into view must not leave it under the sticky dock.
    document.documentElement.style.scrollPaddingBottom = `${els.dock.offsetHeight + 12}px`;
  }

  function init() {
    for (const ex of EXAMPLES) {
      els.examples.append(
        h(
          "li",
          {},
          h(
            "button",
            { type: "button", class: "example", onclick: () => ask(ex.question) },
            h("span", { class: "example-topic", text: ex.topic }),
            h("span", { class: "example-question", text: ex.question }),
          ),
        ),
      );
    }

    els.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = els.question.value;
      if (busy || !value.trim()) return;
      els.question.value = "";
      autoGrow();
      updateCharCount();
      ask(value);
    });

    els.question.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.altKey) return;
      event.preventDefault();
      els.composer.requestSubmit();
    });
    els.question.addEventListener("input", () => {
      autoGrow();
      updateCharCount();
    });
    els.newConversation.addEventListener("click", newConversation);

    const skip = document.querySelector(".skip-link");
    skip.addEventListener("click", (event) => {
      event.preventDefault();
      const target = currentView === "chat" ? els.question : document.getElementById("main");
      target.focus();
    });
    document.getElementById("brand-link").addEventListener("click", (event) => {
      event.preventDefault();
      navigate("#");
    });

    window.addEventListener("hashchange", route);
    window.addEventListener("resize", keepDockClear);
    if ("ResizeObserver" in window) new ResizeObserver(keepDockClear).observe(els.dock);
    keepDockClear();
    route();
    loadLimits();
    if (currentView === "chat") els.question.focus({ preventScroll: true });
  }

  init();
})();
