"""`gql-billing demo`: a local playground with a Stripe emulator, SQLite and a demo token."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import socket
import tempfile
from pathlib import Path

import httpx

from . import auth, migrate
from .billing.organizations import create_organization, grant_credits
from .db import Database
from .graphql.ids import to_global_id
from .models import Plan
from .preflight import PreflightError
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


def require_free_port(host: str, port: int) -> None:
    """Refuse at once when the port is taken (say, by another demo): before the emulator
    starts and the banner prints a token for a server that would never run."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by a stopped server counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PreflightError(
                f"port {port} on {host} is in use ({exc.strerror}); is another demo running? "
                f"Stop it, or pass --port N"
            ) from None


def authenticate_payment(
    api_base: str, secret_key: str, payment_intent_id: str, *, success: bool = True
) -> str:
    """Pass (or fail) the 3-D Secure challenge of a PaymentIntent waiting for it, as
    `stripe.confirmCardPayment` does in a browser; returns the intent's new status."""
    headers = {"Authorization": f"Bearer {secret_key}"}
    try:
        with httpx.Client(base_url=api_base.rstrip("/"), headers=headers, timeout=10) as http:
            found = http.get(f"/v1/payment_intents/{payment_intent_id}")
            if found.status_code == 404:
                raise PreflightError(
                    f"the Stripe emulator has no PaymentIntent {payment_intent_id}"
                )
            found.raise_for_status()
            intent = found.json()
            if intent["status"] != "requires_action":
                raise PreflightError(
                    f"{payment_intent_id} is {intent['status']}, not waiting for 3-D Secure"
                )
            done = http.post(
                f"/v1/payment_intents/{payment_intent_id}/_authenticate",
                data={
                    "client_secret": intent["client_secret"],
                    "success": "true" if success else "false",
                },
            )
            done.raise_for_status()
            return str(done.json()["status"])
    except httpx.HTTPStatusError as exc:
        raise PreflightError(
            f"the Stripe emulator at {api_base} answered HTTP {exc.response.status_code}"
        ) from None
    except httpx.TransportError:
        raise PreflightError(
            f"cannot reach the Stripe emulator at {api_base}: is `gql-billing demo` running?"
        ) from None


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

    require_free_port(host, port)
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
        _banner(host, port, org_id, token, settings, cards)
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
    finally:
        stripe.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def shell_exports(base_url: str, settings: Settings, token: str, card_3ds: str) -> dict[str, str]:
    """The variables the demo prints as `export` lines for another shell: what operator
    commands need, and the names the README's curl and command examples use."""
    return {
        "GQL_BILLING_DATABASE_URL": settings.database_url,
        "STRIPE_SECRET_KEY": settings.stripe_secret_key or "",
        "STRIPE_API_BASE": settings.stripe_api_base or "",
        "STRIPE_WEBHOOK_SECRET": settings.stripe_webhook_secret or "",
        "GQL_BILLING_URL": f"{base_url}/graphql",
        "GQL_BILLING_API": base_url,
        "TOKEN": token,
        "CARD_3DS": card_3ds,
    }


def _banner(
    host: str, port: int, org_id: str, token: str, settings: Settings, cards: dict[str, str]
) -> None:
    base_url = f"http://{host}:{port}"
    url = f"{base_url}/graphql"
    stripe_url = settings.stripe_api_base or ""
    card_3ds = cards["needs 3-D Secure"]
    exports = shell_exports(base_url, settings, token, card_3ds)
    lines = [
        "",
        "gql-billing demo",
        f"  GraphiQL:        {url}",
        f"  REST reference:  {base_url}/v1/docs  (OpenAPI: {base_url}/v1/openapi.json)",
        f"  Organization:    {org_id}  (23,500 credits = A$235.00)",
        f"  Token:           {token}",
        '  In GraphiQL, Headers: {"Authorization": "Bearer ' + token + '"}',
        f"  Database:        {settings.database_url}  (deleted when the demo stops)",
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
        f"  3-D Secure: with {card_3ds} as the default card a top-up answers",
        "  AuthenticationRequired; pass the challenge (as Stripe.js would) with",
        f"    STRIPE_API_BASE={stripe_url} gql-billing demo authenticate pi_...",
        "  then send the same mutation with the same idempotency key: TopupSuccess.",
        "",
        "  Operator commands and the README's curl examples, from another shell:",
        *(f"    export {name}={shlex.quote(value)}" for name, value in exports.items()),
        "  e.g.  gql-billing report --org " + org_id,
        "",
        "  Ctrl-C stops the server and the emulator.",
        "",
    ]
    print("\n".join(lines), flush=True)
