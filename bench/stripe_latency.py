"""The tests' fault proxy in front of the Stripe emulator, delaying every call: a process.

`tests/support/stripe_proxy.FaultProxy` (Stripe's idempotency semantics on top of
localstripe) in its "slow" mode, injected for every GET, POST and DELETE, so each Stripe call
waits `--seconds` before it is forwarded. It runs in its own process so its event loop never
competes with the load generator's.

Run: `python -m bench.stripe_latency --upstream http://127.0.0.1:PORT --seconds 0.1`; it
prints `READY <port>` and serves until terminated.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
ALWAYS = 10**9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--seconds", type=float, default=0.1)
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    from support.stripe_proxy import FaultProxy

    proxy = FaultProxy(args.upstream, slow_seconds=args.seconds)
    proxy.start()
    for method in ("GET", "POST", "DELETE"):
        proxy.inject("slow", method=method, count=ALWAYS)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print(f"READY {proxy.port}", flush=True)
    try:
        stopping.wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()


if __name__ == "__main__":
    main()
