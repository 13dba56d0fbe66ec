"""`make bench`: seed, start the servers, drive load with wrk, write results.{md,json}.

Every figure is the median of `--rounds` runs, and the runs of all variants are interleaved
(round 1 of each, then round 2 of each, ...) so drift on a shared machine hits them alike.
Ratios are taken within a round, against a baseline measured minutes apart at most, and the
median of the per-round ratios is reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gql_billing.stripe_emulator import LocalStripe

from . import reads, report, seed, servers, topups, writes, wrk
from .machine import machine_info, schema_caches
from .reads import AVAILABLE, TRANSACTIONS
from .stats import summary

HERE = Path(__file__).resolve().parent


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
            # Its polling is not request work: it would only blur the per-request CPU figures.
            "GQL_BILLING_RUN_WORKER": "false",
        }
        if stripe_base is not None:
            env |= {"STRIPE_SECRET_KEY": topups.STRIPE_KEY, "STRIPE_API_BASE": stripe_base}
        return env

    def start_graphql(
        self, token: str, stripe_base: str, *, source: Path | None = None
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
        command = [servers.venv_script("gql-billing"), "serve"]
        if source is not None:
            env["PYTHONPATH"] = str(source)
            command = [sys.executable, "-m", "gql_billing.cli", "serve"]
        server = servers.start(
            "graphql" if source is None else "graphql-before",
            lambda port: [*command, "--port", str(port)],
            env=env,
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
        up = {server.name: server for server in self.started}
        graphql = up["graphql"]
        for server in (graphql, up.get("graphql-before")):
            if server is not None:
                self.check_same_json(server, up["plain-app"], data)
        results["read"], read_ratios, before_ratios = self.read(up, data)
        results["peak_rss_mb"] = {s.name: round(s.peak_rss_mb(), 1) for s in self.started}
        results["write"], write_ratio = writes.measure(
            graphql,
            data,
            database=seed.sqlite_path(self.database_url),
            rounds=args.rounds,
            seconds=args.seconds,
            connections=args.write_connections,
            log=self.log,
        )
        results["topups"], topup_ratio = topups.measure(
            graphql,
            data,
            emulator_url=self.emulator_url,
            stripe_url=stripe_base,
            database_url=self.database_url,
            rounds=args.rounds,
            concurrent=args.topups,
            log=self.log,
        )
        results["ratios"] = {**read_ratios, "write_path": write_ratio, **topup_ratio}
        if before_ratios is not None:
            results["ratios_before"] = before_ratios
            results["before_source"] = args.before_label or str(args.before_src)
        return results

    def startup(self, data: seed.Seeded, stripe_base: str) -> dict[str, Any]:
        """Spawn to first answered query, each server `rounds` times; the last ones stay up."""
        runs: dict[str, list[float]] = {}
        for round_ in range(self.args.rounds):
            self.log(f"start-up round {round_ + 1}")
            up = [
                self.start_graphql(data.small.token, stripe_base),
                self.start_plain(data.small.token, "app"),
                self.start_plain(data.small.token, "bare"),
            ]
            if self.args.before_src is not None:
                token = data.small.token
                up.append(self.start_graphql(token, stripe_base, source=self.args.before_src))
            for server in up:
                runs.setdefault(server.name, []).append(server.startup_seconds)
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
        self, up: dict[str, servers.Server], data: seed.Seeded
    ) -> tuple[dict[str, Any], dict[str, float], dict[str, float] | None]:
        graphql_servers = {"": up["graphql"]}
        if "graphql-before" in up:
            graphql_servers["before_"] = up["graphql-before"]
        scenarios = reads.scenarios(
            graphql_servers=graphql_servers,
            plain_app=up["plain-app"],
            plain_bare=up["plain-bare"],
            small_token=data.small.token,
            large_token=data.large.token,
        )
        connections = self.args.connections
        self.log("warming up")
        for scenario in scenarios.values():
            reads.measure(scenario, seconds=1, connections=connections)
        rounds: list[reads.Round] = []
        names = list(scenarios)
        for round_ in range(self.args.rounds):
            self.log(f"read round {round_ + 1} of {self.args.rounds}")
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
