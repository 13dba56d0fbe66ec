"""The garbage collector, tuned for a long-running server.

Start-up builds a large object graph that lives as long as the process: the GraphQL schema,
SQLAlchemy's mappers and compiled-statement cache, every imported module. CPython's full
(generation 2) collection walks all of it, about 100 ms per pass on a 2-core machine, and
under load one ran every couple of seconds, each a stall for every request in flight.
`gc.freeze()` moves what exists at start-up out of the collector's view; a larger
generation-0 threshold makes the young collections (which also promote into the older ones)
rarer. Reference counting still frees almost everything at once; cycles are still collected.
"""

from __future__ import annotations

import gc

# Allocations (net of frees) between young collections; CPython's default is 700.
YOUNG_THRESHOLD = 10_000


def settle_after_startup() -> None:
    """Collect once, then freeze everything that survived start-up (call it once the app is
    built). Older thresholds keep their defaults."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
