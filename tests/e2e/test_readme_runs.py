"""The README runs: every GraphQL document and every shell example in it, taken from the
README itself, is executed against the served app with the demo's data, in README order, as
a reader following it would. A README edit that breaks one fails here.

GraphQL documents are sent as written (with the variables of a ```json block right after
them), must answer without top-level errors, and a mutation must not answer a `Problem`
unless the README says it does. Shell blocks run under bash with the variables the demo
prints as `export` lines, pointed at the served app: curl examples with the real `curl`
(each request must answer 2xx, from the served app), `gql-billing` commands with the
installed CLI. A block that cannot sensibly run is listed in NOT_RUN with the reason; one
that is neither run nor listed fails the test."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from graphql import GraphQLInterfaceType, build_schema

from conftest import Factory, Org
from gql_billing.cli import build_parser
from gql_billing.demo import shell_exports
from gql_billing.graphql.schema import build_schema as build_app_schema
from support.cards import THREE_D_SECURE, VISA, save_card
from support.emulator import StripeEmulator
from support.node_clients import in_ci, require
from support.readme import Snippet, readme_snippets

# Shell blocks the test does not run (a prefix of the block's first line -> why not).
NOT_RUN: dict[str, str] = {
    "make demo": "starts a server that runs until Ctrl-C, and `make test` is this very run; "
    "the demo's data and variables are what this test serves",
    "gql-billing serve [--host": "the command synopsis: options in brackets, placeholders; "
    "test_the_command_synopsis_parses checks it against the CLI's parser",
    "export GQL_BILLING_DATABASE_URL=postgresql+asyncpg://billing@db.internal": "a deployment "
    "on a database host elsewhere, with servers and workers that run until stopped",
    "from standardwebhooks.webhooks import": "a receiver's core, around the reader's own "
    "`already_handled` and `act_on`: examples/webhook_receiver.py is the same as a complete "
    "server, run by tests/clients/test_webhook_receiver_example.py",
    "make lint": "development targets: `make test` runs lint and typecheck itself, and the "
    "benchmarks take minutes",
}

# What the README's prose says a document answers: a piece of the document -> the part of
# the answer the prose names. The 3-D Secure top-up is sent again after `demo authenticate`
# (README_SAYS_AFTER_AUTHENTICATION).
README_SAYS: dict[str, dict[str, Any]] = {
    'usd: balance(currency: "USD")': {
        "wallet": {"balance": {"amount": "235.00", "currency": "AUD", "formatted": "$235.00"}}
    },
    'idempotencyKey: "order-2026-11-27-1"': {
        "topup": {
            "__typename": "TopupSuccess",
            "creditsGranted": 50_000,
            "bonusCredits": 0,
            "newBalance": 73_500,
        }
    },
    'idempotencyKey: "order-3ds-1"': {"topup": {"__typename": "AuthenticationRequired"}},
}
README_SAYS_AFTER_AUTHENTICATION = {
    "topup": {"__typename": "TopupSuccess", "creditsGranted": 30_000}
}

# Placeholders a reader fills in: the demo's 3-D Secure card (GraphQL), the PaymentIntent
# of the AuthenticationRequired answer (shell).
PLACEHOLDER = re.compile(r"\b[a-z]+_\.\.\.")
CURL_CALL = re.compile(r"(?:^|[\s;&|(])curl\s")
# The test's curlrc: fail on HTTP errors like `curl -f`, and say what each request answered.
CURLRC = 'fail\nwrite-out = "\\n@@curl %{http_code} %{url_effective}@@\\n"\n'
CURL_ANSWER = re.compile(r"@@curl (\d{3}) (\S+)@@")

_SCHEMA = build_schema(build_app_schema().as_str())
_PROBLEM = _SCHEMA.get_type("Problem")
assert isinstance(_PROBLEM, GraphQLInterfaceType)
PROBLEM_TYPES = frozenset(t.name for t in _SCHEMA.get_possible_types(_PROBLEM))


def not_run_reason(snippet: Snippet) -> str | None:
    first_line = snippet.text.splitlines()[0] if snippet.text else ""
    for prefix, reason in NOT_RUN.items():
        if first_line.startswith(prefix):
            return reason
    return None


def how_to_run(snippet: Snippet) -> str:
    """graphql, curl, cli or not run; fails on a snippet that is none of them."""
    if snippet.language == "graphql":
        return "graphql"
    if not_run_reason(snippet) is not None:
        return "not run"
    if not snippet.is_shell:
        pytest.fail(
            f"{snippet.where}: a ```{snippet.language} block the test cannot run: "
            "use ```graphql or ```sh, or list it in NOT_RUN with the reason"
        )
    if not_run_reason(snippet) is not None:
        return "not run"
    if CURL_CALL.search(snippet.text):
        return "curl"
    commands = [line for line in snippet.text.splitlines() if line.strip()]
    if commands and all(line.startswith("gql-billing ") for line in commands):
        return "cli"
    pytest.fail(
        f"{snippet.where}: a shell block that is neither a curl example nor a gql-billing "
        f"command: make it one, or list it in NOT_RUN with the reason\n{snippet.text}"
    )


def part_of(answer: Any, expected: Any) -> Any:
    """The answer cut down to the keys `expected` names, to compare with it."""
    if isinstance(expected, dict) and isinstance(answer, dict):
        return {key: part_of(answer.get(key), value) for key, value in expected.items()}
    return answer


def test_every_block_is_run_or_listed_with_a_reason() -> None:
    snippets = readme_snippets()
    plans = Counter(how_to_run(snippet) for snippet in snippets)
    listed = [not_run_reason(s) for s in snippets if s.language != "graphql"]

    assert plans["graphql"] >= 8 and plans["curl"] >= 1 and plans["cli"] >= 1, plans
    stale = [prefix for prefix, reason in NOT_RUN.items() if listed.count(reason) != 1]
    assert stale == [], f"NOT_RUN names blocks the README no longer has (or has twice): {stale}"
    missing = [marker for marker in README_SAYS if not any(marker in s.text for s in snippets)]
    assert missing == [], f"README_SAYS names documents the README no longer has: {missing}"


def synopsis_as_arguments(line: str) -> list[str]:
    """A synopsis line as one concrete command: every optional part given, the first of
    several choices, `1` for a placeholder in capitals."""
    words = line.split("#")[0].replace("[", " ").replace("]", " ").split()
    return ["1" if re.fullmatch(r"[A-Z_]+", word) else word.split("|")[0] for word in words]


def test_the_command_synopsis_parses() -> None:
    """The README's command synopsis is not run (it needs servers, a database, Stripe),
    but every line of it, with every option it shows, is a command the CLI accepts."""
    [synopsis] = [s for s in readme_snippets() if s.text.startswith("gql-billing serve [")]
    lines = [line for line in synopsis.text.splitlines() if line.strip()]
    refused: dict[str, str] = {}

    for line in lines:
        words = synopsis_as_arguments(line)
        assert words[0] == "gql-billing", line
        try:
            build_parser().parse_args(words[1:])
        except SystemExit as exc:
            refused[line] = f"exit {exc.code}"

    assert len(lines) >= 10
    assert refused == {}


def test_variables_come_from_the_json_block_right_after_a_document() -> None:
    text = (
        'Headers:\n\n```json\n{"Authorization": "Bearer x"}\n```\n\n'
        '```graphql\nquery Q($n: Int!) { a(n: $n) }\n```\n\n```json\n{"n": 3}\n```\n\n'
        '```graphql\n{ b }\n\n{ c }\n```\nthen\n\n```json\n{"shown": true}\n```\n'
        "```sh\ncurl -sS x\n```\n"
    )

    snippets = readme_snippets(text)

    assert [(s.language, s.text, s.line, s.variables) for s in snippets] == [
        ("graphql", "query Q($n: Int!) { a(n: $n) }", 7, {"n": 3}),
        ("graphql", "{ b }", 15, None),
        ("graphql", "{ c }", 15, None),
        ("sh", "curl -sS x", 25, None),
    ]
    with pytest.raises(ValueError, match="several documents"):
        readme_snippets("```graphql\n{ b }\n\n{ c }\n```\n```json\n{}\n```\n")


class ReadmeReader:
    """Runs the README's snippets in order, keeping what a reader carries from one to the
    next (the PaymentIntent of a 3-D Secure top-up, to authenticate and then retry)."""

    def __init__(
        self,
        org: Org,
        emulator: StripeEmulator,
        card_3ds: str,
        env: dict[str, str],
        workdir: Path,
    ) -> None:
        self.org = org
        self.emulator = emulator
        self.card_3ds = card_3ds
        self.env = env
        self.workdir = workdir
        self.api_base = env["GQL_BILLING_API"]
        self.curl = shutil.which("curl", path=env["PATH"])
        self.ran: Counter[str] = Counter()
        self.not_run: list[str] = []
        self.curl_missing: list[str] = []
        self.said: set[str] = set()
        self.waiting_3ds: tuple[Snippet, str, str] | None = None  # document, query, pi_
        self.round_trips = 0

    async def run(self, snippet: Snippet) -> None:
        how = how_to_run(snippet)
        if how == "graphql":
            await self.graphql(snippet)
        elif how == "not run":
            self.not_run.append(snippet.where)
            return
        elif how == "curl" and self.curl is None:
            self.curl_missing.append(snippet.where)
            return
        else:
            await self.shell(snippet, how)
        self.ran[how] += 1

    async def send(
        self, snippet: Snippet, query: str, variables: dict[str, Any] | None
    ) -> dict[str, Any]:
        response = await self.org.api.post(query, variables)
        assert response.status_code == 200, f"{snippet.where}: {response.text}"
        body = response.json()
        assert "errors" not in body, f"{snippet.where}: {body['errors']}\n{query}"
        data: dict[str, Any] = body["data"]
        return data

    async def graphql(self, snippet: Snippet) -> None:
        query = snippet.text.replace('"pm_..."', f'"{self.card_3ds}"')
        unfilled = PLACEHOLDER.findall(query)
        assert unfilled == [], f"{snippet.where}: no value for the placeholders {unfilled}"
        data = await self.send(snippet, query, snippet.variables)

        expected: dict[str, Any] = {}
        for marker, said in README_SAYS.items():
            if marker in snippet.text:
                expected = said
                self.said.add(marker)
        assert part_of(data, expected) == expected, f"{snippet.where}: {data}"
        problems = {
            field: answer
            for field, answer in data.items()
            if isinstance(answer, dict)
            and answer.get("__typename") in PROBLEM_TYPES
            and answer["__typename"] != expected.get(field, {}).get("__typename")
        }
        assert problems == {}, f"{snippet.where}: answered a problem the README does not say"
        for answer in data.values():
            if isinstance(answer, dict) and answer.get("__typename") == "AuthenticationRequired":
                assert self.waiting_3ds is None, f"{snippet.where}: a second 3-D Secure wait"
                self.waiting_3ds = (snippet, query, answer["paymentIntentId"])

    async def shell(self, snippet: Snippet, how: str) -> None:
        script = snippet.text
        if "pi_..." in script:
            assert self.waiting_3ds is not None, f"{snippet.where}: no top-up waits for 3DS"
            script = script.replace("pi_...", self.waiting_3ds[2])
        unfilled = PLACEHOLDER.findall(script)
        assert unfilled == [], f"{snippet.where}: no value for the placeholders {unfilled}"

        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert done.returncode == 0, (
            f"{snippet.where}: exit {done.returncode}\n{script}\n{done.stdout}\n{done.stderr}"
        )
        if how == "curl":
            answers = CURL_ANSWER.findall(done.stdout)
            assert len(answers) == len(CURL_CALL.findall(script)), (snippet.where, done.stdout)
            for status, url in answers:
                assert status.startswith("2"), f"{snippet.where}: HTTP {status} from {url}"
                assert url.startswith(f"{self.api_base}/"), f"{snippet.where}: asked {url}"
        if "demo authenticate" in script and self.waiting_3ds is not None:
            await self.retry_3ds_topup()

    async def retry_3ds_topup(self) -> None:
        """The README: send the same mutation with the same key: TopupSuccess, and a retry
        after that replays the same answer."""
        assert self.waiting_3ds is not None
        snippet, query, payment_intent = self.waiting_3ds
        self.waiting_3ds = None

        settled = await self.send(snippet, query, snippet.variables)
        replayed = await self.send(snippet, query, snippet.variables)
        charged = await asyncio.to_thread(self.emulator.list_payment_intents)

        expected = README_SAYS_AFTER_AUTHENTICATION
        assert part_of(settled, expected) == expected, f"{snippet.where}: {settled}"
        assert replayed == settled
        statuses = await self.send(
            snippet, "{ topups(first: 5) { edges { node { status paymentIntentId } } } }", None
        )
        paid = [
            edge["node"]
            for edge in statuses["topups"]["edges"]
            if edge["node"]["paymentIntentId"] == payment_intent
        ]
        assert paid == [{"status": "SUCCEEDED", "paymentIntentId": payment_intent}]
        # One charge of the 3-D Secure card, however often the mutation was sent.
        on_card = [pi for pi in charged if pi["payment_method"] == self.card_3ds]
        assert [(pi["id"], pi["status"]) for pi in on_card] == [(payment_intent, "succeeded")]
        self.round_trips += 1


async def test_every_readme_snippet_runs_against_the_served_app(
    make: Factory, emulator: StripeEmulator, tmp_path: Path
) -> None:
    if in_ci():
        require("curl")
    # The demo's data: 23,500 credits, an organization token, a saved card, the 3-D Secure
    # card it prints (created in the emulator, not yet attached).
    org = await make.org(
        credits=23_500,
        scopes="billing:read,billing:write,billing:approve",
        name="Demo Imagery Pty Ltd",
    )
    await save_card(org.api, emulator, VISA)
    card_3ds = await asyncio.to_thread(emulator.create_card_payment_method, THREE_D_SECURE)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".curlrc").write_text(CURLRC)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GQL_BILLING_", "STRIPE_", "CURL_"))
    }
    env |= shell_exports(make.app.base_url, make.app.settings, org.token, card_3ds)
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CURL_HOME": str(home),
    }
    workdir = tmp_path / "shell"
    workdir.mkdir()
    reader = ReadmeReader(org, emulator, card_3ds, env, workdir)

    for snippet in readme_snippets():
        await reader.run(snippet)

    assert reader.waiting_3ds is None, "the README leaves a 3-D Secure top-up unfinished"
    assert reader.round_trips == 1
    assert reader.said == set(README_SAYS)
    assert reader.ran["graphql"] >= 8 and reader.ran["cli"] >= 1, reader.ran
    assert len(reader.not_run) == len(NOT_RUN)
    if reader.curl_missing:
        pytest.skip(f"curl is not installed: {reader.curl_missing} not run")
    assert reader.ran["curl"] >= 1
