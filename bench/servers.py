"""Server processes under test: start, time to the first answer, peak RSS, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from gql_billing.stripe_emulator import free_port

STARTUP_TIMEOUT_SECONDS = 60.0


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    startup_seconds: float
    _log: IO[bytes] = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the process has had so far."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far, all its threads."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


Probe = Callable[[httpx.Client, str], bool]


def venv_script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def start(
    name: str,
    argv_for_port: Callable[[int], list[str]],
    *,
    env: dict[str, str],
    workdir: Path,
    probe: Probe,
) -> Server:
    """Spawn the server and wait until `probe` gets a right answer: start-up to first answer."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    log = log_path.open("ab")
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv_for_port(port),
        env={**os.environ, **env},
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=5.0) as client:
        while True:
            if proc.poll() is not None:
                log.close()
                raise RuntimeError(f"{name} exited early; see {log_path}")
            try:
                if probe(client, base_url):
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > STARTUP_TIMEOUT_SECONDS:
                proc.kill()
                log.close()
                raise RuntimeError(f"{name} did not answer; see {log_path}")
            time.sleep(0.005)
    return Server(name, port, proc, log_path, time.perf_counter() - started, log)
