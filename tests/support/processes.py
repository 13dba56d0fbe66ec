"""Several `gql-billing serve` (and `worker`) processes on one database, as at scale."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from support.app_server import free_port

CLI = str(Path(sys.executable).with_name("gql-billing"))


def gateway_env(
    database_url: str, stripe_base: str, secret_key: str, **extra: str
) -> dict[str, str]:
    return {
        **os.environ,
        "GQL_BILLING_DATABASE_URL": database_url,
        "STRIPE_SECRET_KEY": secret_key,
        "STRIPE_API_BASE": stripe_base,
        "GQL_BILLING_STRIPE_TIMEOUT_SECONDS": "5",
        **extra,
    }


# Each process's log (stderr) goes to a file of its own, never a pipe nobody reads (a full
# pipe would block the process mid-request); on a failure its tail is shown.
LOGS: dict[int, IO[bytes]] = {}
LOG_DIR = Path(tempfile.gettempdir()) / "gql-billing-test-processes"


def _start(args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    LOG_DIR.mkdir(exist_ok=True)
    log = open(LOG_DIR / f"{name}-{os.getpid()}.log", "w+b")  # noqa: SIM115
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    LOGS[proc.pid] = log
    return proc


def process_log(proc: subprocess.Popen[bytes]) -> str:
    """The tail of what a process started here wrote to stderr."""
    return _log_of(proc)


def _log_of(proc: subprocess.Popen[bytes]) -> str:
    log = LOGS.get(proc.pid)
    if log is None:
        return ""
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-20_000:]


@contextmanager
def servers(
    count: int, env: dict[str, str], *, start_timeout_seconds: float = 30
) -> Iterator[list[str]]:
    """`count` server processes on free ports; yields their GraphQL URLs."""
    ports = [free_port() for _ in range(count)]
    procs = [_start([CLI, "serve", "--port", str(port)], env, f"serve-{port}") for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, proc in zip(urls, procs, strict=True):
            _wait_ready(url, proc, start_timeout_seconds)
        yield [f"{url}/graphql" for url in urls]
    finally:
        _stop(procs)


@contextmanager
def workers(count: int, env: dict[str, str]) -> Iterator[None]:
    procs = [_start([CLI, "worker"], env, f"worker-{i}") for i in range(count)]
    try:
        yield
    finally:
        _stop(procs)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_seconds: float = 30) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {_log_of(proc)}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not start")


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log = LOGS.pop(proc.pid, None)
        if log is not None:
            log.close()
