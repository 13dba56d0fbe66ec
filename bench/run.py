"""`make bench`: seed, start the servers, drive load with wrk, write results.{md,json}.

Every figure is the median of `--rounds` runs, and the runs of all variants are interleaved
(round 1 of each, then round 2 of each, ...) so drift on a shared machine hits them alike.
Ratios are taken within a round, against a baseline measured minutes apart at most, and the
median of the per-round ratios is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from gql_billing.stripe_emulator import LocalStripe

from . import reads, report, seed, servers, topups, writes, wrk
from .machine import machine_info, schema_caches
from .reads import AVAILABLE, TRANSACTIONS
from .stats import summary
from .write_check import check_same_writes

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Backend:
    """One pass of the bench: its database and the folder its servers run in."""

    name: str  # "sqlite" or "postgresql"
    database_url: str
    workdir: Path


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.backend = Backend("sqlite", f"sqlite+aiosqlite:///{workdir / 'bench.db'}", workdir)
        self.started: list[servers.Server] = []
        self.stoppers: list[Callable[[], None]] = []

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- processes ---------------------------------------------------------------------------

    def env(self, stripe_base: str | None) -> dict[str, str]:
        env = {
            "GQL_BILLING_DATABASE_URL": self.backend.database_url,
            "GQL_BILLING_ENV": "production",
            # The per-token limit would refuse a load test within a second.
            "GQL_BILLING_RATE_LIMIT_REQUESTS": str(10**9),
            "GQL_BILLING_LOG_LEVEL": "INFO",
            # Its polling is not request work: it would only blur the per-request CPU figures.
            "GQL_BILLING_RUN_WORKER": "false",
        }
        if stripe_base is not None:
            env |= {"STRIPE_SECRET_KEY": topups.STRIPE_KEY, "STRIPE_API_BASE": stripe_base}
        return env

    def start_graphql(
        self, token: str, stripe_base: str, *, source: Path | None = None, workers: int = 1
    ) -> servers.Server:
        """`gql-billing serve`; with `source`, the app of another source tree (its `src`)."""

        def probe(client: httpx.Client, base_url: str) -> bool:
            answer = client.post(
                f"{base_url}/graphql",
                json={"query": AVAILABLE},
                headers={"Authorization": f"Bearer {token}"},
            )
            return answer.status_code == 200 and "errors" not in answer.json()

        env = self.env(stripe_base)
        command = [servers.venv_script("gql-billing"), "serve", "--workers", str(workers)]
        name = "graphql" if workers == 1 else f"graphql-workers-{workers}"
        if source is not None:
            env["PYTHONPATH"] = str(source)
            command = [sys.executable, "-m", "gql_billing.cli", "serve"]
            name = "graphql-before"
        server = servers.start(
            name,
            lambda port: [*command, "--port", str(port)],
            env=env,
            workdir=self.backend.workdir,
            probe=probe,
        )
        self.started.append(server)
        return server

    def start_baseline(self, token: str, module: str, name: str, *extra: str) -> servers.Server:
        """A baseline server: `bench.plain` (with its stack) or `bench.raw`."""
        path = "/raw/available" if module == "raw" else "/plain/available"

        def probe(client: httpx.Client, base_url: str) -> bool:
            answer = client.get(f"{base_url}{path}", headers={"Authorization": f"Bearer {token}"})
            return answer.status_code == 200

        server = servers.start(
            name,
            lambda port: [sys.executable, "-m", f"bench.{module}", "--port", str(port), *extra],
            env={**self.env(None), "PYTHONPATH": str(HERE.parent)},
            workdir=self.backend.workdir,
            probe=probe,
        )
        self.started.append(server)
        return server

    def stop_servers(self) -> None:
        for server in self.started:
            server.stop()
        self.started.clear()

    def stop_all(self) -> None:
        self.stop_servers()
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
            "postgresql_large_entries": None if args.no_postgres else args.pg_large,
            "stripe_latency_seconds": args.stripe_latency,
            "concurrent_topups": args.topups,
        }
        stripe_base = self.start_stripe()
        # SQLite first; its figures stay at the top level of results.json, as before.
        results |= self.backend_pass(stripe_base, large_entries=args.large)
        if not args.no_postgres:
            name = f"gql_billing_bench_{uuid.uuid4().hex[:10]}"
            asyncio.run(pg_admin(args.postgres_dsn, f'CREATE DATABASE "{name}"'))
            try:
                url = args.postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
                url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
                folder = self.workdir / "postgresql"
                folder.mkdir()
                self.backend = Backend("postgresql", url, folder)
                results["postgresql"] = self.backend_pass(stripe_base, large_entries=args.pg_large)
            finally:
                self.stop_servers()
                drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                asyncio.run(pg_admin(args.postgres_dsn, drop))
        return results

    def backend_pass(self, stripe_base: str, *, large_entries: int) -> dict[str, Any]:
        """Seed, start the servers, check the baselines' answers, then reads, writes and
        top-ups in interleaved rounds; the servers are stopped at the end."""
        args = self.args
        backend = self.backend
        results: dict[str, Any] = {}
        self.log(f"{backend.name}: migrating and seeding {large_entries:,} + {args.small:,}")
        started = time.perf_counter()
        subprocess.run(
            [servers.venv_script("gql-billing"), "migrate"],
            env={**os.environ, **self.env(None)},
            cwd=backend.workdir,
            check=True,
            capture_output=True,
        )
        data = seed.seed(
            backend.database_url, small_entries=args.small, large_entries=large_entries
        )
        results["seed_seconds"] = round(time.perf_counter() - started, 1)

        # Start-up medians on SQLite; one start each on PostgreSQL (the figures to quote are
        # SQLite's, and the bench's time is better spent on the interleaved rounds).
        startup_rounds = args.rounds if backend.name == "sqlite" else 1
        results["startup"] = self.startup(data, stripe_base, startup_rounds)
        up = {server.name: server for server in self.started}
        for server in (up["graphql"], up.get("graphql-before"), up.get("graphql-workers-2")):
            if server is not None:
                for baseline, prefix in ((up["plain-app"], "plain"), (up["raw"], "raw")):
                    self.check_same_json(server, baseline, prefix, data)
        # `scale` (the 1,000,000-entry organization) is measured on SQLite.
        large = backend.name == "sqlite" and large_entries > 0
        results["read"], read_ratios, before_ratios = self.read(up, data, large)
        results["peak_rss_mb"] = {s.name: round(s.peak_rss_mb(), 1) for s in self.started}
        check_same_writes(
            up["graphql"],
            up["raw"],
            service_token=data.service_token,
            org_global_id=data.writes.global_id,
            org_pk=data.writes.pk,
            database_url=backend.database_url,
        )
        self.log(f"{backend.name}: raw write routes leave the same rows as GraphQL")
        results["write"], write_ratios = writes.measure(
            up["graphql"],
            up["raw"],
            data,
            database_url=backend.database_url,
            rounds=args.rounds,
            seconds=args.seconds,
            connections=args.write_connections,
            log=self.log,
        )
        results["topups"], topup_ratios = topups.measure(
            up["graphql"],
            data,
            emulator_url=self.emulator_url,
            stripe_url=stripe_base,
            database_url=backend.database_url,
            rounds=args.rounds,
            concurrent=args.topups,
            log=self.log,
        )
        self.stop_servers()
        results["ratios"] = {**read_ratios, **write_ratios, **topup_ratios}
        if before_ratios is not None:
            results["ratios_before"] = before_ratios
            results["before_source"] = args.before_label or str(args.before_src)
        return results

    def startup(self, data: seed.Seeded, stripe_base: str, rounds: int) -> dict[str, Any]:
        """Spawn to first answered query, each server `rounds` times; the last ones stay up."""
        runs: dict[str, list[float]] = {}
        token = data.small.token
        for round_ in range(rounds):
            self.log(f"{self.backend.name}: start-up round {round_ + 1}")
            up = [
                self.start_graphql(token, stripe_base),
                self.start_baseline(token, "plain", "plain-app", "--stack", "app"),
                self.start_baseline(token, "raw", "raw"),
            ]
            if self.backend.name == "sqlite":
                up.append(self.start_baseline(token, "plain", "plain-bare", "--stack", "bare"))
            else:
                up.append(self.start_graphql(token, stripe_base, workers=2))
            if self.args.before_src is not None:
                up.append(self.start_graphql(token, stripe_base, source=self.args.before_src))
            for server in up:
                runs.setdefault(server.name, []).append(server.startup_seconds)
            if round_ < rounds - 1:
                self.stop_servers()
        return {name: summary(values, 3) for name, values in runs.items()}

    def check_same_json(
        self, graphql: servers.Server, baseline: servers.Server, prefix: str, data: seed.Seeded
    ) -> None:
        """The baseline answers what GraphQL answers, or the comparison means nothing."""
        with httpx.Client(timeout=10.0) as client:
            for org in (data.small, data.large):
                auth = {"Authorization": f"Bearer {org.token}"}
                for document, path in ((TRANSACTIONS, "transactions"), (AVAILABLE, "available")):
                    ours = client.post(
                        f"{graphql.base_url}/graphql", json={"query": document}, headers=auth
                    ).json()
                    theirs = client.get(f"{baseline.base_url}/{prefix}/{path}", headers=auth)
                    if ours != theirs.json():
                        raise RuntimeError(
                            f"{graphql.name} and {baseline.name} differ for {path} "
                            f"({self.backend.name}): {ours} {theirs.text}"
                        )
        self.log(f"{self.backend.name}: {baseline.name} answers the same JSON as {graphql.name}")

    def read(
        self, up: dict[str, servers.Server], data: seed.Seeded, large: bool
    ) -> tuple[dict[str, Any], dict[str, float], dict[str, float] | None]:
        graphql_servers = {"": up["graphql"]}
        if "graphql-before" in up:
            graphql_servers["before_"] = up["graphql-before"]
        scenarios = reads.scenarios(
            graphql_servers=graphql_servers,
            plain_app=up["plain-app"],
            plain_bare=up.get("plain-bare"),
            raw=up["raw"],
            workers_2=up.get("graphql-workers-2"),
            small_token=data.small.token,
            large_token=data.large.token,
            large=large,
        )
        connections = self.args.connections
        self.log(f"{self.backend.name}: warming up")
        for scenario in scenarios.values():
            reads.measure(scenario, seconds=1, connections=connections)
        rounds: list[reads.Round] = []
        names = list(scenarios)
        for round_ in range(self.args.rounds):
            self.log(f"{self.backend.name}: read round {round_ + 1} of {self.args.rounds}")
            # Rotated each round, so no variant always runs first (or right after another).
            shift = round_ * 3 % len(names)
            rounds.append(
                {
                    name: reads.measure(
                        scenarios[name], seconds=self.args.seconds, connections=connections
                    )
                    for name in names[shift:] + names[:shift]
                }
            )
        before = reads.ratios(rounds, "before_") if "before_" in graphql_servers else None
        return reads.figures(rounds), reads.ratios(rounds), before


async def pg_admin(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="per wrk run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections, reads")
    parser.add_argument("--write-connections", type=int, default=4)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--stripe-latency", type=float, default=0.1)
    parser.add_argument("--topups", type=int, default=32)
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--md", type=Path, default=HERE / "results.md")
    parser.add_argument(
        "--before-src",
        type=lambda value: Path(value).resolve(),
        default=None,
        help="also serve the app from this source tree (its src/ directory) and measure its "
        "read path in the same rounds: before/after figures from one run",
    )
    parser.add_argument(
        "--before-label",
        default=None,
        help="how results.md names the --before-src tree (default: its path)",
    )
    parser.add_argument(
        "--postgres-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server where the bench may create (and then drop) its database",
    )
    parser.add_argument(
        "--pg-large",
        type=int,
        default=100_000,
        help="ledger entries of the large organization on PostgreSQL (its answers are checked; "
        "`scale` is measured on SQLite)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="the SQLite pass only")
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
    report.write(results, json_path=args.json, md_path=args.md)
    print(report.ratios_line(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
