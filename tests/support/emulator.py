"""Run localstripe (a Stripe emulator) as a child process for a test session.

localstripe pickles its whole store to the hard-coded path ``/tmp/localstripe.pickle`` on every
write; TMPDIR does not move it (checked: the path is a literal in ``localstripe.resources``).
So instead of the ``localstripe`` console script we run a tiny bootstrap with the venv's Python
that points ``Store.dump_to_disk`` / ``try_load_from_disk`` at a private temporary directory,
then calls localstripe's own ``start()``. It stays a child process because importing
``localstripe.server`` emits a DeprecationWarning (aiohttp), which ``filterwarnings = error``
would turn into a failure in-process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

import httpx

API_KEY = "sk_test_emulator"

# argv: [-c, <pickle dir>, --port, N, --from-scratch]
_BOOTSTRAP = """\
import os, pickle, sys, threading, time
from localstripe import resources

# Exit when the test process dies without calling stop() (killed pytest), not linger orphaned.
def _watch_parent(ppid=os.getppid()):
    while os.getppid() == ppid:
        time.sleep(0.5)
    os._exit(0)

threading.Thread(target=_watch_parent, daemon=True).start()

_path = os.path.join(sys.argv.pop(1), "localstripe.pickle")

def _dump(self):
    with open(_path, "wb") as f:
        pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

def _load(self):
    try:
        with open(_path, "rb") as f:
            old = pickle.load(f)
    except FileNotFoundError:
        return
    self.clear()
    self.update(old)

resources.Store.dump_to_disk = _dump
resources.Store.try_load_from_disk = _load

from localstripe.server import start

sys.argv[0] = "localstripe"
sys.exit(start())
"""


class EmulatorError(RuntimeError):
    """A helper call got a non-2xx answer; keeps status and JSON body for assertions."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"localstripe answered {status}: {body}")
        self.status = status
        self.body = body


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class StripeEmulator:
    def __init__(self, *, startup_timeout: float = 10.0) -> None:
        self.startup_timeout = startup_timeout
        self.port = 0
        self.base_url = ""
        self.tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self._http: httpx.Client | None = None

    @property
    def pickle_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "localstripe.pickle"

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

    # -- emulator control ------------------------------------------------------------------

    def reset(self) -> None:
        """Drop all objects; webhook registrations survive (they are not in the store)."""
        self._call("DELETE", "/_config/data", auth=False)

    def register_webhook(
        self, id: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        data: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            data["events"] = events
        self._call("POST", f"/_config/webhooks/{id}", json=data, auth=False)

    # -- what Stripe.js / the browser would do ---------------------------------------------

    def authenticate_payment_intent(
        self, pi_id: str, client_secret: str, success: bool = True
    ) -> dict[str, Any]:
        """Complete (or fail) a 3-D Secure challenge of a ``requires_action`` intent."""
        return self._call(
            "POST",
            f"/v1/payment_intents/{pi_id}/_authenticate",
            data={"client_secret": client_secret, "success": "true" if success else "false"},
        )

    def create_card_payment_method(self, number: str) -> str:
        pm = self._call(
            "POST",
            "/v1/payment_methods",
            data={
                "type": "card",
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
        )
        pm_id: str = pm["id"]
        return pm_id

    def confirm_setup_intent(self, seti_id: str, pm_id: str) -> dict[str, Any]:
        """Like ``stripe.confirmCardSetup``; a 3-D Secure card is approved by a second confirm.

        Raises EmulatorError (status 402, code card_declined) for cards declined at set-up.
        The emulator does not attach the PaymentMethod to the customer on success.
        """
        path = f"/v1/setup_intents/{seti_id}/confirm"
        seti = self._call("POST", path, data={"payment_method": pm_id})
        if seti["status"] == "requires_action":
            seti = self._call("POST", path, data={})
        return seti

    def retrieve_payment_intent(self, pi_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/payment_intents/{pi_id}")

    def list_payment_intents(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "100"}
        while True:
            page = self._call("GET", "/v1/payment_intents", params=params)
            result.extend(page["data"])
            if not page["has_more"]:
                return result
            params["starting_after"] = page["data"][-1]["id"]

    def _call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> dict[str, Any]:
        assert self._http is not None, "StripeEmulator not started"
        headers = {"Authorization": f"Bearer {API_KEY}"} if auth else {}
        response = self._http.request(method, path, headers=headers, **kwargs)
        body: dict[str, Any] = response.json() if response.content else {}
        if response.is_error:
            raise EmulatorError(response.status_code, body)
        return body
