"""`python -m bench.statements`: the CSV export and `balanceHistory` on a million-entry ledger.

For each backend (SQLite, and PostgreSQL when it answers): migrate a fresh database, make two
organizations through the services, insert their ledgers directly (SQLite `executemany`,
PostgreSQL `COPY`) with running totals that chain, serve the app with `gql-billing serve`,
then:

- export the 1,000,000 entries as CSV through the served app (a streamed GET), counting the
  rows received: rows/s, and the server's peak RSS (`VmHWM`) before and after the export;
- `balanceHistory` over 366 days, p50 of sequential requests: on the small organization
  (1,000 entries, all in the window) and on the large one (the same 1,000 entries in the
  window, 999,000 older ones before it) — the ratio says whether the cost follows the window
  or the ledger; and over the 366 days before that, where the large ledger's 999,000 entries
  all fall (the heaviest window there is).

Results go to bench/results_statements.json (`--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from gql_billing.db import postgres_dsn

from . import seed, servers
from .machine import machine_info

HERE = Path(__file__).resolve().parent
WINDOW_DAYS = 366
WINDOW_ENTRIES = 1_000
# The older entries come one every this many seconds before the window (about 347 days).
OLD_ENTRY_SPACING_SECONDS = 30
COLUMNS = (
    "organization_id",
    "wallet_id",
    "kind",
    "amount_credits",
    "balance_delta_credits",
    "available_delta_credits",
    "balance_after_credits",
    "available_after_credits",
    "description",
    "reference",
    "created_at",
)
HISTORY = """query H($from: Date!, $to: Date!) {
  balanceHistory(from: $from, to: $to) { date closingBalanceCredits creditedCredits debitedCredits }
}"""


def log(message: str) -> None:
    print(f"[statements {time.strftime('%H:%M:%S')}] {message}", flush=True)


def window(today: date) -> tuple[date, date]:
    """The 366 days up to yesterday: the range the charts ask for."""
    return today - timedelta(days=WINDOW_DAYS), today - timedelta(days=1)


def entries(
    organization_id: int, wallet_id: int, count: int, today: date
) -> Iterator[tuple[Any, ...]]:
    """`count` adjustments (+1000, +1000, -700, ...): the last 1,000 spread over the window,
    any others before it; every tenth description has a comma and quotes to escape."""
    first_day, _ = window(today)
    window_start = datetime.combine(first_day, datetime.min.time())
    step = timedelta(days=WINDOW_DAYS) / WINDOW_ENTRIES
    old = count - min(count, WINDOW_ENTRIES)
    balance = 0
    for i in range(count):
        delta = -700 if i % 3 == 2 else 1000
        balance += delta
        if i < old:
            at = window_start - timedelta(seconds=(old - i) * OLD_ENTRY_SPACING_SECONDS)
        else:
            at = window_start + step * (i - old) + step / 2
        text = f'Bench, "entry" {i}' if i % 10 == 0 else f"Bench entry {i}"
        yield (
            organization_id,
            wallet_id,
            "ADJUSTMENT",
            abs(delta),
            delta,
            delta,
            balance,
            balance,
            text,
            f"job-{i}",
            at,
        )


# -- databases ----------------------------------------------------------------------------------


def migrate(database_url: str) -> None:
    env = {**os.environ, "GQL_BILLING_DATABASE_URL": database_url}
    subprocess.run([servers.venv_script("gql-billing"), "migrate"], env=env, check=True)


def insert_sqlite(database_url: str, organization_id: int, count: int, today: date) -> None:
    conn = sqlite3.connect(seed.sqlite_path(database_url))
    try:
        (wallet_id,) = conn.execute(
            "SELECT id FROM wallets WHERE organization_id = ?", (organization_id,)
        ).fetchone()
        marks = ", ".join("?" * len(COLUMNS))
        sql = f"INSERT INTO ledger_entries ({', '.join(COLUMNS)}) VALUES ({marks})"
        rows = entries(organization_id, wallet_id, count, today)
        balance = 0
        with conn:
            while batch := [
                (*r[:-1], r[-1].isoformat(sep=" ", timespec="microseconds"))
                for _, r in zip(range(seed.BATCH), rows, strict=False)
            ]:
                conn.executemany(sql, batch)
                balance = batch[-1][6]
            conn.execute(
                "UPDATE wallets SET balance_credits = ? WHERE id = ?", (balance, wallet_id)
            )
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def insert_postgres(database_url: str, organization_id: int, count: int, today: date) -> None:
    conn = await asyncpg.connect(postgres_dsn(database_url))
    try:
        wallet_id = await conn.fetchval(
            "SELECT id FROM wallets WHERE organization_id = $1", organization_id
        )
        rows = entries(organization_id, wallet_id, count, today)
        await conn.copy_records_to_table("ledger_entries", records=rows, columns=list(COLUMNS))
        await conn.execute(
            "UPDATE wallets SET balance_credits = (SELECT balance_after_credits"
            " FROM ledger_entries WHERE wallet_id = $1 ORDER BY id DESC LIMIT 1) WHERE id = $1",
            wallet_id,
        )
        await conn.execute("VACUUM ANALYZE ledger_entries")
    finally:
        await conn.close()


async def create_postgres(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_postgres(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def drop_index(database_url: str, name: str) -> None:
    """For a before/after figure: the history without the (organization, created_at) index."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(seed.sqlite_path(database_url))
        conn.execute(f"DROP INDEX IF EXISTS {name}")
        conn.close()
        return

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_dsn(database_url))
        await conn.execute(f"DROP INDEX IF EXISTS {name}")
        await conn.close()

    asyncio.run(drop())


# -- measurements -------------------------------------------------------------------------------


def export(client: httpx.Client, base_url: str, token: str) -> dict[str, Any]:
    started = time.perf_counter()
    lines = received = 0
    with client.stream(
        "GET",
        f"{base_url}/v1/op/billing.credits.transactions",
        params={"format": "csv"},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        assert response.status_code == 200, response.read()
        for chunk in response.iter_raw():
            lines += chunk.count(b"\r\n")
            received += len(chunk)
    seconds = time.perf_counter() - started
    rows = lines - 1  # the header; no description in the bench holds a line break
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "megabytes": round(received / 2**20, 1),
    }


def history_p50_ms(
    client: httpx.Client, base_url: str, token: str, days: tuple[date, date], runs: int
) -> dict[str, Any]:
    variables = {"from": days[0].isoformat(), "to": days[1].isoformat()}
    headers = {"Authorization": f"Bearer {token}"}
    timings = []
    for _ in range(runs + 2):
        started = time.perf_counter()
        answer = client.post(
            f"{base_url}/graphql", json={"query": HISTORY, "variables": variables}, headers=headers
        )
        timings.append((time.perf_counter() - started) * 1000)
        body = answer.json()
        assert answer.status_code == 200 and "errors" not in body, body
        assert len(body["data"]["balanceHistory"]) == WINDOW_DAYS
    timings = timings[2:]  # the first ones warm caches up
    return {
        "p50_ms": round(statistics.median(timings), 2),
        "runs": runs,
        "closing_balance": body["data"]["balanceHistory"][-1]["closingBalanceCredits"],
    }


def measure(
    backend: str, database_url: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    migrate(database_url)
    if args.without_index:
        drop_index(database_url, "ix_ledger_org_created")
    orgs = asyncio.run(seed._services(database_url))
    started = time.perf_counter()
    for org, count in ((orgs.small, WINDOW_ENTRIES), (orgs.large, args.entries)):
        if backend == "sqlite":
            insert_sqlite(database_url, org.pk, count, today)
        else:
            asyncio.run(insert_postgres(database_url, org.pk, count, today))
    seeding_seconds = time.perf_counter() - started
    log(
        f"{backend}: seeded {args.entries:,} + {WINDOW_ENTRIES:,} entries"
        f" in {seeding_seconds:.1f} s"
    )

    def probe(client: httpx.Client, base_url: str) -> bool:
        return client.get(f"{base_url}/readyz").status_code == 200

    env = {
        "GQL_BILLING_DATABASE_URL": database_url,
        "GQL_BILLING_ENV": "production",
        "GQL_BILLING_RATE_LIMIT_REQUESTS": str(10**9),
        "GQL_BILLING_RUN_WORKER": "false",
    }
    server = servers.start(
        f"statements-{backend}",
        lambda port: [servers.venv_script("gql-billing"), "serve", "--port", str(port)],
        env=env,
        workdir=workdir,
        probe=probe,
    )
    try:
        with httpx.Client(timeout=600) as client:
            small_export = export(client, server.base_url, orgs.small.token)
            rss_before = server.peak_rss_mb()
            large_export = (
                export(client, server.base_url, orgs.large.token)
                if not args.history_only
                else {"rows": args.entries, "skipped": True}
            )
            rss_after = server.peak_rss_mb()
            if not args.history_only:
                log(
                    f"{backend}: exported {large_export['rows']:,} rows at"
                    f" {large_export['rows_per_second']:,}/s;"
                    f" peak RSS {rss_before:.0f} -> {rss_after:.0f} MB"
                )
            assert large_export["rows"] == args.entries and small_export["rows"] == WINDOW_ENTRIES
            days = window(today)
            older = (days[0] - timedelta(days=WINDOW_DAYS), days[0] - timedelta(days=1))
            small = history_p50_ms(client, server.base_url, orgs.small.token, days, args.runs)
            large = history_p50_ms(client, server.base_url, orgs.large.token, days, args.runs)
            dense = history_p50_ms(
                client, server.base_url, orgs.large.token, older, max(3, args.runs // 4)
            )
            log(
                f"{backend}: balanceHistory p50 {small['p50_ms']} ms (1k)"
                f" / {large['p50_ms']} ms (1M, same window)"
                f" / {dense['p50_ms']} ms (1M, 999k in window)"
            )
    finally:
        server.stop()
    return {
        "entries": args.entries,
        "seeding_seconds": round(seeding_seconds, 1),
        "csv_export": {
            **large_export,
            "server_peak_rss_mb_before": round(rss_before, 1),
            "server_peak_rss_mb_after": round(rss_after, 1),
        },
        "balance_history": {
            "days": WINDOW_DAYS,
            "small_ledger_1k": small,
            "large_ledger_1m_same_window": large,
            "ratio_1m_over_1k": round(large["p50_ms"] / small["p50_ms"], 2),
            "large_ledger_1m_dense_window": dense,
            "index": not args.without_index,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30, help="balanceHistory requests per p50")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--without-index", action="store_true", help="drop ix_ledger_org_created first"
    )
    parser.add_argument("--history-only", action="store_true", help="skip the 1M export")
    parser.add_argument("--json", type=Path, default=HERE / "results_statements.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine_info()}
    admin_dsn = os.environ.get(
        "GQL_BILLING_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"
    )
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as tmp:
        workdir = Path(tmp)
        if args.backend in ("sqlite", "both"):
            url = f"sqlite+aiosqlite:///{workdir / 'statements.db'}"
            results["sqlite"] = measure("sqlite", url, args, workdir)
        if args.backend in ("postgresql", "both"):
            name = f"bench_statements_{os.getpid()}"
            try:
                asyncio.run(create_postgres(admin_dsn, name))
            except (OSError, asyncpg.PostgresError) as exc:
                log(f"PostgreSQL not reachable ({exc}): skipped")
            else:
                try:
                    url = postgres_dsn(admin_dsn).rsplit("/", 1)[0] + f"/{name}"
                    url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
                    results["postgresql"] = measure("postgresql", url, args, workdir)
                finally:
                    asyncio.run(drop_postgres(admin_dsn, name))
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results in {args.json}")


if __name__ == "__main__":
    main()
