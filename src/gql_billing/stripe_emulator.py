"""The `localstripe` Stripe emulator as a child process (for `gql-billing demo` and the tests).

localstripe pickles its whole store to the hard-coded path ``/tmp/localstripe.pickle`` on
every write (TMPDIR does not move it), which every instance on the machine would share, and
which makes every write slower as the store grows (and serialises concurrent requests
behind it). Every start here is from scratch and nothing reads the store back, so instead
of its console script we run a tiny bootstrap with this Python that keeps the store in
memory only, then calls localstripe's own ``start()``. It stays a child process: importing
``localstripe.server`` emits aiohttp deprecation warnings that do not belong in this
process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import httpx

# argv: [-c, <private dir>, --port, N, --from-scratch]
_BOOTSTRAP = """\
import os, sys, threading, time
from localstripe import resources

# Exit when the test process dies without calling stop() (killed pytest), not linger orphaned.
def _watch_parent(ppid=os.getppid()):
    while os.getppid() == ppid:
        time.sleep(0.5)
    os._exit(0)

threading.Thread(target=_watch_parent, daemon=True).start()

sys.argv.pop(1)  # the private folder: its log lives there, the store stays in memory

resources.Store.dump_to_disk = lambda self: None
resources.Store.try_load_from_disk = lambda self: None

from localstripe.server import start

sys.argv[0] = "localstripe"
sys.exit(start())
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalStripe:
    """Start, stop and reach one emulator; `base_url` has no /v1 suffix."""

    def __init__(self, *, startup_timeout: float = 10.0) -> None:
        self.startup_timeout = startup_timeout
        self.port = 0
        self.base_url = ""
        self.tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self._http: httpx.Client | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="localstripe-"))
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # Output goes to a file, not a pipe: the access log is written per request and a pipe
        # nobody reads would eventually block the emulator.
        self._log = (self.tmpdir / "localstripe.log").open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(self.tmpdir), *self._cli_args()],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.tmpdir,
        )
        self._http = httpx.Client(base_url=self.base_url, timeout=10.0)
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise

    def _cli_args(self) -> list[str]:
        return ["--port", str(self.port), "--from-scratch"]

    def _wait_until_up(self) -> None:
        assert self._proc is not None and self._http is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"localstripe exited early:\n{self.log_text()}")
            try:
                self._http.get("/js.stripe.com/v3/", timeout=0.5)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"localstripe not answering on {self.base_url}:\n{self.log_text()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def log_text(self) -> str:
        if self.tmpdir is None:
            return ""
        path = self.tmpdir / "localstripe.log"
        return path.read_text(errors="replace") if path.exists() else ""
