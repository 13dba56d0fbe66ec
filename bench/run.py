"""`make bench`: seed, start the servers, drive load with wrk, write results.{md,json}.

Every figure is the median of `--rounds` runs, and the runs of all variants are interleaved
(round 1 of each, then round 2 of each, ...) so drift on a shared machine hits them alike.
Ratios are taken within a round, against a baseline measured minutes apart at most, and the
median of the per-round ratios is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gql_billing.stripe_emulator import LocalStripe

from . import direct, report, seed, servers, topups, wrk
from .machine import machine_info, schema_caches

HERE = Path(__file__).resolve().parent

TRANSACTIONS = (
    "{ wallet { balanceCredits } transactions(first: 20) { edges { node { "
    "id kind amountCredits balanceAfterCredits createdAt } } } }"
)
AVAILABLE = "{ wallet { availableCredits } }"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        self.started: list[servers.Server] = []
        self.stoppers: list[Callable[[], None]] = []

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- processes ---------------------------------------------------------------------------

    def env(self, stripe_base: str | None) -> dict[str, str]:
        env = {
            "GQL_BILLING_DATABASE_URL": self.database_url,
            "GQL_BILLING_ENV": "production",
            # The per-token limit would refuse a load test within a second.
            "GQL_BILLING_RATE_LIMIT_REQUESTS": str(10**9),
            "GQL_BILLING_LOG_LEVEL": "INFO",
        }
        if stripe_base is not None:
            env |= {"STRIPE_SECRET_KEY": topups.STRIPE_KEY, "STRIPE_API_BASE": stripe_base}
        return env

    def start_graphql(self, token: str, stripe_base: str) -> servers.Server:
        def probe(client: httpx.Client, base_url: str) -> bool:
            answer = client.post(
                f"{base_url}/graphql",
                json={"query": AVAILABLE},
                headers={"Authorization": f"Bearer {token}"},
            )
            return answer.status_code == 200 and "errors" not in answer.json()

        server = servers.start(
            "graphql",
            lambda port: [servers.venv_script("gql-billing"), "serve", "--port", str(port)],
            env=self.env(stripe_base),
            workdir=self.workdir,
            probe=probe,
        )
        self.started.append(server)
        return server

    def start_plain(self, token: str, stack: str) -> servers.Server:
        def probe(client: httpx.Client, base_url: str) -> bool:
            answer = client.get(
                f"{base_url}/plain/available", headers={"Authorization": f"Bearer {token}"}
            )
            return answer.status_code == 200

        server = servers.start(
            f"plain-{stack}",
            lambda port: [
                sys.executable,
                "-m",
                "bench.plain",
                "--port",
                str(port),
                "--stack",
                stack,
            ],
            env={**self.env(None), "PYTHONPATH": str(HERE.parent)},
            workdir=self.workdir,
            probe=probe,
        )
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()
        self.started.clear()
        for stop in reversed(self.stoppers):
            stop()
        self.stoppers.clear()

    def start_stripe(self) -> str:
        """The emulator behind the latency proxy; returns the proxy's base URL."""
        emulator = LocalStripe()
        emulator.start()
        self.stoppers.append(emulator.stop)
        self.emulator_url = emulator.base_url
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.stripe_latency",
                "--upstream",
                emulator.base_url,
                "--seconds",
                str(self.args.stripe_latency),
            ],
            cwd=HERE.parent,
            stdout=subprocess.PIPE,
            text=True,
        )

        def stop_proxy() -> None:
            proxy.terminate()
            proxy.wait(timeout=10)

        self.stoppers.append(stop_proxy)
        assert proxy.stdout is not None
        ready = proxy.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError("the latency proxy did not start")
        return f"http://127.0.0.1:{ready[1]}"

    # -- phases ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        results: dict[str, Any] = {"machine": machine_info(), "schema_caches": schema_caches()}
        results["settings"] = {
            "rounds": args.rounds,
            "seconds_per_run": args.seconds,
            "read_connections": args.connections,
            "write_connections": args.write_connections,
            "small_entries": args.small,
            "large_entries": args.large,
            "stripe_latency_seconds": args.stripe_latency,
            "concurrent_topups": args.topups,
        }
        self.log(f"migrating and seeding {args.large:,} + {args.small:,} ledger entries")
        started = time.perf_counter()
        subprocess.run(
            [servers.venv_script("gql-billing"), "migrate"],
            env={**os.environ, **self.env(None)},
            cwd=self.workdir,
            check=True,
            capture_output=True,
        )
        data = seed.seed(self.database_url, small_entries=args.small, large_entries=args.large)
        results["seed_seconds"] = round(time.perf_counter() - started, 1)

        stripe_base = self.start_stripe()
        results["startup"] = self.startup(data, stripe_base)
        graphql, plain, bare = self.started
        self.check_same_json(graphql, plain, data)
        results["read"], read_ratios = self.read(graphql, plain, bare, data)
        results["peak_rss_mb"] = {s.name: round(s.peak_rss_mb(), 1) for s in self.started}
        results["write"], write_ratio = self.write(graphql, data)
        results["topups"], topup_ratio = self.topups(graphql, data)
        results["ratios"] = {**read_ratios, "write_path": write_ratio, **topup_ratio}
        return results

    def startup(self, data: seed.Seeded, stripe_base: str) -> dict[str, Any]:
        """Spawn to first answered query, each server `rounds` times; the last ones stay up."""
        runs: dict[str, list[float]] = {"graphql": [], "plain-app": [], "plain-bare": []}
        for round_ in range(self.args.rounds):
            self.log(f"start-up round {round_ + 1}")
            up = [
                self.start_graphql(data.small.token, stripe_base),
                self.start_plain(data.small.token, "app"),
                self.start_plain(data.small.token, "bare"),
            ]
            for server in up:
                runs[server.name].append(server.startup_seconds)
            if round_ < self.args.rounds - 1:
                for server in up:
                    server.stop()
                self.started.clear()
        return {name: summary(values, 3) for name, values in runs.items()}

    def check_same_json(
        self, graphql: servers.Server, plain: servers.Server, data: seed.Seeded
    ) -> None:
        """The baseline answers what GraphQL answers, or the comparison means nothing."""
        with httpx.Client(timeout=10.0) as client:
            for org in (data.small, data.large):
                auth = {"Authorization": f"Bearer {org.token}"}
                for document, path in ((TRANSACTIONS, "transactions"), (AVAILABLE, "available")):
                    ours = client.post(
                        f"{graphql.base_url}/graphql", json={"query": document}, headers=auth
                    ).json()
                    theirs = client.get(f"{plain.base_url}/plain/{path}", headers=auth).json()
                    if ours != theirs:
                        raise RuntimeError(f"GraphQL and plain differ for {path}: {ours} {theirs}")

    def read(
        self,
        graphql: servers.Server,
        plain: servers.Server,
        bare: servers.Server,
        data: seed.Seeded,
    ) -> tuple[dict[str, Any], dict[str, float]]:
        def gql(server: servers.Server, token: str, document: str) -> tuple[str, str]:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            body = json.dumps({"query": document})
            url = f"{server.base_url}/graphql"
            return url, wrk.request_script(method="POST", headers=headers, body=body)

        def rest(server: servers.Server, token: str, path: str) -> tuple[str, str]:
            headers = {"Authorization": f"Bearer {token}"}
            url = f"{server.base_url}/plain/{path}"
            return url, wrk.request_script(method="GET", headers=headers, body=None)

        small, large = data.small.token, data.large.token
        scenarios = {
            "graphql_transactions_1k": gql(graphql, small, TRANSACTIONS),
            "plain_app_transactions_1k": rest(plain, small, "transactions"),
            "plain_bare_transactions_1k": rest(bare, small, "transactions"),
            "graphql_available": gql(graphql, small, AVAILABLE),
            "plain_app_available": rest(plain, small, "available"),
            "plain_bare_available": rest(bare, small, "available"),
            "graphql_transactions_1m": gql(graphql, large, TRANSACTIONS),
            "plain_app_transactions_1m": rest(plain, large, "transactions"),
        }
        self.log("warming up")
        for url, script in scenarios.values():
            self.load(url, script, seconds=1)
        rounds: list[dict[str, wrk.Load]] = []
        names = list(scenarios)
        for round_ in range(self.args.rounds):
            self.log(f"read round {round_ + 1} of {self.args.rounds}")
            # Rotated each round, so no variant always runs first (or right after another).
            shift = round_ * 3 % len(names)
            loads: dict[str, wrk.Load] = {}
            for name in names[shift:] + names[:shift]:
                url, script = scenarios[name]
                loads[name] = self.load(url, script, seconds=self.args.seconds)
            rounds.append(loads)
        figures = {
            name: {
                "rps": summary([r[name].rps for r in rounds], 1),
                "p50_ms": summary([r[name].p50_ms for r in rounds], 3),
                "p99_ms": summary([r[name].p99_ms for r in rounds], 3),
            }
            for name in names
        }

        def ratio(get: Callable[[dict[str, wrk.Load]], float]) -> float:
            return round(statistics.median(get(r) for r in rounds), 3)

        ratios = {
            "read_path": ratio(
                lambda r: r["graphql_transactions_1k"].rps / r["plain_app_transactions_1k"].rps
            ),
            "read_path_bare": ratio(
                lambda r: r["graphql_transactions_1k"].rps / r["plain_bare_transactions_1k"].rps
            ),
            "available": ratio(
                lambda r: r["graphql_available"].rps / r["plain_app_available"].rps
            ),
            "available_bare": ratio(
                lambda r: r["graphql_available"].rps / r["plain_bare_available"].rps
            ),
            "scale": ratio(
                lambda r: r["graphql_transactions_1m"].p50_ms / r["graphql_transactions_1k"].p50_ms
            ),
        }
        return figures, ratios

    def load(self, url: str, script: str, *, seconds: float) -> wrk.Load:
        result = wrk.run(
            url, script, seconds=seconds, threads=1, connections=self.args.connections
        )
        if result.bad:
            raise RuntimeError(f"{result.bad} bad answers from {url}")
        return result

    def write(self, graphql: servers.Server, data: seed.Seeded) -> tuple[dict[str, Any], float]:
        script = wrk.pairs_script(token=data.service_token)
        connections = self.args.write_connections
        path = str(seed.sqlite_path(self.database_url))
        graphql_rates: list[float] = []
        direct_rates: list[float] = []
        for round_ in range(self.args.rounds):
            self.log(f"write round {round_ + 1} of {self.args.rounds}")
            run = uuid.uuid4().hex[:8]
            load = wrk.run(
                f"{graphql.base_url}/graphql",
                script,
                seconds=self.args.seconds,
                threads=connections,
                connections=connections,
                args=(run, data.writes.global_id),
            )
            if load.bad:
                raise RuntimeError(f"{load.bad} bad answers in the write run")
            graphql_rates.append(load.ok / load.seconds)
            direct_rates.append(
                asyncio.run(
                    direct.pairs_per_second(
                        path, data.writes.pk, seconds=self.args.seconds, run=run
                    )
                )
            )
        ratios = [g / d for g, d in zip(graphql_rates, direct_rates, strict=True)]
        figures = {
            "graphql_pairs_per_s": summary(graphql_rates, 1),
            "direct_pairs_per_s": summary(direct_rates, 1),
        }
        return figures, round(statistics.median(ratios), 3)

    def topups(
        self, graphql: servers.Server, data: seed.Seeded
    ) -> tuple[dict[str, Any], dict[str, float]]:
        url = f"{graphql.base_url}/graphql"
        topups.save_card(url, data.topups.token, self.emulator_url)
        one: list[float] = []
        many: list[float] = []
        for round_ in range(self.args.rounds):
            self.log(f"top-up round {round_ + 1} of {self.args.rounds}")
            one.append(asyncio.run(topups.wall_seconds(url, data.topups.token, 1)))
            many.append(asyncio.run(topups.wall_seconds(url, data.topups.token, self.args.topups)))
        ratios = [m / o for m, o in zip(many, one, strict=True)]
        figures = {"one_s": summary(one, 3), f"concurrent_{self.args.topups}_s": summary(many, 3)}
        return figures, {"concurrent_topups": round(statistics.median(ratios), 2)}


def summary(values: list[float], digits: int) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections, reads")
    parser.add_argument("--write-connections", type=int, default=4)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--stripe-latency", type=float, default=0.1)
    parser.add_argument("--topups", type=int, default=32)
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--md", type=Path, default=HERE / "results.md")
    parser.add_argument(
        "--before",
        type=Path,
        default=HERE / "before.json",
        help="results of an earlier code state, shown next to these (if the file exists)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 3:
        print("note: fewer than 3 rounds; the medians are not the ones to quote", flush=True)
    wrk.require_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="gql-billing-bench-"))
    bench = Bench(args, workdir)
    started = time.perf_counter()
    try:
        results = bench.run()
    finally:
        bench.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    before = json.loads(args.before.read_text()) if args.before.exists() else None
    report.write(results, before, json_path=args.json, md_path=args.md)
    print(report.ratios_line(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
