"""`gql-billing demo`: a local playground with a Stripe emulator, SQLite and a demo token."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import httpx

from . import auth, migrate
from .billing.organizations import create_organization, grant_credits
from .db import Database
from .graphql.ids import to_global_id
from .models import Plan
from .settings import Settings
from .stripe_emulator import LocalStripe

DEMO_SECRET_KEY = "sk_test_gql_billing_demo"
DEMO_WEBHOOK_SECRET = "whsec_gql_billing_demo"

TEST_CARDS = {
    "succeeds": "4242424242424242",
    "needs 3-D Secure": "4000002760003184",
    "declined when charged": "4000000000000341",
}


def register_webhook(stripe: LocalStripe, url: str) -> None:
    """Ask the emulator to deliver its events to our webhook endpoint, signed."""
    response = httpx.post(
        f"{stripe.base_url}/_config/webhooks/gql-billing-demo",
        json={"url": url, "secret": DEMO_WEBHOOK_SECRET},
    )
    response.raise_for_status()


def create_card(stripe: LocalStripe, number: str) -> str:
    """A saved test card in the emulator, as Stripe.js would create it."""
    response = httpx.post(
        f"{stripe.base_url}/v1/payment_methods",
        headers={"Authorization": f"Bearer {DEMO_SECRET_KEY}"},
        data={
            "type": "card",
            "card[number]": number,
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        },
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def _seed(settings: Settings) -> tuple[str, str]:
    db = Database(settings.database_url)
    try:
        org = await create_organization(db, name="Demo Imagery Pty Ltd", plan=Plan.STANDARD)
        assert org.id is not None
        await grant_credits(
            db, organization_id=org.id, amount_credits=23_500, reason="Welcome credit"
        )
        issued = await auth.issue_token(
            db, organization_id=org.id, scopes=auth.ORGANIZATION_SCOPES, name="demo"
        )
        return to_global_id("Organization", org.id), issued.token
    finally:
        await db.dispose()


def run_demo(*, port: int, host: str = "127.0.0.1") -> None:
    import uvicorn

    from .app import create_app

    workdir = Path(tempfile.mkdtemp(prefix="gql-billing-demo-"))
    stripe = LocalStripe()
    stripe.start()
    try:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{workdir / 'demo.db'}",
            env="development",
            stripe_secret_key=DEMO_SECRET_KEY,
            stripe_api_base=stripe.base_url,
            stripe_webhook_secret=DEMO_WEBHOOK_SECRET,
        )
        migrate.upgrade(settings.database_url)
        org_id, token = asyncio.run(_seed(settings))
        cards = {label: create_card(stripe, number) for label, number in TEST_CARDS.items()}
        register_webhook(stripe, f"http://{host}:{port}/webhooks/stripe")
        _banner(host, port, org_id, token, stripe.base_url, cards)
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
    finally:
        stripe.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _banner(
    host: str, port: int, org_id: str, token: str, stripe_url: str, cards: dict[str, str]
) -> None:
    url = f"http://{host}:{port}/graphql"
    lines = [
        "",
        "gql-billing demo",
        f"  GraphiQL:        {url}",
        f"  Organization:    {org_id}  (23,500 credits = A$235.00)",
        f"  Token:           {token}",
        '  In GraphiQL, Headers: {"Authorization": "Bearer ' + token + '"}',
        f"  Stripe emulator: {stripe_url}  (its webhooks go to /webhooks/stripe)",
        "",
        "  Test cards (saved in the emulator; attach one with attachPaymentMethod):",
        "    pm_card_visa                succeeds (a new card each time it is attached)",
    ]
    lines += [f"    {pm:<27} {label} ({TEST_CARDS[label]})" for label, pm in cards.items()]
    lines += [
        "",
        "  Try:  { wallet { balanceCredits } }",
        '        mutation { attachPaymentMethod(input: {paymentMethodId: "pm_card_visa", '
        "setAsDefault: true}) { __typename } }",
        '        mutation { topup(input: {audCents: 50000, idempotencyKey: "demo-1"}) '
        "{ __typename ... on TopupSuccess { creditsGranted newBalance } } }",
        "",
        "  Ctrl-C stops the server and the emulator.",
        "",
    ]
    print("\n".join(lines), flush=True)
