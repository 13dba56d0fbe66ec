"""A bounded fuzz run: Schemathesis generates documents from the exported schema, valid ones
and deliberately invalid ones, for every root field, and sends them with a valid token.
No answer may be a 5xx or carry a masked fault ("Internal server error" only ever comes from
a genuine fault, and none is expected)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.graphql import nodes

from conftest import Factory
from gql_billing.clock import FakeClock
from gql_billing.graphql.schema import MASKED_MESSAGE, build_schema
from gql_billing.settings import Settings
from support.app_server import serve

# Per root field and mode: at most 23 fields x 2 modes x 25 = 1150 requests; Hypothesis stops
# early where a field has fewer distinct documents (929 in all on the current schema, ~16 s).
EXAMPLES = 25
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
SPEND_FIELDS = frozenset(
    {"reserveCredits", "captureReservation", "releaseReservation", "refundReservation"}
)


@dataclass
class Findings:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def check(self, document: Any, response: Any) -> None:
        self.sent += 1
        self.statuses[response.status_code] += 1
        text = response.text
        if response.status_code >= 500 or MASKED_MESSAGE in text or "Traceback" in text:
            self.failures.append(f"{response.status_code} {text[:300]}\n{document}")


# Our scalars, with values past their bounds too: rejecting those is part of the contract.
schemathesis.graphql.scalar(
    "Credits", st.integers(min_value=-(2**60), max_value=2**60).map(nodes.Int)
)
schemathesis.graphql.scalar(
    "DateTime",
    st.one_of(
        st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat()),
        st.text(max_size=30),
    ).map(nodes.String),
)
BUDGET = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same documents on every run: a failure reproduces
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def fuzz_operation(
    operation: Any, mode: GenerationMode, url: str, token: str, findings: Findings
) -> None:
    headers = {"Authorization": f"Bearer {token}"}

    @BUDGET
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        findings.check(case.body, case.call(base_url=url, headers=headers, timeout=30))

    send()


def fuzz(url: str, tokens: dict[bool, str]) -> Findings:
    """Runs in a worker thread: Schemathesis calls the server synchronously."""
    schema = schemathesis.graphql.from_file(build_schema().as_str())
    findings = Findings()
    for result in schema.get_all_operations():
        operation = result.ok()
        spend = operation.label.split(".", 1)[1] in SPEND_FIELDS
        for mode in MODES:
            fuzz_operation(operation, mode, url, tokens[spend], findings)
    return findings


@pytest.fixture
async def unthrottled(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> AsyncIterator[Factory]:
    # One token sends hundreds of requests inside one window of the fake clock.
    async with serve(settings.model_copy(update={"rate_limit_requests": 100_000}), clock) as app:
        yield Factory(app, http)


async def test_fuzzed_documents_never_get_a_server_error(unthrottled: Factory) -> None:
    org = await unthrottled.org(
        credits=100_000, scopes="billing:read,billing:write,billing:approve"
    )
    service = await unthrottled.token(None, "billing:spend")

    findings = await asyncio.to_thread(
        fuzz, unthrottled.app.graphql_url, {False: org.token, True: service}
    )

    assert findings.failures == []
    assert findings.sent >= len(MODES) * 23, findings.statuses
    assert set(findings.statuses) <= {200, 400}, findings.statuses
