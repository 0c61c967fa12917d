"""Live metrics for Prometheus at ``GET /metrics`` (``QA_METRICS``, ``QA_METRICS_AUTH``).

Each app has its own :class:`~prometheus_client.CollectorRegistry` (made in
:func:`service.api.app.create_app`), so tests that build many apps never share a count. What
is kept, all in base units (seconds):

- ``qa_http_requests_total`` and ``qa_http_request_duration_seconds``, by ``method``,
  ``route`` and ``status``: every HTTP request, 429s and 500s included, timed by the outermost
  middleware (:class:`MetricsMiddleware`) from when the app gets the request to its last byte
  out, so a streamed reply is timed to its end. ``route`` is the route's template
  (``/api/documents/{document_id}``), never the raw path, and ``other`` for paths no route
  matches; ``method`` is one of the standard ones or ``other``. The label values are bounded.
- ``qa_answers_total`` by ``endpoint`` (``/api/ask``, ``/v1/chat/completions``) and
  ``outcome`` (``answered``, ``not_stated``, ``not_covered``).
- ``qa_answer_stage_seconds`` by ``stage``: the answer's own ``timings_ms`` (``encode``: the
  question through the encoder; ``retrieval``: encoding and ranking; ``reader``: the reader's
  call, when it ran; ``answer``: choosing the sentences, reader included; ``total``).
- Read from the app at each scrape, so always current (a re-index swap shows at once):
  ``qa_index_loaded``, ``qa_index_info`` (build, model, dimension, index type, build time,
  package version), ``qa_index_documents``, ``qa_index_chunks``, ``qa_index_sentences``,
  ``qa_index_build_duration_seconds``, ``qa_index_built_timestamp_seconds``,
  ``qa_reindex_running`` and ``qa_reindex_total`` by ``outcome`` (see
  :data:`service.reindexing.OUTCOMES`); ``qa_service_info`` (version), and the standard
  ``process_*`` metrics (CPU, memory, open files) of the serving process.

``/metrics`` is not under ``/api/`` or ``/v1/``, so the rate limit never counts it. With
``QA_METRICS_AUTH=admin`` it needs the admin token (the admin endpoints' own check,
:func:`~service.api.admin_routes.require_admin`: 401 in the service's error format without
it); with ``QA_METRICS=off`` nothing is kept and it answers 404. It is left out of the OpenAPI
schema.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from starlette.routing import BaseRoute, Match

from service import __version__
from service.answering import ANSWER_STATUSES, Answer
from service.api.admin_routes import require_admin
from service.api.state import AppState
from service.reindexing import OUTCOMES, Reindexer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METRICS_PATH = "/metrics"
#: The ``route`` label of a request no route matches (bounded, unlike raw paths).
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ANSWER_ENDPOINTS = ("/api/ask", "/v1/chat/completions")
#: The ``timings_ms`` keys kept as stages; any other key is left out (bounded labels).
STAGES = ("encode", "retrieval", "reader", "answer", "total")
# Requests take ~1 ms (health) to ~50 ms (ask with the reader) here; a slow one seconds.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512)
DISABLED = "metrics are off; set QA_METRICS=on to serve them"


class ServiceMetrics:
    """The app's metrics, registered in ``registry``; thread-safe (prometheus_client's)."""

    def __init__(self, registry: CollectorRegistry, state: AppState, reindexer: Reindexer) -> None:
        # No *_created series: they double the series for no use here. (A process-wide
        # switch of prometheus_client; this service keeps no metrics in its global registry.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry
        self.requests = Counter(
            "qa_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "qa_http_request_duration_seconds",
            "Time from request to the last byte of the response (streams included), seconds.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.answers = Counter(
            "qa_answers",
            "Answers given, by endpoint and outcome (answered, not_stated, not_covered).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.stages = Histogram(
            "qa_answer_stage_seconds",
            "Time an answer spent in each stage (encode, retrieval, reader, answer, total), "
            "seconds.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        # The labelled series, looked up once (labels() costs more than the update itself);
        # every outcome is listed from the start, at 0. The label values are bounded.
        self._answer_series = {
            (endpoint, outcome): self.answers.labels(endpoint, outcome)
            for endpoint in ANSWER_ENDPOINTS
            for outcome in ANSWER_STATUSES
        }
        self._stage_series = {stage: self.stages.labels(stage) for stage in STAGES}
        self._request_series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        registry.register(IndexCollector(state, reindexer))
        ProcessCollector(registry=registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method if method in METHODS else OTHER, route, str(status))
        series = self._request_series.get(labels)
        if series is None:  # two threads may both get here: labels() gives both the same
            series = self.requests.labels(*labels), self.latency.labels(*labels)
            self._request_series[labels] = series
        series[0].inc()
        series[1].observe(seconds)

    def observe_answer(self, endpoint: str, answer: Answer) -> None:
        counter = self._answer_series.get((endpoint, answer.status))
        if counter is None:  # pragma: no cover - every endpoint and outcome is listed
            counter = self.answers.labels(endpoint, answer.status)
        counter.inc()
        for stage, histogram in self._stage_series.items():
            ms = answer.timings_ms.get(stage)
            if ms is not None:
                histogram.observe(ms / 1000)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format ``accept`` asks for (Prometheus text by default)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def record_answer(request: Request, endpoint: str, answer: Answer) -> None:
    """Count ``answer`` and its stage timings (nothing when metrics are off)."""
    metrics: ServiceMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.observe_answer(endpoint, answer)


class IndexCollector:
    """The index in service and the re-index counts, read from the app at each scrape."""

    def __init__(self, state: AppState, reindexer: Reindexer) -> None:
        self.state = state
        self.reindexer = reindexer

    def collect(self) -> Iterable[Metric]:
        yield InfoMetricFamily("qa_service", "The service.", value={"version": __version__})
        engine = self.state.engine
        yield GaugeMetricFamily(
            "qa_index_loaded",
            "1 when an index is loaded and questions are answered, else 0.",
            value=0 if engine is None else 1,
        )
        if engine is not None:
            data = engine.data
            m = data.manifest
            info = {
                "build": data.build_name,
                "model": m.model,
                "dimension": str(m.dimension),
                "index_type": m.index_type,
                "built_at": m.built_at,
                "package_version": m.package_version,
            }
            yield InfoMetricFamily("qa_index", "The index build in service.", value=info)
            for name, what, value in (
                ("documents", "Documents in the index in service.", m.documents),
                ("chunks", "Chunks (passages) in the index in service.", m.chunks),
                ("sentences", "Sentences in the index in service.", m.sentences),
                ("build_duration_seconds", "How long its build took, seconds.", m.build_seconds),
            ):
                yield GaugeMetricFamily(f"qa_index_{name}", what, value=value)
            built = _timestamp(m.built_at)
            if built is not None:
                yield GaugeMetricFamily(
                    "qa_index_built_timestamp_seconds",
                    "When the index in service was built, Unix time.",
                    value=built,
                )
        running = self.reindexer.started_at is not None
        yield GaugeMetricFamily(
            "qa_reindex_running", "1 while a re-index runs, else 0.", value=int(running)
        )
        counts = CounterMetricFamily(
            "qa_reindex",
            "Re-indexes since start-up, by outcome (succeeded, unchanged, failed, busy).",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            counts.add_metric([outcome], self.reindexer.counts[outcome])
        yield counts


def _timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


# -- the middleware ----------------------------------------------------------------------------


class MetricsMiddleware:
    """Count and time every HTTP request by method, route template and status.

    Pure ASGI: messages pass through as they come (a stream is never buffered); the clock stops
    when the app is done, after the last body message of a stream. The template is the one of
    the API route the router chose; requests it did not see (answered before routing: 429, 413,
    CORS preflights) or routes it does not name (the static files) are matched against
    ``routes``, a flat list of Starlette routes.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before answering
        request = dict(scope)  # as it came: routing rewrites some keys (a mount's root_path)

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, status_send)
        finally:
            seconds = time.perf_counter() - started
            route = self._route(scope.get("route"), request)
            self.metrics.observe_request(scope.get("method", ""), route, status, seconds)

    def _route(self, route: Any, request: Scope) -> str:
        """The template of the route that served the request (set by the router), or of the
        one that would have (the first full match, else the first partial), or ``other``."""
        if route is None:
            partial = None
            for candidate in self.routes:
                match, _ = candidate.matches(request)
                if match is Match.FULL:
                    route = candidate
                    break
                if match is Match.PARTIAL and partial is None:
                    partial = candidate
            route = route or partial
        path = getattr(route, "path", None)
        return path if isinstance(path, str) and path else OTHER


# -- the endpoint ------------------------------------------------------------------------------


def metrics_router(*, protected: bool) -> APIRouter:
    """``GET /metrics``; ``protected``: behind the admin token."""
    router = APIRouter(dependencies=[Depends(require_admin)] if protected else [])

    @router.get(METRICS_PATH, include_in_schema=False)
    async def metrics(request: Request) -> Response:
        service_metrics: ServiceMetrics = request.app.state.metrics
        body, content_type = service_metrics.exposition(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    return router


#: Registered instead of :func:`metrics_router` with ``QA_METRICS=off``.
metrics_disabled_router = APIRouter()


@metrics_disabled_router.get(METRICS_PATH, include_in_schema=False)
async def metrics_disabled() -> None:
    raise HTTPException(status_code=404, detail=DISABLED)
