"""This machine and its processes: what it is, resident memory, CPU time, load average."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path

from service.evaluation.bench.config import BenchError
from service.evaluation.bench.results import Machine


def machine_info() -> Machine:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    versions: dict[str, str | None] = {}
    for name in ("torch", "onnxruntime", "faiss-cpu", "numpy", "sentence-transformers", "uvicorn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return Machine(
        cpu=cpu,
        cores=os.cpu_count(),
        memory_gb=memory_gb,
        platform=platform.platform(),
        python=platform.python_version(),
        versions=versions,
    )


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), from /proc, in MiB."""
    path = Path(f"/proc/{pid or 'self'}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS in {path}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [round(x, 2) for x in os.getloadavg()]
    return None
