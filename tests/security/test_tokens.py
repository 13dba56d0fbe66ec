"""Tokens: stored as a hash, their last use recorded (throttled, after the
response), and never written to a log. Creation, revocation and 401s are in
tests/e2e/test_queries.py and tests/e2e/test_cli.py."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text

from conftest import TEST_SECRET_KEY, TEST_WEBHOOK_SECRET, Factory
from gql_billing.auth import TokenUsage, hash_token, revoke_token
from gql_billing.clock import FakeClock
from gql_billing.db import Database
from gql_billing.models import ApiToken

VIEWER = "{ viewer { scopes } }"
CREATE_SETUP_INTENT = """
mutation { createSetupIntent { __typename ... on SetupIntentCreated { setupIntentId } } }
"""


async def stored(db: Database, token: str) -> ApiToken:
    async with db.read() as session:
        query = select(ApiToken).where(ApiToken.token_hash == hash_token(token))  # type: ignore[arg-type]
        row: ApiToken = (await session.execute(query)).scalar_one()
        return row


async def last_used(db: Database, token: str) -> datetime | None:
    return (await stored(db, token)).last_used_at


async def recorded_use(db: Database, token: str) -> datetime | None:
    """last_used_at once written: the write follows the response, so poll for it."""
    for _ in range(500):
        if (when := await last_used(db, token)) is not None:
            return when
        await asyncio.sleep(0.01)
    return None


async def test_a_token_is_stored_only_as_its_hash(make: Factory) -> None:
    org = await make.org()

    async with make.app.billing.db.read() as session:
        rows = (await session.execute(text("SELECT * FROM api_tokens"))).all()

    [row] = rows
    assert org.token not in " ".join(str(value) for value in row)
    assert (await stored(make.app.billing.db, org.token)).prefix == org.token[:13]


async def test_using_a_token_records_when(make: Factory, clock: FakeClock) -> None:
    org = await make.org()
    db = make.app.billing.db
    assert await last_used(db, org.token) is None

    await org.api(VIEWER)

    assert await recorded_use(db, org.token) == clock.now()


async def test_last_use_is_written_at_most_once_a_minute(make: Factory, clock: FakeClock) -> None:
    org = await make.org()
    db = make.app.billing.db
    token_id = (await stored(db, org.token)).id
    assert token_id is not None
    usage = TokenUsage(db, clock, interval=timedelta(minutes=1))
    first_use = clock.now()

    written = [await usage.record(token_id)]
    clock.advance(timedelta(seconds=59))
    written.append(await usage.record(token_id))
    stored_within_the_minute = await last_used(db, org.token)
    clock.advance(timedelta(seconds=1))
    written.append(await usage.record(token_id))

    assert written == [True, False, True]
    assert stored_within_the_minute == first_use
    assert await last_used(db, org.token) == clock.now()


async def test_no_token_or_secret_is_ever_logged(
    make: Factory,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    org = await make.org()
    revoked = make.client(await make.token(org.pk, "billing:read"))
    await revoke_token(make.app.billing.db, revoked.token[:13])  # type: ignore[index]

    await org.api(VIEWER)
    await org.api(CREATE_SETUP_INTENT)  # a Stripe call, with the secret key
    await revoked.post(VIEWER)
    await make.client(org.token + "x").post(VIEWER)
    await http.post(
        f"{make.app.base_url}/webhooks/stripe",
        content=b"{}",
        headers={"Stripe-Signature": f"t=1,v1={TEST_WEBHOOK_SECRET}"},
    )
    await recorded_use(make.app.billing.db, org.token)  # the post-response write, done too

    logged = caplog.text + " ".join(repr(r.args) for r in caplog.records)
    printed = "".join(capfd.readouterr())
    secrets = [org.token, str(revoked.token), TEST_SECRET_KEY, TEST_WEBHOOK_SECRET]
    assert caplog.records, "nothing was logged: the check would prove nothing"
    for secret in secrets:
        assert secret not in logged
        assert secret not in printed
