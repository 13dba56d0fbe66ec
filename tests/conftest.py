"""Shared fixtures: the Stripe emulator and fault proxy (once per session), a migrated
SQLite template, and per test a fresh database served by the real app under uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gql_billing import auth
from gql_billing.billing.organizations import create_organization, grant_credits
from gql_billing.clock import FakeClock
from gql_billing.graphql.ids import to_global_id
from gql_billing.models import Plan
from gql_billing.settings import Settings
from support import databases
from support.api import GraphQLClient
from support.app_server import ServedApp, serve
from support.emulator import StripeEmulator
from support.stripe_proxy import FaultProxy

TEST_SECRET_KEY = "sk_test_gql_billing"
TEST_WEBHOOK_SECRET = "whsec_test_gql_billing"


@pytest.fixture(scope="session")
def emulator() -> Iterator[StripeEmulator]:
    emulator = StripeEmulator()
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def session_proxy(emulator: StripeEmulator) -> Iterator[FaultProxy]:
    proxy = FaultProxy(emulator.base_url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def stripe_proxy(session_proxy: FaultProxy, emulator: StripeEmulator) -> FaultProxy:
    """The proxy with no faults, an empty idempotency store and an empty emulator."""
    emulator.reset()
    session_proxy.reset()
    return session_proxy


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for every test that runs on SQLite."""
    return databases.sqlite_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[databases.PostgresDatabases | None]:
    if databases.BACKEND != "postgresql":
        yield None
        return
    pg = databases.PostgresDatabases()
    pg.create_template()
    try:
        yield pg
    finally:
        pg.drop_template()


@pytest.fixture
async def database_url(
    tmp_path: Path, template_db: Path, postgres: databases.PostgresDatabases | None
) -> AsyncIterator[str]:
    """A clean, migrated database for this test on the chosen backend."""
    if postgres is None:
        yield databases.sqlite_copy(template_db, tmp_path)
        return
    name, url = await postgres.create()
    try:
        yield url
    finally:
        await postgres.drop(name)


@pytest.fixture
def settings(database_url: str, stripe_proxy: FaultProxy) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        stripe_secret_key=TEST_SECRET_KEY,
        stripe_api_base=stripe_proxy.base_url,
        stripe_webhook_secret=TEST_WEBHOOK_SECRET,
        # Long enough for the one-at-a-time emulator on a busy machine (two suites share
        # its cores); short enough that the tests of a Stripe timeout stay quick.
        stripe_timeout_seconds=5.0,
        # Tests drive the worker's ticks themselves, on a fake clock.
        run_worker=False,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 20, 9, 30, tzinfo=UTC))


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[ServedApp]:
    async with serve(settings, clock) as served:
        yield served


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        yield client


@dataclass
class Org:
    pk: int
    id: str
    token: str
    api: GraphQLClient


@dataclass
class Factory:
    app: ServedApp
    http: httpx.AsyncClient

    async def org(
        self,
        *,
        credits: int = 0,
        plan: Plan = Plan.STANDARD,
        scopes: str = "billing:read,billing:write",
        name: str = "Acme Imagery",
    ) -> Org:
        db = self.app.billing.db
        org = await create_organization(db, name=name, plan=plan)
        assert org.id is not None
        if credits:
            await grant_credits(db, organization_id=org.id, amount_credits=credits, reason="seed")
        token = await self.token(org.id, scopes)
        return Org(org.id, to_global_id("Organization", org.id), token, self.client(token))

    async def token(self, organization_id: int | None, scopes: str) -> str:
        parsed = auth.parse_scopes(scopes)
        issued = await auth.issue_token(
            self.app.billing.db, organization_id=organization_id, scopes=parsed
        )
        return issued.token

    def client(self, token: str | None) -> GraphQLClient:
        return GraphQLClient(self.http, self.app.graphql_url, token)


@pytest.fixture
def make(app: ServedApp, http: httpx.AsyncClient) -> Factory:
    return Factory(app, http)
