"""Optional per-client rate limit: an in-memory token bucket per client IP address.

Each client (keyed by the IP address of the connection; ``X-Forwarded-For`` is not trusted)
has a bucket holding ``per_minute`` tokens, refilled at ``per_minute / 60`` tokens a second.
A request to ``/api/*`` or ``/v1/*`` takes one token; with the bucket empty the answer is 429
with ``Retry-After`` (whole seconds until a token is back), in OpenAI's error shape under
``/v1/``. Health checks, the page and static files are never limited. Buckets live in one
process's memory (several workers each count separately) and the least recently seen clients
are forgotten beyond ``max_clients``, so memory stays bounded.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.api.errors import rate_limited

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LIMITED_PREFIXES = ("/api/", "/v1/")


def is_limited_path(path: str) -> bool:
    return path.startswith(LIMITED_PREFIXES) or path in ("/api", "/v1")


class TokenBuckets:
    """Token buckets keyed by client; not thread-safe (used from the event loop only)."""

    def __init__(
        self,
        per_minute: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if allowed, else the seconds until one is back."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # most recently seen last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class RateLimitMiddleware:
    """Answer 429 with Retry-After once a client has used up its bucket."""

    def __init__(self, app: ASGIApp, per_minute: int, buckets: TokenBuckets | None = None) -> None:
        self.app = app
        self.per_minute = per_minute
        self.buckets = buckets or (TokenBuckets(per_minute) if per_minute > 0 else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if self.buckets is None or scope["type"] != "http" or not is_limited_path(path):
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "OPTIONS":  # CORS preflight: answered outside, never counted
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = str(client[0]) if client else "unknown"
        wait = self.buckets.take(key)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = str(max(1, math.ceil(wait)))
        response = rate_limited(path, self.per_minute, retry_after)
        await response(scope, receive, send)
