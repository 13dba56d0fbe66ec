"""results.json (everything) and results.md (the tables a reader quotes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOALS = {
    "read_path": ">= 0.8",
    "read_path_bare": "",
    "available": "",
    "available_bare": "",
    "scale": "<= 1.2",
    "write_path": "",
    "concurrent_topups": "< 3",
}
MEANING = {
    "read_path": "GraphQL req/s ÷ plain route req/s, same middleware (wallet + 20 transactions)",
    "read_path_bare": "the same against a bare Starlette route (no request-id/log middleware)",
    "available": "`{ wallet { availableCredits } }`: GraphQL ÷ plain route (same middleware)",
    "available_bare": "the same against the bare route",
    "scale": "GraphQL p50 with 1,000,000 ledger entries ÷ p50 with 1,000",
    "write_path": "GraphQL reserve+capture pairs/s ÷ the same writes over bare aiosqlite",
    "concurrent_topups": "wall time of 32 concurrent top-ups ÷ one (100 ms Stripe latency)",
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
}


def ratios_line(results: dict[str, Any]) -> str:
    return "ratios: " + ", ".join(f"{k}={v}" for k, v in results["ratios"].items())


def write(
    results: dict[str, Any], before: dict[str, Any] | None, *, json_path: Path, md_path: Path
) -> None:
    if before is not None:
        results["before"] = {
            "note": "the same bench on the code before the read-path changes",
            "measured_at": before["machine"]["measured_at"],
            "ratios": before["ratios"],
            "read": before["read"],
            "peak_rss_mb": before.get("peak_rss_mb"),
        }
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown(results, before))


def _fmt_runs(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def markdown(results: dict[str, Any], before: dict[str, Any] | None) -> str:
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
        f"- Schema: {caches}; env=production; one uvicorn worker per server",
        f"- Every figure: median of {s['rounds']} interleaved runs of {s['seconds_per_run']:g} s; "
        f"reads with wrk 1 thread × {s['read_connections']} connections, writes with "
        f"{s['write_connections']} connections; ratios are the median of per-round ratios.",
        "",
        "## Ratios",
        "",
    ]
    header = "| ratio | measured | goal | meaning |"
    rule = "|---|---|---|---|"
    if before is not None:
        header = "| ratio | before | after | goal | meaning |"
        rule = "|---|---|---|---|---|"
    out += [header, rule]
    for key, value in results["ratios"].items():
        cells = [f"`{key}`"]
        if before is not None:
            cells.append(str(before["ratios"].get(key, "—")))
        cells += [f"**{value}**", GOALS.get(key, ""), MEANING.get(key, "")]
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "## Read path",
        "",
        "| variant | req/s | p50 ms | p99 ms | req/s per run |",
        "|---|---|---|---|---|",
    ]
    for name, figures in results["read"].items():
        out.append(
            f"| {READ_LABELS.get(name, name)} | {figures['rps']['median']:g} | "
            f"{figures['p50_ms']['median']:g} | {figures['p99_ms']['median']:g} | "
            f"{_fmt_runs(figures['rps']['runs'])} |"
        )
    if before is not None:
        out += [
            "",
            f"Before the read-path changes ({before['machine']['measured_at']}):",
            "",
            "| variant | req/s | p50 ms | p99 ms |",
            "|---|---|---|---|",
        ]
        for name, figures in before["read"].items():
            out.append(
                f"| {READ_LABELS.get(name, name)} | {figures['rps']['median']:g} | "
                f"{figures['p50_ms']['median']:g} | {figures['p99_ms']['median']:g} |"
            )
    w = results["write"]
    t = results["topups"]
    many_key = next(k for k in t if k.startswith("concurrent_"))
    out += [
        "",
        "## Write path (reserveCredits + captureReservation, SQLite)",
        "",
        "| variant | pairs/s | per run |",
        "|---|---|---|",
        f"| GraphQL over HTTP | {w['graphql_pairs_per_s']['median']:g} | "
        f"{_fmt_runs(w['graphql_pairs_per_s']['runs'])} |",
        f"| the same writes, bare aiosqlite, one process | "
        f"{w['direct_pairs_per_s']['median']:g} | {_fmt_runs(w['direct_pairs_per_s']['runs'])} |",
        "",
        f"## Top-ups ({s['stripe_latency_seconds'] * 1000:g} ms injected on every Stripe call)",
        "",
        "| variant | wall s | per run |",
        "|---|---|---|",
        f"| one top-up | {t['one_s']['median']:g} | {_fmt_runs(t['one_s']['runs'])} |",
        f"| {s['concurrent_topups']} concurrent top-ups | {t[many_key]['median']:g} | "
        f"{_fmt_runs(t[many_key]['runs'])} |",
        "",
        "## Memory and start-up",
        "",
        "| server | peak RSS MB (after the read load) | start-up to first answer, s | runs |",
        "|---|---|---|---|",
    ]
    for name, startup in results["startup"].items():
        rss = results["peak_rss_mb"].get(name, "—")
        out.append(f"| {name} | {rss} | {startup['median']:g} | {_fmt_runs(startup['runs'])} |")
    out += [
        "",
        f"Seeding ({s['large_entries']:,} + {s['small_entries']:,} entries, migrations "
        f"included): {results['seed_seconds']:g} s.",
        "",
    ]
    return "\n".join(out)
