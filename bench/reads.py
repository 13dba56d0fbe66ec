"""The read path: GraphQL against the plain routes, interleaved rounds of wrk runs."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import servers, wrk
from .stats import summary

TRANSACTIONS = (
    "{ wallet { balanceCredits } transactions(first: 20) { edges { node { "
    "id kind amountCredits balanceAfterCredits createdAt } } } }"
)
AVAILABLE = "{ wallet { availableCredits } }"
# The GraphQL server under test, and (optionally) the same app from an earlier source tree.
GRAPHQL_PREFIXES = ("", "before_")


@dataclass(frozen=True)
class Scenario:
    server: servers.Server
    url: str
    script: str


@dataclass(frozen=True)
class Measured:
    load: wrk.Load
    cpu_ms: float  # the server's CPU time per request, every thread of the process


Round = Mapping[str, Measured]


def graphql(server: servers.Server, token: str, document: str) -> Scenario:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"query": document})
    script = wrk.request_script(method="POST", headers=headers, body=body)
    return Scenario(server, f"{server.base_url}/graphql", script)


def plain(server: servers.Server, token: str, path: str, *, prefix: str = "plain") -> Scenario:
    """A GET of the plain routes (`/plain/...`) or the raw baseline's (`/raw/...`)."""
    headers = {"Authorization": f"Bearer {token}"}
    script = wrk.request_script(method="GET", headers=headers, body=None)
    return Scenario(server, f"{server.base_url}/{prefix}/{path}", script)


def scenarios(
    *,
    graphql_servers: Mapping[str, servers.Server],
    plain_app: servers.Server,
    plain_bare: servers.Server | None,
    raw: servers.Server,
    workers_2: servers.Server | None,
    small_token: str,
    large_token: str,
    large: bool,
) -> dict[str, Scenario]:
    """Every variant by name; `graphql_servers` maps a name prefix to a GraphQL server.

    `plain_bare` (the bare plain routes), `workers_2` (GraphQL served by two processes) and
    `large` (the 1,000,000-entry organization) are measured where they are given."""
    found: dict[str, Scenario] = {}
    for prefix, server in graphql_servers.items():
        found |= {
            f"{prefix}graphql_transactions_1k": graphql(server, small_token, TRANSACTIONS),
            f"{prefix}graphql_available": graphql(server, small_token, AVAILABLE),
        }
        if large:
            found[f"{prefix}graphql_transactions_1m"] = graphql(server, large_token, TRANSACTIONS)
    found |= {
        "plain_app_transactions_1k": plain(plain_app, small_token, "transactions"),
        "plain_app_available": plain(plain_app, small_token, "available"),
        "raw_transactions_1k": plain(raw, small_token, "transactions", prefix="raw"),
        "raw_available": plain(raw, small_token, "available", prefix="raw"),
    }
    if plain_bare is not None:
        found |= {
            "plain_bare_transactions_1k": plain(plain_bare, small_token, "transactions"),
            "plain_bare_available": plain(plain_bare, small_token, "available"),
        }
    if large:
        found["plain_app_transactions_1m"] = plain(plain_app, large_token, "transactions")
    if workers_2 is not None:
        found["graphql_workers_2_transactions_1k"] = graphql(workers_2, small_token, TRANSACTIONS)
    return found


def measure(scenario: Scenario, *, seconds: float, connections: int) -> Measured:
    """One wrk run, and the server's CPU time (all its threads) per answered request."""
    cpu_before = scenario.server.cpu_seconds()
    result = wrk.run(
        scenario.url, scenario.script, seconds=seconds, threads=1, connections=connections
    )
    cpu = scenario.server.cpu_seconds() - cpu_before
    if result.bad:
        raise RuntimeError(f"{result.bad} bad answers from {scenario.url}")
    return Measured(result, cpu * 1000 / max(result.requests, 1))


def figures(rounds: list[Round]) -> dict[str, Any]:
    return {
        name: {
            "rps": summary([r[name].load.rps for r in rounds], 1),
            "p50_ms": summary([r[name].load.p50_ms for r in rounds], 3),
            "p99_ms": summary([r[name].load.p99_ms for r in rounds], 3),
            "server_cpu_ms_per_request": summary([r[name].cpu_ms for r in rounds], 3),
        }
        for name in rounds[0]
    }


def ratios(rounds: list[Round], prefix: str = "") -> dict[str, float]:
    """The read ratios of one GraphQL server (by its prefix): medians of per-round ratios,
    each one where its variants were measured."""
    measured = rounds[0]

    def rps(r: Round, name: str) -> float:
        return r[name].load.rps

    def cpu(r: Round, name: str) -> float:
        return r[name].cpu_ms

    def p99(r: Round, name: str) -> float:
        return r[name].load.p99_ms

    def p50(r: Round, name: str) -> float:
        return r[name].load.p50_ms

    txn, available, large = (
        f"{prefix}graphql_transactions_1k",
        f"{prefix}graphql_available",
        f"{prefix}graphql_transactions_1m",
    )
    # (ratio, figure, numerator variant, denominator variant)
    wanted: list[tuple[str, Callable[[Round, str], float], str, str]] = [
        ("read_path", rps, txn, "plain_app_transactions_1k"),
        ("read_path_bare", rps, txn, "plain_bare_transactions_1k"),
        ("read_path_cpu", cpu, "plain_app_transactions_1k", txn),
        ("read_path_raw", rps, txn, "raw_transactions_1k"),
        ("read_path_raw_p99", p99, txn, "raw_transactions_1k"),
        ("available", rps, available, "plain_app_available"),
        ("available_bare", rps, available, "plain_bare_available"),
        ("available_cpu", cpu, "plain_app_available", available),
        ("available_raw", rps, available, "raw_available"),
        ("available_raw_p99", p99, available, "raw_available"),
        ("scale", p50, large, txn),
    ]
    if not prefix:
        wanted.append(("workers_2_over_1", rps, "graphql_workers_2_transactions_1k", txn))
    return {
        key: round(statistics.median(figure(r, top) / figure(r, bottom) for r in rounds), 3)
        for key, figure, top, bottom in wanted
        if top in measured and bottom in measured
    }
