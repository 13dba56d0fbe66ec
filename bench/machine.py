"""What the figures were measured on: CPU, cores, load, Python, package versions, code state."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "strawberry-graphql",
    "graphql-core",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "sqlalchemy",
    "sqlmodel",
    "aiosqlite",
    "stripe",
    "localstripe",
)
ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else ""


def machine_info() -> dict[str, Any]:
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "wrk": _wrk_version(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "src_modified_since_commit": bool(_git("status", "--porcelain", "--", "src")),
    }


def schema_caches() -> dict[str, bool]:
    """Whether the served schema parses and validates each distinct document only once."""
    from gql_billing.graphql.schema import build_schema

    names = set()
    for extension in build_schema().extensions:
        target = getattr(extension, "func", extension)  # a functools.partial factory
        names.add(getattr(target, "__name__", type(target).__name__))
    # PreparedDocuments is both caches in one extension (graphql/limits.py).
    both = "PreparedDocuments" in names
    return {name: both or name in names for name in ("ParserCache", "ValidationCache")}
