"""The write path: reserve+capture pairs through GraphQL, through the raw baseline's HTTP
routes, and (SQLite) as a bare loop of the same SQL in one process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from gql_billing.db import is_sqlite

from . import direct, seed, servers, wrk
from .stats import median_ratio, summary


def _pairs(
    server: servers.Server, script: str, org: str, *, seconds: float, connections: int
) -> float:
    # Fresh idempotency keys and references every run.
    load = wrk.run(
        server.base_url,
        script,
        seconds=seconds,
        threads=connections,
        connections=connections,
        args=(uuid.uuid4().hex[:8], org),
    )
    if load.bad:
        raise RuntimeError(f"{load.bad} bad answers in the write run against {server.name}")
    return load.ok / load.seconds


def _direct(database_url: str, organization_id: int, seconds: float) -> float:
    path = str(seed.sqlite_path(database_url))
    run = uuid.uuid4().hex[:8]
    return asyncio.run(direct.pairs_per_second(path, organization_id, seconds=seconds, run=run))


def measure(
    graphql: servers.Server,
    raw: servers.Server,
    data: seed.Seeded,
    *,
    database_url: str,
    rounds: int,
    seconds: float,
    connections: int,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, float]]:
    """Interleaved rounds of each; the figures and the median per-round ratios."""
    graphql_script = wrk.pairs_script(token=data.service_token)
    raw_script = wrk.pairs_script(token=data.service_token, raw=True)
    org = data.writes.global_id
    rates: dict[str, list[float]] = {"graphql": [], "raw": [], "direct": []}
    sqlite = is_sqlite(database_url)
    for round_ in range(rounds):
        log(f"write round {round_ + 1} of {rounds}")
        runs: list[tuple[str, Callable[[], float]]] = [
            (
                "graphql",
                lambda: _pairs(
                    graphql, graphql_script, org, seconds=seconds, connections=connections
                ),
            ),
            (
                "raw",
                lambda: _pairs(raw, raw_script, org, seconds=seconds, connections=connections),
            ),
        ]
        if sqlite:
            runs.append(("direct", partial(_direct, database_url, data.writes.pk, seconds)))
        # Rotated each round, so neither always runs first.
        shift = round_ % len(runs)
        for name, measure_one in runs[shift:] + runs[:shift]:
            rates[name].append(measure_one())
    figures = {
        "graphql_pairs_per_s": summary(rates["graphql"], 1),
        "raw_pairs_per_s": summary(rates["raw"], 1),
    }
    ratios = {"write_path_raw": median_ratio(rates["graphql"], rates["raw"], 3)}
    if sqlite:
        figures["direct_pairs_per_s"] = summary(rates["direct"], 1)
        ratios = {"write_path": median_ratio(rates["graphql"], rates["direct"], 3)} | ratios
    return figures, ratios
