"""The HTTP load generator: keep-alive HTTP/1.1 clients on raw asyncio sockets, and distinct
questions to send."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.evaluation.bench.harness import HOST

QUESTIONS_FILE = Path("eval/questions.jsonl")


# -- questions ----------------------------------------------------------------------------------


def load_base_questions(path: Path = QUESTIONS_FILE) -> list[str]:
    from service.evaluation.soak import load_questions

    return load_questions(path)


class QuestionSource:
    """Distinct questions: the labelled questions, each with a request number appended (one or
    two extra word pieces), so no two requests share a cached query vector."""

    def __init__(self, base: Sequence[str], prefix: str = "") -> None:
        self.base = list(base)
        self.prefix = prefix
        self.n = 0

    def next(self) -> str:
        i = self.n
        self.n += 1
        text = self.base[i % len(self.base)]
        return f"{text} {self.prefix}{i}"

    def take(self, count: int) -> list[str]:
        return [self.next() for _ in range(count)]


# -- HTTP load (raw asyncio sockets, keep-alive) ----------------------------------------------


def search_request(question: str, port: int) -> bytes:
    query = urllib.parse.urlencode({"q": question, "top_k": 5, "mode": "hybrid"})
    return (
        f"GET /api/search?{query} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()


def ask_request(question: str, port: int) -> bytes:
    body = json.dumps({"question": question, "top_k": 5}).encode()
    head = (
        f"POST /api/ask HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nAccept: application/json\r\n\r\n"
    ).encode()
    return head + body


ENDPOINTS: dict[str, Callable[[str, int], bytes]] = {
    "/api/search": search_request,
    "/api/ask": ask_request,
}


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: int = 0
    seconds: float = 0.0
    error_examples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    def note_error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(what)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes]:
    writer.write(raw)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _load(
    port: int,
    make: Callable[[int], bytes],
    clients: int,
    total: int,
    seconds: float,
    timeout: float = 30.0,
) -> LoadResult:
    """``clients`` keep-alive connections sending ``total`` requests at most, for ``seconds``
    at most; ``make(i)`` gives request ``i``."""
    result = LoadResult()
    issued = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def client() -> None:
        nonlocal issued
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while issued < total and time.perf_counter() < deadline:
                i = issued
                issued += 1
                raw = make(i)
                t0 = time.perf_counter()
                try:
                    if connection is None:
                        connection = await asyncio.wait_for(
                            asyncio.open_connection(HOST, port), timeout
                        )
                    status, body = await asyncio.wait_for(
                        _exchange(connection[0], connection[1], raw), timeout
                    )
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                    result.note_error(f"{type(exc).__name__}: {exc}"[:200])
                    if connection is not None:
                        connection[1].close()
                    connection = None
                    continue
                if 200 <= status < 300:  # 201 for a new rating (/api/feedback)
                    result.latencies.append(time.perf_counter() - t0)
                else:
                    result.note_error(f"HTTP {status}: {body[:120]!r}")
        finally:
            if connection is not None:
                connection[1].close()

    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    return result


async def run_raw(
    port: int, make: Callable[[int], bytes], clients: int, total: int, seconds: float
) -> LoadResult:
    """Like :func:`run_load` with the raw requests made by ``make(i)`` (any endpoint)."""
    return await _load(port, make, clients, total, seconds)


def run_load(
    port: int,
    endpoint: str,
    questions: QuestionSource,
    clients: int,
    total: int,
    seconds: float,
    repeat_question: str | None = None,
) -> LoadResult:
    make_raw = ENDPOINTS[endpoint]
    texts = [repeat_question] * total if repeat_question else questions.take(total)
    return asyncio.run(_load(port, lambda i: make_raw(texts[i], port), clients, total, seconds))
