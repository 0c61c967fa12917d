"""Hostile input and security settings: traversal, NUL bytes, oversize and nested bodies, wrong
methods, markup in questions, security headers, generic errors, CORS, rate limit, admin access.

Ordinary bad input (empty, too long, wrong types, wrong content type) is in tests/api/test_api.py.
Requests whose exact bytes matter (dot segments, percent-encoding, chunked bodies) go to a real
uvicorn server over a socket; the rest use the ASGI test client. All use the hashing embedder.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CORPUS, make_settings, server_process, serving
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.ratelimit import TokenBuckets
from service.config import Settings, SettingsError, load_settings
from service.engine import Engine
from service.index_store import POINTER

MODEL = "msc-evidence-qa"
ADMIN_TOKEN = "security-admin-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    engine, _ = Engine.start(make_settings(tmp_path_factory.mktemp("security"), CORPUS))
    return engine


def app_with(engine: Engine, **overrides: Any) -> FastAPI:
    return create_app(engine.settings.model_copy(update=overrides), engine=engine)


@pytest.fixture(scope="module")
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(app_with(engine), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def url(engine: Engine) -> Iterator[str]:
    with serving(app_with(engine)) as base_url:
        yield base_url


def raw(
    base_url: str,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send ``target`` exactly as written (no URL normalization); return status, headers, body."""
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> Any:
    assert status == expected, body[:300]
    assert headers["content-type"].startswith("application/json")
    assert headers["x-content-type-options"] == "nosniff"
    return json.loads(body)


# -- path traversal and NUL bytes --------------------------------------------------------------

SECRET_MARKERS = (b"root:", b"[project]", b"BaseSettings", b"QA_", b"import ")


@pytest.mark.parametrize(
    "target",
    [
        "/api/documents/../../etc/passwd",
        "/api/documents/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/documents/..%2f..%2fpyproject.toml",
        "/api/documents/%2E%2E%2F%2E%2E%2Fservice%2Fconfig.py",
        "/api/documents/%2e%2e",
        "/api/documents/..%5c..%5cpyproject.toml",
        "/api/documents/%252e%252e%252fetc%252fpasswd",
        "/static/../service/config.py",
        "/static/%2e%2e/config.py",
        "/static/..%2fconfig.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/....//....//pyproject.toml",
        "/../../etc/passwd",
        "//etc/passwd",
    ],
)
def test_path_traversal_finds_nothing(url: str, target: str) -> None:
    status, headers, body = raw(url, "GET", target)
    assert status in (400, 404), (status, body[:200])
    assert headers["content-type"].startswith("application/json")
    assert not any(marker in body for marker in SECRET_MARKERS), body[:300]


@pytest.mark.parametrize(
    "document_ids",
    [
        ["../../etc/passwd"],
        ["..%2f..%2fetc%2fpasswd"],
        ["zhang-2023/../li-2025"],
        ["zhang-2023\x00"],
    ],
)
def test_traversal_and_nul_in_document_filter_is_422(
    client: TestClient, document_ids: list[str]
) -> None:
    response = client.post("/api/ask", json={"question": "back pain", "document_ids": document_ids})
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "document_ids"


@pytest.mark.parametrize("target", ["/api/documents/%00", "/api/documents/zhang-2023%00"])
def test_nul_in_document_id_is_404(url: str, target: str) -> None:
    status, headers, body = raw(url, "GET", target)
    error = assert_json_error(status, headers, body, 404)
    assert error["error"].startswith("no document with id")


def test_nul_bytes_in_questions_are_dropped(client: TestClient) -> None:
    search = client.get("/api/search", params={"q": "reoperation\x00 rate\x00"})
    assert search.status_code == 200
    assert search.json()["query"] == "reoperation rate"
    nul_only = client.get("/api/search", params={"q": "\x00\x00"})
    assert nul_only.status_code == 422
    chat = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "disc\x00 injection"}]},
    )
    assert chat.status_code == 200
    assert chat.json()["resolution"]["question"] == "disc injection"


# -- oversize and nested bodies ----------------------------------------------------------------

MEGABYTE = b'{"question": "' + b"x" * (1 << 20) + b'"}'


@pytest.mark.parametrize("path", ["/api/ask", "/v1/chat/completions", "/api/documents", "/nope"])
def test_one_megabyte_body_is_413(url: str, path: str) -> None:
    status, headers, body = raw(url, "POST", path, MEGABYTE, {"Content-Type": "application/json"})
    error = assert_json_error(status, headers, body, 413)
    if path.startswith("/v1/"):
        assert error["error"]["code"] == "request_too_large"
    else:
        assert "too large" in error["error"]


def _chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("path", ["/api/ask", "/v1/chat/completions"])
def test_chunked_oversize_body_without_content_length_is_413(url: str, path: str) -> None:
    # Was a 400 "error parsing the body": the limit is now raised as an HTTP 413 mid-read.
    response = httpx.post(
        f"{url}{path}",
        content=_chunks(MEGABYTE),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert response.headers["x-content-type-options"] == "nosniff"
    if path.startswith("/v1/"):
        assert response.json()["error"]["code"] == "request_too_large"
    else:
        assert response.json()["error"] == "request body too large (limit 65536 bytes)"


def test_chunked_body_under_the_limit_is_answered(url: str) -> None:
    body = json.dumps({"question": "reoperation rate " + "x" * 1000}).encode()
    response = httpx.post(
        f"{url}/api/ask", content=_chunks(body, 100), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200


DEEP_LIST = b"[" * 30_000 + b"]" * 30_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/ask", b'{"question": ' + DEEP_LIST + b"}"),
        ("/api/ask", b'{"question": "x", "document_ids": ' + DEEP_OBJECT + b"}"),
        ("/v1/chat/completions", b'{"model": "m", "messages": ' + DEEP_LIST + b"}"),
    ],
)
def test_deeply_nested_json_is_400_not_500(client: TestClient, path: str, body: bytes) -> None:
    assert len(body) < 65_536
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert message == "malformed JSON: the body is nested too deeply"


def test_moderately_nested_extra_fields_are_ignored(client: TestClient) -> None:
    nested: Any = "deep"
    for _ in range(200):
        nested = {"a": [nested]}
    response = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "disc pain"}], "x": nested},
    )
    assert response.status_code == 200
    response = client.post("/api/ask", json={"question": "disc pain", "x": nested})
    assert response.status_code == 422  # /api/ask forbids unknown fields


def test_body_that_is_not_utf8_is_400(client: TestClient) -> None:
    response = client.post(
        "/api/ask",
        content=b'{"question": "\xff\xfe"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "malformed JSON: the body is not valid UTF-8"


# -- out-of-range numbers and wrong methods ----------------------------------------------------


@pytest.mark.parametrize(
    "top_k", [10**100, 2**63, -(2**63), 1e308, -1, 5.5, "Infinity", "NaN", [5], {"n": 5}]
)
def test_huge_or_odd_top_k_is_422(client: TestClient, top_k: Any) -> None:
    response = client.post("/api/ask", json={"question": "back pain", "top_k": top_k})
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "top_k"


@pytest.mark.parametrize("top_k", ["9" * 400, "1e9", "-0", "0x10", "NaN", ""])
def test_huge_or_odd_top_k_in_query_is_422(client: TestClient, top_k: str) -> None:
    response = client.get("/api/search", params={"q": "back pain", "top_k": top_k})
    assert response.status_code == 422


def test_non_finite_json_numbers_are_refused(client: TestClient) -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        response = client.post(
            "/api/ask",
            content=b'{"question": "back pain", "top_k": ' + literal + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422, literal


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/ask", "POST"),
        ("PUT", "/api/ask", "POST"),
        ("PATCH", "/api/search", "GET"),
        ("POST", "/api/documents", "GET"),
        ("DELETE", "/api/documents/zhang-2023", "GET"),
        ("POST", "/healthz", "GET"),
        ("PUT", "/v1/chat/completions", "POST"),
        ("DELETE", "/v1/models", "GET"),
    ],
)
def test_wrong_method_is_405_json(client: TestClient, method: str, path: str, allowed: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/json")
    assert allowed in response.headers["allow"]
    body = response.json()
    if path.startswith("/v1/"):
        assert method in body["error"]["message"]
    else:
        assert body == {"error": "Method Not Allowed", "details": []}


# -- markup in questions, and the page -------------------------------------------------------

MARKUP = [
    "<script>alert(document.cookie)</script> back pain",
    '"><img src=x onerror=alert(1)> disc injection',
    "<svg/onload=alert(1)> reoperation rate",
    "javascript:alert(1) stem cells",
    "</script><script>alert(1)</script>",
]


@pytest.mark.parametrize("question", MARKUP)
def test_markup_comes_back_only_as_json_text(client: TestClient, question: str) -> None:
    for response, echoed in (
        (r := client.post("/api/ask", json={"question": question}), lambda: r.json()["question"]),
        (s := client.get("/api/search", params={"q": question}), lambda: s.json()["query"]),
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert echoed() == question  # data, unchanged; the page renders it as text
    missing = client.get(f"/api/documents/{urllib.parse.quote(question, safe='')}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"


def test_chat_page_cannot_run_injected_markup(client: TestClient) -> None:
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"  # no inline scripts, no eval
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text.replace('<script src="', "")  # no inline script at all
    # The page's script builds the DOM from text, never from HTML strings.
    script = (ROOT / "service" / "static" / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


# -- headers on every response; generic errors -------------------------------------------------


def test_security_headers_on_every_kind_of_response(engine: Engine) -> None:
    limited = app_with(engine, rate_limit_per_minute=1)
    with TestClient(limited, raise_server_exceptions=False) as test_client:
        responses = {
            "page": test_client.get("/"),
            "static": test_client.get("/static/app.js"),
            "docs": test_client.get("/docs"),
            "health": test_client.get("/healthz"),
            "json 200": test_client.get("/api/documents"),
            "429": test_client.get("/api/documents"),
            "404": test_client.get("/nope"),
            "405": test_client.delete("/healthz"),
            "413": test_client.post("/api/ask", content=MEGABYTE),
        }
    for name, response in responses.items():
        assert response.headers["x-content-type-options"] == "nosniff", name
        assert "content-security-policy" in response.headers, name
        assert "server" not in response.headers, name
    assert responses["429"].status_code == 429
    assert "cdn.jsdelivr.net" in responses["docs"].headers["content-security-policy"]


def test_real_server_sends_no_server_banner(tmp_path: Path) -> None:
    """``python -m service serve`` as deployed: uvicorn's own Server header is off too."""
    (tmp_path / "corpus").mkdir()
    for doc in ("zhang-2023.md", "li-2025.md"):
        (tmp_path / "corpus" / doc).write_bytes((CORPUS / doc).read_bytes())
    with server_process(tmp_path) as (base_url, _proc):
        for method, path in (("GET", "/"), ("GET", "/api/documents"), ("GET", "/nope"),
                             ("POST", "/api/ask"), ("GET", "/static/style.css")):  # fmt: skip
            status, headers, _ = raw(base_url, method, path)
            assert "server" not in headers, (path, headers)
            assert headers["x-content-type-options"] == "nosniff"
            assert "default-src 'self'" in headers["content-security-policy"]
            assert status < 500


class _Exploding:
    """An engine whose every answer fails, to reach the generic 500 handler."""

    def __init__(self, engine: Engine) -> None:
        self.settings = engine.settings
        self.data = engine.data

    def ask(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail /etc/shadow")

    search = ask


def test_unexpected_errors_are_generic_500s_in_each_shape(engine: Engine) -> None:
    app = create_app(engine.settings, engine=_Exploding(engine))  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as test_client:
        api = test_client.post("/api/ask", json={"question": "back pain"})
        search = test_client.get("/api/search", params={"q": "back pain"})
        chat = test_client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "back pain"}]},
        )
    for response in (api, search, chat):
        assert response.status_code == 500
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "secret" not in response.text and "Traceback" not in response.text
    assert api.json() == {"error": "internal error", "details": []}
    assert chat.json() == {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


# -- CORS ----------------------------------------------------------------------------------


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.get("/api/documents", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert not any(h.startswith("access-control-") for h in response.headers)
    preflight = client.options(
        "/api/ask",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allow_list(engine: Engine) -> None:
    app = app_with(engine, cors_origins=["https://ok.example"])
    with TestClient(app) as test_client:
        ok = test_client.get("/api/documents", headers={"Origin": "https://ok.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ok.example"
        assert ok.headers["x-content-type-options"] == "nosniff"
        other = test_client.get("/api/documents", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = test_client.options(
            "/api/ask",
            headers={
                "Origin": "https://ok.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://ok.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        refused = test_client.options(
            "/api/ask",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://a.example,http://localhost:3000", ["https://a.example", "http://localhost:3000"]),
        (' ["https://a.example/"] ', ["https://a.example"]),
        ("*", ["*"]),
        ("", []),
    ],
)
def test_cors_origins_setting_from_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("QA_CORS_ORIGINS", value)
    assert load_settings().cors_origins == expected


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("QA_CORS_ORIGINS", "https://a.example/path", "is not an origin"),
        ("QA_CORS_ORIGINS", "file:///etc", "is not an origin"),
        ("QA_CORS_ORIGINS", '["https://a.example"', "not valid JSON"),
        ("QA_ADMIN_TOKEN", "short", "at least 16 characters"),
        ("QA_RATE_LIMIT_PER_MINUTE", "-1", "QA_RATE_LIMIT_PER_MINUTE"),
    ],
)
def test_bad_security_settings_fail_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message) as info:
        load_settings()
    assert variable in str(info.value) and "\n" not in str(info.value)


# -- rate limit ------------------------------------------------------------------------------


def test_token_bucket_refills_and_forgets_old_clients() -> None:
    now = [100.0]
    buckets = TokenBuckets(6, max_clients=3, clock=lambda: now[0])  # one token per 10 s
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 6
    assert buckets.take("a") == pytest.approx(10.0)
    assert buckets.take("b") == 0.0  # another client has its own bucket
    now[0] += 5
    assert buckets.take("a") == pytest.approx(5.0)  # half a token back: 5 s more
    now[0] += 5
    assert buckets.take("a") == 0.0
    now[0] += 3600
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 6  # never more than a minute's worth
    assert buckets.take("a") > 0
    for key in ("c", "d", "e"):
        buckets.take(key)
    assert len(buckets) == 3  # least recently seen forgotten


def test_rate_limit_answers_429_with_retry_after(engine: Engine) -> None:
    app = app_with(engine, rate_limit_per_minute=3)
    with TestClient(app) as test_client:
        statuses = [
            test_client.get("/api/search", params={"q": "disc"}).status_code for _ in range(3)
        ]
        assert statuses == [200, 200, 200]
        limited = test_client.post("/api/ask", json={"question": "disc"})
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 20
        assert limited.json()["error"].startswith("rate limit exceeded (3 requests per minute")
        chat = test_client.get("/v1/models")
        assert chat.status_code == 429
        assert chat.json()["error"]["code"] == "rate_limit_exceeded"
        # Never limited: health checks, the page, static files.
        for path in ("/healthz", "/readyz", "/", "/static/app.js", "/static/style.css"):
            assert all(test_client.get(path).status_code == 200 for _ in range(5)), path
        spec = test_client.get("/openapi.json").json()
        assert "429" in spec["paths"]["/api/ask"]["post"]["responses"]
        assert "429" not in spec["paths"]["/healthz"]["get"]["responses"]
    # Each client address has its own bucket.
    with TestClient(app, client=("203.0.113.7", 5000)) as other:
        assert other.get("/api/documents").status_code == 200


def test_rate_limit_is_off_by_default(client: TestClient) -> None:
    assert all(client.get("/api/documents").status_code == 200 for _ in range(50))


# -- admin access ----------------------------------------------------------------------------


def test_admin_is_disabled_without_a_token(client: TestClient) -> None:
    for method, path in (("POST", "/api/admin/reindex"), ("GET", "/api/admin/status")):
        response = client.request(method, path, headers={"Authorization": "Bearer anything"})
        assert response.status_code == 404
        assert "set QA_ADMIN_TOKEN" in response.json()["error"]
    assert not any(p.startswith("/api/admin") for p in client.get("/openapi.json").json()["paths"])


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {ADMIN_TOKEN}",
        f"Token {ADMIN_TOKEN}",
        "Bearer wrong-token-0123456789abc",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN.upper()}",
        f"Bearer {ADMIN_TOKEN}\u00e9",
    ],
)
def test_admin_with_a_missing_or_wrong_token_is_401_and_changes_nothing(
    tmp_path: Path, authorization: str | None
) -> None:
    settings: Settings = make_settings(tmp_path, CORPUS, admin_token=ADMIN_TOKEN)
    engine, _ = Engine.start(settings)
    pointer = (settings.index_dir / POINTER).read_text()
    headers = {"Authorization": authorization.encode()} if authorization is not None else {}
    with TestClient(create_app(settings, engine=engine)) as test_client:
        for method, path in (("POST", "/api/admin/reindex"), ("GET", "/api/admin/status")):
            response = test_client.request(method, path, headers=headers)
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "token" in response.json()["error"]
            assert ADMIN_TOKEN not in response.text
        status = test_client.get(
            "/api/admin/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ).json()
    assert status["last_reindex"] is None
    assert (settings.index_dir / POINTER).read_text() == pointer
    assert engine.data.build_name == pointer.strip()


def test_admin_token_is_compared_in_constant_time() -> None:
    source = (ROOT / "service" / "api" / "admin_routes.py").read_text(encoding="utf-8")
    assert "hmac.compare_digest" in source
    assert not re.search(r"token\s*[!=]=\s*expected|expected\s*[!=]=\s*token", source)
