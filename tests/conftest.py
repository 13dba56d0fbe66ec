"""Shared fixtures: the Stripe emulator and fault proxy (once per session), a migrated
SQLite template, and per test a fresh database served by the real app under uvicorn."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gql_billing import auth, migrate
from gql_billing.billing.organizations import create_organization, grant_credits
from gql_billing.clock import FakeClock
from gql_billing.graphql.ids import to_global_id
from gql_billing.models import Plan
from gql_billing.settings import Settings
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
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def settings(tmp_path: Path, template_db: Path, stripe_proxy: FaultProxy) -> Settings:
    db_path = tmp_path / "billing.db"
    shutil.copy(template_db, db_path)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{db_path}",
        stripe_secret_key=TEST_SECRET_KEY,
        stripe_api_base=stripe_proxy.base_url,
        stripe_webhook_secret=TEST_WEBHOOK_SECRET,
        stripe_timeout_seconds=2.0,
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
