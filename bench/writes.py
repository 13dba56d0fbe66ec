"""The write path: reserve+capture pairs through GraphQL against the same writes in bare SQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import direct, seed, servers, wrk
from .stats import median_ratio, summary


def measure(
    graphql: servers.Server,
    data: seed.Seeded,
    *,
    database: Path,
    rounds: int,
    seconds: float,
    connections: int,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], float]:
    """Interleaved rounds of both; the figures and the median per-round ratio."""
    script = wrk.pairs_script(token=data.service_token)
    graphql_rates: list[float] = []
    direct_rates: list[float] = []
    for round_ in range(rounds):
        log(f"write round {round_ + 1} of {rounds}")
        # Fresh idempotency keys and references every run.
        run = uuid.uuid4().hex[:8]
        load = wrk.run(
            f"{graphql.base_url}/graphql",
            script,
            seconds=seconds,
            threads=connections,
            connections=connections,
            args=(run, data.writes.global_id),
        )
        if load.bad:
            raise RuntimeError(f"{load.bad} bad answers in the write run")
        graphql_rates.append(load.ok / load.seconds)
        direct_rates.append(
            asyncio.run(
                direct.pairs_per_second(str(database), data.writes.pk, seconds=seconds, run=run)
            )
        )
    figures = {
        "graphql_pairs_per_s": summary(graphql_rates, 1),
        "direct_pairs_per_s": summary(direct_rates, 1),
    }
    return figures, median_ratio(graphql_rates, direct_rates, 3)
