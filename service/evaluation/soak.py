"""``python -m service soak``: a long, bounded load run against a local server, by hand.

    python -m service soak --minutes 10 --url http://127.0.0.1:8000

Several client threads (keep-alive connections) mix ``/api/ask``, ``/api/search``,
``/api/documents`` and ``/api/documents/{id}`` for the given time, optionally re-indexing every
few minutes through ``POST /api/admin/reindex`` (``--reindex-every``; the token comes from
``QA_ADMIN_TOKEN``). Every response is checked: a 2xx status, JSON, the question or query
echoed back, citations and passages naming documents that exist. A line per interval reports
requests, errors, latency percentiles and the server's resident memory (read from ``/proc``
when the server runs on this machine: ``--pid``, or found from the listening port); the end
gives the totals, the errors by kind and the memory trend. Exit status 1 when any request
failed.

Bounded by design: at most ``--minutes`` (24 h cap) and ``--max-requests``, and only loopback
URLs (127.0.0.0/8, ::1, localhost): this is not a tool for loading other people's servers.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import random
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_MINUTES = 24 * 60
MAX_CLIENTS = 64
DEFAULT_QUESTIONS = (
    "What was the reoperation rate after MSC disc injection?",
    "Do stem cells help with knee osteoarthritis pain?",
    "Which microRNA did the nebulized vesicles increase?",
    "Are mesenchymal stem cells safe for lung fibrosis?",
    "How do stem cells affect aging skin?",
    "What is the capital of Australia?",
)


class SoakError(ValueError):
    """Bad arguments (a remote URL, limits out of range); the message says which."""


def loopback_url(url: str) -> urllib.parse.SplitResult:
    """``url`` parsed, or SoakError unless it is http(s) on this machine's loopback."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SoakError(f"'{url}' is not an http:// or https:// URL")
    host = parts.hostname
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise SoakError(
                f"refusing to load {host}: soak only targets this machine (127.0.0.0/8, ::1, "
                "localhost)"
            )
    return parts


# -- measurements ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process on this machine, from /proc (None if unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port (Linux /proc), or None."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(proc.name)
        except OSError:
            continue
    return None


@dataclass
class Window:
    """One reporting interval."""

    started: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    rss: int | None = None


@dataclass
class SoakReport:
    url: str
    seconds: float = 0.0
    requests: int = 0
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    reindexes: int = 0
    reindex_failures: int = 0
    rss_start: int | None = None
    rss_end: int | None = None
    rss_max: int | None = None
    stopped_by: str = "time"

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "seconds": round(self.seconds, 1),
            "requests": self.requests,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "by_endpoint": dict(self.by_endpoint),
            "latency_ms": _quantiles(self.latencies),
            "reindexes": self.reindexes,
            "reindex_failures": self.reindex_failures,
            "rss_mb": {
                "start": _mb(self.rss_start),
                "end": _mb(self.rss_end),
                "max": _mb(self.rss_max),
            },
            "windows": [
                {
                    "at_s": round(w.started, 1),
                    "requests": len(w.latencies),
                    "errors": w.errors,
                    "latency_ms": _quantiles(w.latencies),
                    "rss_mb": _mb(w.rss),
                }
                for w in self.windows
            ],
            "stopped_by": self.stopped_by,
        }


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 1e6, 1)


def _quantiles(latencies: Sequence[float]) -> dict[str, float]:
    return {
        name: round(percentile(latencies, q) * 1000, 1)
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
    }


# -- the run ---------------------------------------------------------------------------------


class _Client:
    """One keep-alive connection; reconnects after an error."""

    def __init__(self, parts: urllib.parse.SplitResult, timeout: float) -> None:
        self.parts = parts
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        if self.conn is None:
            cls = (
                http.client.HTTPSConnection
                if self.parts.scheme == "https"
                else http.client.HTTPConnection
            )
            self.conn = cls(self.parts.hostname or "", self.parts.port, timeout=self.timeout)
        data = json.dumps(body).encode() if body is not None else None
        sent = {"Content-Type": "application/json"} if data is not None else {}
        try:
            self.conn.request(method, path, body=data, headers={**sent, **(headers or {})})
            response = self.conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.getheader("connection", "").lower() == "close":
            self.close()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw
        return response.status, payload

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _check(kind: str, sent: str, status: int, body: Any, known: set[str]) -> str | None:
    """What is wrong with a response (None: nothing)."""
    if status == 429:
        return "429 rate limited"
    if not 200 <= status < 300:
        return f"HTTP {status}"
    if not isinstance(body, dict):
        return "not a JSON object"
    if kind == "ask":
        if body.get("question") != sent:
            return "question not echoed (mixed responses?)"
        used = [c.get("document_id") for c in body.get("citations", [])]
        used += [p.get("document_id") for p in body.get("passages", [])]
        if known and any(doc not in known for doc in used):
            return "cites an unknown document"
    elif kind == "search":
        if body.get("query") != sent:
            return "query not echoed (mixed responses?)"
        if known and any(r.get("document_id") not in known for r in body.get("results", [])):
            return "returns an unknown document"
    elif kind == "document" and body.get("id") != sent:
        return "another document returned (mixed responses?)"
    return None


def run_soak(
    url: str,
    *,
    seconds: float,
    clients: int = 8,
    max_requests: int = 1_000_000,
    interval: float = 30.0,
    questions: Sequence[str] = DEFAULT_QUESTIONS,
    reindex_every: float | None = None,
    admin_token: str | None = None,
    pid: int | None = None,
    timeout: float = 60.0,
    report_line: Callable[[str], None] | None = None,
) -> SoakReport:
    """Load ``url`` for ``seconds`` (or ``max_requests``) and report what happened."""
    parts = loopback_url(url)
    if not 0 < seconds <= MAX_MINUTES * 60:
        raise SoakError(f"the duration must be more than 0 and at most {MAX_MINUTES} minutes")
    if not 1 <= clients <= MAX_CLIENTS:
        raise SoakError(f"--clients must be between 1 and {MAX_CLIENTS}")
    if max_requests < 1:
        raise SoakError("--max-requests must be at least 1")
    if reindex_every is not None and not admin_token:
        raise SoakError("--reindex-every needs the admin token in QA_ADMIN_TOKEN")
    say = report_line or (lambda line: print(line, flush=True))
    if pid is None and parts.port is not None:
        pid = listening_pid(parts.port)
    report = SoakReport(url=url)

    setup = _Client(parts, timeout)
    try:
        status, listing = setup.request("GET", "/api/documents")
    except (OSError, http.client.HTTPException) as exc:
        raise SoakError(f"cannot reach {url} ({exc}); start the server first") from None
    finally:
        setup.close()
    if status != 200 or not isinstance(listing, dict):
        raise SoakError(f"GET {url}/api/documents answered {status}; is the index loaded?")
    doc_ids = [d["id"] for d in listing.get("documents", [])]
    known: set[str] = set(doc_ids)
    known_lock = threading.Lock()

    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + seconds
    stop = threading.Event()
    report.rss_start = report.rss_max = rss_bytes(pid) if pid else None
    window = Window(started=0.0)
    issued = 0

    def record(endpoint: str, elapsed: float, problem: str | None) -> None:
        with lock:
            report.requests += 1
            report.by_endpoint[endpoint] += 1
            report.latencies.append(elapsed)
            window.latencies.append(elapsed)
            if problem is not None:
                report.errors += 1
                window.errors += 1
                report.error_kinds[f"{endpoint}: {problem}"] += 1

    def next_ticket() -> bool:
        nonlocal issued
        with lock:
            if issued >= max_requests:
                return False
            issued += 1
            return True

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        client = _Client(parts, timeout)
        try:
            while not stop.is_set() and time.monotonic() < deadline and next_ticket():
                roll = rng.random()
                with known_lock:
                    ids, known_now = list(doc_ids), set(known)
                if roll < 0.45:
                    kind, endpoint = "ask", "/api/ask"
                    sent = rng.choice(questions)
                    call: tuple[str, str, Any] = ("POST", endpoint, {"question": sent})
                elif roll < 0.8:
                    kind, endpoint = "search", "/api/search"
                    sent = rng.choice(questions)
                    query = urllib.parse.urlencode({"q": sent, "top_k": rng.randint(1, 10)})
                    call = ("GET", f"{endpoint}?{query}", None)
                elif roll < 0.9 or not ids:
                    kind, endpoint, sent = "documents", "/api/documents", ""
                    call = ("GET", endpoint, None)
                else:
                    kind, endpoint = "document", "/api/documents/{id}"
                    sent = rng.choice(ids)
                    call = ("GET", f"/api/documents/{urllib.parse.quote(sent, safe='')}", None)
                t0 = time.perf_counter()
                try:
                    status, body = client.request(*call)
                    problem = _check(kind, sent, status, body, known_now)
                except (OSError, http.client.HTTPException) as exc:
                    problem = f"connection error ({type(exc).__name__})"
                record(endpoint, time.perf_counter() - t0, problem)
        finally:
            client.close()

    def reindexer() -> None:
        assert reindex_every is not None
        client = _Client(parts, max(timeout, 600.0))
        headers = {"Authorization": f"Bearer {admin_token}"}
        try:
            while not stop.wait(reindex_every) and time.monotonic() < deadline:
                try:
                    status, body = client.request("POST", "/api/admin/reindex", None, headers)
                    ok = status == 200
                except (OSError, http.client.HTTPException):
                    ok, body = False, None
                with lock:
                    report.reindexes += 1
                    report.reindex_failures += 0 if ok else 1
                if ok:
                    try:
                        _, listing = client.request("GET", "/api/documents")
                        new_ids = [d["id"] for d in listing["documents"]]
                    except (OSError, http.client.HTTPException, KeyError, TypeError):
                        continue
                    with known_lock:
                        known.update(new_ids)  # answers begun before the swap may cite old ones
                        doc_ids[:] = new_ids
                else:
                    detail = body.get("error") if isinstance(body, dict) else body
                    say(f"re-index failed: {detail}")
        finally:
            client.close()

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"soak-{i}", daemon=True)
        for i in range(clients)
    ]
    if reindex_every is not None:
        threads.append(threading.Thread(target=reindexer, name="soak-reindex", daemon=True))
    say(
        f"soak: {url}, {clients} clients, {seconds / 60:.1f} min (at most {max_requests} "
        f"requests){f', re-index every {reindex_every:.0f} s' if reindex_every else ''}; "
        f"server pid {pid or 'unknown'}"
    )
    say(
        f"{'time':>7} {'reqs':>7} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'RSS MB':>8}"
    )
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads[:clients]):
            next_report = time.monotonic() + interval
            while time.monotonic() < next_report and any(t.is_alive() for t in threads[:clients]):
                time.sleep(min(0.2, max(0.0, next_report - time.monotonic())))
            with lock:
                done, window = window, Window(started=time.monotonic() - started)
            _close_window(report, done, window.started, pid, say)
    except KeyboardInterrupt:
        report.stopped_by = "interrupted"
        say("interrupted; finishing the requests in flight ...")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=timeout + 5)
    if window.latencies:
        _close_window(report, window, time.monotonic() - started, pid, say)
    report.seconds = time.monotonic() - started
    if report.stopped_by != "interrupted" and issued >= max_requests:
        report.stopped_by = "max requests"
    report.rss_end = rss_bytes(pid) if pid else None
    return report


def _close_window(
    report: SoakReport,
    window: Window,
    at: float,
    pid: int | None,
    say: Callable[[str], None],
) -> None:
    window.rss = rss_bytes(pid) if pid else None
    if window.rss is not None:
        report.rss_max = max(report.rss_max or 0, window.rss)
    report.windows.append(window)
    q = _quantiles(window.latencies)
    rss = f"{window.rss / 1e6:8.1f}" if window.rss is not None else f"{'?':>8}"
    say(
        f"{at:6.0f}s {len(window.latencies):7d} {window.errors:6d} {q['p50']:8.1f} "
        f"{q['p95']:8.1f} {q['p99']:8.1f} {rss}"
    )


def format_summary(report: SoakReport) -> str:
    q = _quantiles(report.latencies)
    lines = [
        f"{report.requests} requests in {report.seconds:.0f} s "
        f"({report.requests / max(report.seconds, 1e-9):.1f}/s), {report.errors} failed; "
        f"stopped by {report.stopped_by}",
        f"latency ms: p50 {q['p50']}, p95 {q['p95']}, p99 {q['p99']}, max {q['max']}",
        "requests: " + ", ".join(f"{k} {v}" for k, v in sorted(report.by_endpoint.items())),
    ]
    if report.reindexes:
        lines.append(f"re-indexes: {report.reindexes} ({report.reindex_failures} failed)")
    if report.rss_start is not None and report.rss_end is not None:
        lines.append(
            f"server RSS MB: start {_mb(report.rss_start)}, end {_mb(report.rss_end)}, "
            f"max {_mb(report.rss_max)}"
        )
    else:
        lines.append("server RSS: unknown (pass --pid of a server on this machine)")
    for kind, count in report.error_kinds.most_common(10):
        lines.append(f"error: {count} x {kind}")
    return "\n".join(lines)


def load_questions(path: Path) -> list[str]:
    """The question texts of a question file (:func:`service.evaluation.dataset.load_questions`);
    the built-in :data:`DEFAULT_QUESTIONS` when it is missing, unreadable or empty. Used by soak
    and bench."""
    from service.evaluation.dataset import load_questions as read_question_file

    try:
        questions = [q.question for q in read_question_file(path, require_answers=False)]
    except (OSError, ValueError):
        return list(DEFAULT_QUESTIONS)
    return questions or list(DEFAULT_QUESTIONS)
