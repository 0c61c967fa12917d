"""A server of our own, for the benchmark and the tests.

:class:`ServerProcess` runs ``python -m service serve`` (or another command that serves the
app) as a child process on 127.0.0.1 and a free port, waits for ``/readyz`` to answer 200 and
stops it; :func:`thread_server` runs an app with uvicorn in a thread of this process. Nothing
here imports pytest: a server that does not start raises :class:`ServerError`, with the end of
its log.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.config import Settings

HOST = "127.0.0.1"  # the only address these servers listen on


class ServerError(RuntimeError):
    """A server did not start (it exited, or was not ready in time). The message is one line
    ending with the last lines of the server's log; ``log`` holds more of it."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def is_ready(port: int, timeout: float = 1.0) -> bool:
    """Whether the server on ``port`` answers ``GET /readyz`` with 200."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(f"GET /readyz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            head = sock.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 200")


# -- settings -> environment of the server ------------------------------------------------------

_ENV_FIELDS = (
    "corpus_dir",
    "index_dir",
    "model",
    "device",
    "encoder_backend",
    "encoder_threads",
    "onnx_cache_dir",
    "query_batching",
    "query_batch_wait_ms",
    "query_batch_max",
    "query_batch_workers",
    "embed_context",
    "chunk_max_tokens",
    "chunk_overlap_sentences",
    "ann_threshold",
    "hnsw_m",
    "hnsw_ef_construction",
    "hnsw_ef_search",
    "abstain_threshold",
    "reader",
    "reader_path",
    "reader_threshold",
    "reader_max_candidates",
    "reader_threads",
    "metrics",
)


def server_env(settings: Settings) -> dict[str, str]:
    """This process's environment with ``settings`` as ``QA_*`` variables, for the benchmark's
    servers (no rate limit, host and port from the command line)."""
    env = dict(os.environ)
    for name in _ENV_FIELDS:
        value = getattr(settings, name, None)
        if value is None:
            env.pop(f"QA_{name.upper()}", None)
            continue
        if isinstance(value, Path):
            value = value.resolve()
        env[f"QA_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    env["QA_RATE_LIMIT_PER_MINUTE"] = "0"  # the benchmark is the only client
    env.pop("QA_HOST", None)
    env.pop("QA_PORT", None)
    return env


# -- a child process -------------------------------------------------------------------------


class ServerProcess:
    """``python -m service serve --host 127.0.0.1 --port PORT [args]`` as a child process, its
    output in ``log_path``. ``command`` replaces that command (it must serve on ``port``)."""

    def __init__(
        self,
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        args: Sequence[str] = (),
        command: Sequence[str] | None = None,
        port: int | None = None,
        timeout_s: float = 180.0,
        poll_s: float = 0.01,
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.command = list(command or [sys.executable, "-m", "service", "serve"])
        if command is None:
            self.command += ["--host", HOST, "--port", str(self.port), *args]
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._process: subprocess.Popen[bytes] | None = None
        self.ready_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise ServerError("the server is not running")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> float:
        """Launch and wait for /readyz 200; seconds from launch to ready. ServerError if the
        server exits first or is not ready in ``timeout_s`` (it is stopped then)."""
        with self.log_path.open("wb") as log:
            started = time.perf_counter()
            self._process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = started + self.timeout_s
        while time.perf_counter() < deadline:
            if self._process.poll() is not None:
                raise self._error(f"the server exited with status {self._process.returncode}")
            if is_ready(self.port):
                self.ready_seconds = time.perf_counter() - started
                return self.ready_seconds
            time.sleep(self.poll_s)
        self.stop()
        raise self._error(f"the server was not ready after {self.timeout_s:.0f} s")

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def _error(self, what: str) -> ServerError:
        log = self.log_tail()
        lines = log.strip().splitlines()
        return ServerError(f"{what}: {' | '.join(lines[-3:]) or '(no output)'}", log)

    def stop(self) -> None:
        """Terminate (SIGTERM, then SIGKILL after 10 s); nothing if it is not running."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# -- a thread ------------------------------------------------------------------------------------


@contextlib.contextmanager
def thread_server(app: Any, timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free port; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host=HOST, port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise ServerError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
