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

    def pids(self) -> list[int]:
        """The server and its descendants (`--workers N` serves from child processes)."""
        parents: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue  # gone meanwhile
                parents.setdefault(ppid, []).append(int(entry.name))
        found = [self.proc.pid]
        for pid in found:
            found.extend(parents.get(pid, []))
        return found

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the process has had so far (summed over its
        worker processes when it has any)."""
        total_kb = 0
        for pid in self.pids():
            status = Path(f"/proc/{pid}/status").read_text()
            line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
            total_kb += int(line.split()[1])
        return total_kb / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far, all threads of the server and its workers."""
        ticks = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

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
