"""results.json (everything) and results.md (the tables a reader quotes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOALS = {
    "read_path": ">= 0.8",
    "read_path_bare": "",
    "read_path_cpu": "",
    "available": "",
    "available_bare": "",
    "available_cpu": "",
    "read_path_raw": ">= 0.5",
    "read_path_raw_p99": "<= 3",
    "available_raw": ">= 0.5",
    "available_raw_p99": "<= 3",
    "scale": "<= 1.2",
    "write_path": "",
    "write_path_raw": ">= 0.33",
    "concurrent_topups": "< 3",
    "concurrent_topups_emulator_floor": "",
    "concurrent_topups_over_floor": "<= 1.5",
    "workers_2_over_1": "",
}
MEANING = {
    "read_path": "GraphQL req/s ÷ plain route req/s, same middleware (wallet + 20 transactions)",
    "read_path_bare": "the same against a bare Starlette route (no request-id/log middleware)",
    "read_path_cpu": "plain route's server CPU per request ÷ GraphQL's: the cost ratio, "
    "steadier than req/s when other work shares the machine",
    "available": "`{ wallet { availableCredits } }`: GraphQL ÷ plain route (same middleware)",
    "available_bare": "the same against the bare route",
    "available_cpu": "the same as a CPU-per-request ratio",
    "read_path_raw": "GraphQL req/s ÷ the raw route's (hand-written, driver only), same JSON",
    "read_path_raw_p99": "GraphQL p99 ÷ the raw route's p99 (wallet + 20 transactions)",
    "available_raw": "`{ wallet { availableCredits } }`: GraphQL req/s ÷ the raw route's",
    "available_raw_p99": "the same as a p99 ratio (GraphQL ÷ raw)",
    "scale": "GraphQL p50 with 1,000,000 ledger entries ÷ p50 with 1,000",
    "write_path": "GraphQL reserve+capture pairs/s ÷ the same writes over bare aiosqlite",
    "write_path_raw": "GraphQL reserve+capture pairs/s ÷ the raw HTTP routes' (same writes)",
    "concurrent_topups": "wall time of 32 concurrent top-ups ÷ one (100 ms Stripe latency)",
    "concurrent_topups_emulator_floor": "the same for 32 bare PaymentIntents sent straight to the "
    "proxy: what the emulator allows before any gateway code runs",
    "concurrent_topups_over_floor": "`concurrent_topups` ÷ `concurrent_topups_emulator_floor`, "
    "per round: what the gateway adds above the emulator's own limit",
    "workers_2_over_1": "GraphQL read path req/s, `serve --workers 2` ÷ one worker",
}
READ_LABELS = {
    "graphql_transactions_1k": "GraphQL, wallet + 20 transactions (1k entries)",
    "plain_app_transactions_1k": "plain route + app middleware, same JSON (1k)",
    "plain_bare_transactions_1k": "plain route, bare Starlette, same JSON (1k)",
    "graphql_transactions_1m": "GraphQL, wallet + 20 transactions (1M entries)",
    "plain_app_transactions_1m": "plain route + app middleware (1M)",
    "graphql_available": "GraphQL, `{ wallet { availableCredits } }`",
    "plain_app_available": "plain route + app middleware, available",
    "plain_bare_available": "plain route, bare Starlette, available",
    "raw_transactions_1k": "raw route (Starlette + driver, hand-written), same JSON (1k)",
    "raw_available": "raw route (Starlette + driver, hand-written), available",
    "graphql_workers_2_transactions_1k": "GraphQL, `serve --workers 2`, wallet + 20 transactions",
}


def ratios_line(results: dict[str, Any]) -> str:
    line = "ratios (SQLite): " + ", ".join(f"{k}={v}" for k, v in results["ratios"].items())
    if "postgresql" in results:
        pg = results["postgresql"]["ratios"]
        line += "\nratios (PostgreSQL): " + ", ".join(f"{k}={v}" for k, v in pg.items())
    return line


def write(results: dict[str, Any], *, json_path: Path, md_path: Path) -> None:
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown(results))


def _label(name: str) -> str:
    if name.startswith("before_"):
        return READ_LABELS.get(name.removeprefix("before_"), name) + " — **before**"
    return READ_LABELS.get(name, name)


def _fmt_runs(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    s = results["settings"]
    caches = ", ".join(f"{k} {'on' if v else 'OFF'}" for k, v in results["schema_caches"].items())
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    out = [
        "# Benchmark results",
        "",
        f"Written by `make bench` ({results['bench_seconds']:.0f} s) at {m['measured_at']}. "
        "See [README.md](README.md) for what each figure means.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, load average at start "
        f"{', '.join(str(x) for x in m['load_average_at_start'])}; {m['platform']}",
        f"- Python {m['python']}; {packages}; {m['wrk']}",
        f"- Code: commit {m['git_commit']}"
        + (" plus uncommitted changes in src/" if m["src_modified_since_commit"] else ""),
        f"- Schema: {caches}; env=production; one uvicorn worker per server unless named",
        f"- Every figure: median of {s['rounds']} interleaved runs of {s['seconds_per_run']:g} s; "
        f"reads with wrk 1 thread × {s['read_connections']} connections, writes with "
        f"{s['write_connections']} connections; ratios are the median of per-round ratios.",
        "",
    ]
    out += _section(results, s, "SQLite", level="##")
    if "postgresql" in results:
        out += _section(results["postgresql"], s, "PostgreSQL", level="##")
    return "\n".join(out)


def _section(results: dict[str, Any], s: dict[str, Any], backend: str, *, level: str) -> list[str]:
    before = results.get("ratios_before")
    sub = level + "#"
    out = [f"{level} {backend}", "", f"{sub} Ratios", ""]
    header = "| ratio | measured | goal | meaning |"
    rule = "|---|---|---|---|"
    if before is not None:
        header = "| ratio | before | after | goal | meaning |"
        rule = "|---|---|---|---|---|"
    out += [header, rule]
    for key, value in results["ratios"].items():
        cells = [f"`{key}`"]
        if before is not None:
            cells.append(str(before.get(key, "—")))
        cells += [f"**{value}**", GOALS.get(key, ""), MEANING.get(key, "")]
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        f"{sub} Read path",
        "",
        "| variant | req/s | p50 ms | p99 ms | server CPU ms/req | req/s per run |",
        "|---|---|---|---|---|---|",
    ]
    for name, figures in results["read"].items():
        out.append(
            f"| {_label(name)} | {figures['rps']['median']:g} | "
            f"{figures['p50_ms']['median']:g} | {figures['p99_ms']['median']:g} | "
            f"{figures['server_cpu_ms_per_request']['median']:g} | "
            f"{_fmt_runs(figures['rps']['runs'])} |"
        )
    if before is not None:
        out += [
            "",
            f"**before**: the same app served from {results['before_source']}, measured in "
            "the same rounds against the same baselines.",
        ]
    w = results["write"]
    t = results["topups"]
    many_key = next(k for k in t if k.startswith("concurrent_"))
    floor_key = next(k for k in t if k.startswith("emulator_concurrent_"))
    out += [
        "",
        f"{sub} Write path (reserveCredits + captureReservation)",
        "",
        "| variant | pairs/s | per run |",
        "|---|---|---|",
        f"| GraphQL over HTTP | {w['graphql_pairs_per_s']['median']:g} | "
        f"{_fmt_runs(w['graphql_pairs_per_s']['runs'])} |",
        f"| raw HTTP routes (Starlette + driver, hand-written) | "
        f"{w['raw_pairs_per_s']['median']:g} | {_fmt_runs(w['raw_pairs_per_s']['runs'])} |",
    ]
    if "direct_pairs_per_s" in w:
        out.append(
            f"| the same writes, bare aiosqlite, one process | "
            f"{w['direct_pairs_per_s']['median']:g} | "
            f"{_fmt_runs(w['direct_pairs_per_s']['runs'])} |"
        )
    out += [
        "",
        f"{sub} Top-ups ({s['stripe_latency_seconds'] * 1000:g} ms injected on every Stripe call)",
        "",
        "| variant | wall s | per run |",
        "|---|---|---|",
        f"| one top-up | {t['one_s']['median']:g} | {_fmt_runs(t['one_s']['runs'])} |",
        f"| {s['concurrent_topups']} concurrent top-ups | {t[many_key]['median']:g} | "
        f"{_fmt_runs(t[many_key]['runs'])} |",
        f"| one bare PaymentIntent (emulator floor) | {t['emulator_one_s']['median']:g} | "
        f"{_fmt_runs(t['emulator_one_s']['runs'])} |",
        f"| {s['concurrent_topups']} concurrent bare PaymentIntents | "
        f"{t[floor_key]['median']:g} | {_fmt_runs(t[floor_key]['runs'])} |",
        "",
        f"{sub} Memory and start-up",
        "",
        "| server | peak RSS MB (after the read load) | start-up to first answer, s | runs |",
        "|---|---|---|---|",
    ]
    for name, startup in results["startup"].items():
        rss = results["peak_rss_mb"].get(name, "—")
        out.append(f"| {name} | {rss} | {startup['median']:g} | {_fmt_runs(startup['runs'])} |")
    large = s["large_entries"] if backend == "SQLite" else s.get("postgresql_large_entries")
    out += [
        "",
        f"Seeding ({large:,} + {s['small_entries']:,} entries, migrations "
        f"included): {results['seed_seconds']:g} s.",
        "",
    ]
    return out
