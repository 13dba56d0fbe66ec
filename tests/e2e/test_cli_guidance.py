"""The command line's mistakes, made as a newcomer makes them: each answer is one line that
says what to do (never a traceback), with a non-zero exit, and nothing left behind."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gql_billing.cli import build_parser
from gql_billing.settings import Settings
from support import databases
from support.app_server import free_port

CLI = str(Path(sys.executable).with_name("gql-billing"))
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python_client.py"
# Variables a developer's shell may carry that would change what the commands see.
OUR_VARIABLES = re.compile(r"^(GQL_BILLING_|STRIPE_)")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not OUR_VARIABLES.match(k)}
    return {**env, **extra}


def run(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]


READ_ONLY_COMMANDS = [
    ["report", "--org", "1"],
    ["reconcile"],
    ["token", "create", "--org", "1"],
    ["token", "create", "--service", "--name", "orders"],
    ["token", "revoke", "gqlb_abcdefgh"],
    ["credits", "grant", "--org", "1", "--credits", "5", "--reason", "x"],
]


@pytest.mark.parametrize("args", READ_ONLY_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_a_missing_database_says_migrate_and_no_file_is_created(
    args: list[str], tmp_path: Path
) -> None:
    # The default URL (./gql_billing.db), run where no database exists yet.
    env = clean_env(STRIPE_SECRET_KEY="sk_test_x", STRIPE_API_BASE="http://127.0.0.1:9")

    done = run(*args, env=env, cwd=tmp_path)

    assert_one_line_error(done, "run `gql-billing migrate`")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
async def unmigrated_url(
    tmp_path: Path, postgres: databases.PostgresDatabases | None
) -> AsyncIterator[str]:
    """A database that exists and is empty: created, never migrated."""
    if postgres is None:
        path = tmp_path / "empty.db"
        path.touch()
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = f"{postgres.prefix}_empty_{os.getpid()}"
    await databases._admin(f'CREATE DATABASE "{name}"')
    try:
        yield databases.pg_url(name)
    finally:
        await databases._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_an_unmigrated_database_says_migrate_then_works_once_migrated(
    unmigrated_url: str, tmp_path: Path
) -> None:
    env = clean_env(GQL_BILLING_DATABASE_URL=unmigrated_url)

    refused = await asyncio.to_thread(run, "report", "--org", "1", env=env, cwd=tmp_path)
    migrated = await asyncio.to_thread(run, "migrate", env=env, cwd=tmp_path)
    org = await asyncio.to_thread(run, "org", "create", "--name", "Later", "--json", env=env)
    report = await asyncio.to_thread(run, "report", "--org", json.loads(org.stdout)["id"], env=env)

    assert_one_line_error(refused, "is not migrated", "run `gql-billing migrate`")
    assert migrated.returncode == 0, migrated.stderr
    assert report.returncode == 0, report.stderr
    assert "all invariants hold" in report.stdout


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "GQL_BILLING_DATABASE_URL is empty"),
        ("   ", "GQL_BILLING_DATABASE_URL is empty"),
        ("not a url", "GQL_BILLING_DATABASE_URL is not a database URL"),
        ("postgresql://billing@127.0.0.1/billing", "synchronous driver 'postgresql'"),
        ("mysql+nosuchdriver://x/y", "GQL_BILLING_DATABASE_URL is not a database URL"),
    ],
)
def test_an_empty_or_malformed_database_url_is_named(
    url: str, expected: str, tmp_path: Path
) -> None:
    # `migrate` (which creates databases) as well as the commands reading one.
    command = ["migrate"] if url == "" else ["report", "--org", "1"]
    done = run(*command, env=clean_env(GQL_BILLING_DATABASE_URL=url), cwd=tmp_path)

    assert_one_line_error(done, expected, "sqlite+aiosqlite://")
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://billing@127.0.0.1:{free_port()}/billing"

    done = run("report", "--org", "1", env=clean_env(GQL_BILLING_DATABASE_URL=url))

    assert_one_line_error(done, "cannot open the database", "127.0.0.1")


def test_reconcile_without_stripe_says_stripe_is_not_configured(settings: Settings) -> None:
    done = run("reconcile", env=clean_env(GQL_BILLING_DATABASE_URL=settings.database_url))

    assert_one_line_error(done, "Stripe is not configured", "STRIPE_SECRET_KEY")
    assert done.stdout == ""


def test_the_worker_logs_its_start_every_pass_and_its_stop(settings: Settings) -> None:
    env = clean_env(
        GQL_BILLING_DATABASE_URL=settings.database_url, GQL_BILLING_WORKER_INTERVAL_SECONDS="0.1"
    )
    proc = subprocess.Popen(
        [CLI, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    lines: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 60
        while sum(line["event"] == "worker tick" for line in lines) < 3:
            assert time.monotonic() < deadline, lines
            lines.append(json.loads(proc.stderr.readline()))
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += [json.loads(line) for line in rest.splitlines() if line.strip()]

    events = [line["event"] for line in lines]
    ticks = [line for line in lines if line["event"] == "worker tick"]
    assert proc.returncode == 0
    assert events[0] == "worker started" and events[-1] == "worker stopped", events
    assert all(line["level"] == "info" for line in lines)
    assert {k: v for k, v in ticks[0].items() if k.endswith(("_run", "_queued", "_released"))} == {
        "auto_topups_queued": 0,
        "auto_topups_run": 0,
        "card_holds_released": 0,
    }
    assert ticks[0]["invoices_finalized"] == 0
    assert lines[-1]["passes"] == len(ticks)


def _every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _every_parser(child)


def test_every_option_has_help_text() -> None:
    missing = [
        f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
        for parser in _every_parser(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


@pytest.mark.parametrize(
    "command", [[], ["report"], ["reconcile"], ["demo"], ["demo", "authenticate"], ["serve"]]
)
def test_help_explains_without_citing_documents_outside_the_project(command: list[str]) -> None:
    done = run(*command, "--help", env=clean_env())

    assert done.returncode == 0, done.stderr
    assert "SPEC" not in done.stdout and "§" not in done.stdout
    assert "--help" in done.stdout


def test_the_python_example_without_its_variables_prints_its_usage() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=clean_env(), capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2
    assert done.stderr.startswith("usage: GQL_BILLING_URL=")
    assert "GQL_BILLING_TOKEN is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_demo_on_a_taken_port_stops_before_printing_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("demo", "--port", str(port), env=clean_env(), cwd=tmp_path)

    assert done.stdout == ""
    assert_one_line_error(done, f"port {port} on 127.0.0.1 is in use", "--port")


def test_demo_authenticate_without_an_emulator_says_where_to_look() -> None:
    unset = run("demo", "authenticate", "pi_123", env=clean_env())
    closed = run(
        "demo",
        "authenticate",
        "pi_123",
        env=clean_env(STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}"),
    )

    assert_one_line_error(unset, "STRIPE_API_BASE is not set")
    assert_one_line_error(closed, "cannot reach the Stripe emulator", "gql-billing demo")
