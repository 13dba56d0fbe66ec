"""The seed's REST operation API, called the way its curl examples do, over the served app."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from conftest import Factory, Org
from gql_billing.settings import Settings
from support import databases
from support.app_server import serve
from support.cards import DECLINED_ON_CHARGE, THREE_D_SECURE, VISA
from support.emulator import StripeEmulator
from support.invariants import assert_invariants
from support.stripe_proxy import FaultProxy

PROBLEM = "application/problem+json"


def op_url(make: Factory, operation: str) -> str:
    return f"{make.app.base_url}/v1/op/{operation}"


def auth(org: Org, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {org.token}", **extra}


async def save_card_rest(make: Factory, org: Org, emulator: StripeEmulator, number: str) -> str:
    """curl -X POST .../payment_methods.create_setup_intent, confirm in Stripe.js, attach."""
    created = await make.http.post(
        op_url(make, "payment_methods.create_setup_intent"), headers=auth(org)
    )
    assert created.status_code == 200, created.text
    intent = created.json()
    assert set(intent) == {"client_secret", "setup_intent_id"}
    pm = await asyncio.to_thread(emulator.create_card_payment_method, number)
    await asyncio.to_thread(emulator.confirm_setup_intent, intent["setup_intent_id"], pm)
    attached = await make.http.post(
        op_url(make, "payment_methods.attach"),
        headers=auth(org),
        json={"payment_method_id": pm, "set_as_default": True},
    )
    assert attached.status_code == 200, attached.text
    assert attached.json()["payment_method"]["is_default"] is True
    return pm


async def topup(make: Factory, org: Org, key: str, **body: Any) -> httpx.Response:
    return await make.http.post(
        op_url(make, "billing.topup"), headers=auth(org, **{"Idempotency-Key": key}), json=body
    )


async def test_balance_and_the_seed_topup_example(make: Factory, emulator: StripeEmulator) -> None:
    org = await make.org(credits=23_500)
    await save_card_rest(make, org, emulator, VISA)

    before = await make.http.get(op_url(make, "billing.credits.balance"), headers=auth(org))
    done = await topup(make, org, "k", aud_cents=50_000)
    again = await topup(make, org, "k", aud_cents=50_000)
    after = await make.http.get(
        op_url(make, "billing.credits.balance"), headers=auth(org), params={"currency": "USD"}
    )

    assert before.json()["balance_credits"] == 23_500
    assert before.json()["balance"] == {
        "amount": "235.00",
        "currency": "AUD",
        "formatted": "$235.00",
        "is_estimate": False,
    }
    assert done.status_code == 200
    body = done.json()
    assert body["status"] == "succeeded"
    assert (body["credits_granted"], body["bonus_credits"], body["new_balance"]) == (
        50_000,
        0,
        73_500,
    )
    assert body["payment_intent_id"].startswith("pi_")
    assert again.json() == body
    assert after.json()["balance"]["amount"] == "480.12"
    await assert_invariants(make.app.billing.db)


async def test_transactions_page_with_a_cursor(make: Factory) -> None:
    org = await make.org(credits=100)
    from gql_billing.billing.organizations import grant_credits

    for i in range(4):
        await grant_credits(
            make.app.billing.db, organization_id=org.pk, amount_credits=10 + i, reason=f"r{i}"
        )

    first = await make.http.get(
        op_url(make, "billing.credits.transactions"), headers=auth(org), params={"limit": 3}
    )
    rest = await make.http.get(
        op_url(make, "billing.credits.transactions"),
        headers=auth(org),
        params={"limit": 3, "cursor": first.json()["next_cursor"]},
    )

    amounts = [t["amount_credits"] for t in first.json()["transactions"]]
    assert amounts == [13, 12, 11]
    assert [t["amount_credits"] for t in rest.json()["transactions"]] == [10, 100]
    assert rest.json()["next_cursor"] is None
    assert first.json()["transactions"][0]["balance_after_credits"] == 146


async def test_three_d_secure_is_402_with_the_client_secret(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    pm = await save_card_rest(make, org, emulator, THREE_D_SECURE)

    challenge = await topup(make, org, "3ds", aud_cents=10_000)
    body = challenge.json()
    await asyncio.to_thread(
        emulator.authenticate_payment_intent, body["payment_intent_id"], body["client_secret"]
    )
    paid = await topup(make, org, "3ds", aud_cents=10_000)

    assert challenge.status_code == 402
    assert challenge.headers["content-type"].startswith(PROBLEM)
    assert body["requires_action"] is True
    assert body["payment_method_id"] == pm
    assert body["client_secret"].startswith(body["payment_intent_id"])
    assert paid.status_code == 200 and paid.json()["new_balance"] == 10_000


async def test_no_card_and_declined_card_are_402(make: Factory, emulator: StripeEmulator) -> None:
    no_card = await make.org(name="No card")
    declined = await make.org(name="Declined")
    await save_card_rest(make, declined, emulator, DECLINED_ON_CHARGE)

    missing = await topup(make, no_card, "a", aud_cents=10_000)
    refused = await topup(make, declined, "b", aud_cents=10_000)

    assert (missing.status_code, missing.json()["title"]) == (402, "Payment Method Required")
    assert refused.status_code == 402
    assert refused.json()["decline_code"] == "card_declined"
    assert refused.headers["content-type"].startswith(PROBLEM)


async def test_stripe_outage_is_502(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()
    await save_card_rest(make, org, emulator, VISA)
    stripe_proxy.inject("http_500", path_contains="/v1/payment_intents")

    outage = await topup(make, org, "o", aud_cents=10_000)
    retried = await topup(make, org, "o", aud_cents=10_000)

    assert outage.status_code == 502
    assert retried.status_code == 200


async def test_no_billing_backend_is_503(
    tmp_path: Path, template_db: Path, http: httpx.AsyncClient
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=databases.sqlite_copy(template_db, tmp_path),
        run_worker=False,
    )
    async with serve(settings) as app:
        from gql_billing import auth as tokens
        from gql_billing.billing.organizations import create_organization

        org = await create_organization(app.billing.db, name="Unbilled")
        assert org.id is not None
        issued = await tokens.issue_token(
            app.billing.db, organization_id=org.id, scopes=tokens.ORGANIZATION_SCOPES
        )
        response = await http.post(
            f"{app.base_url}/v1/op/payment_methods.create_setup_intent",
            headers={"Authorization": f"Bearer {issued.token}"},
        )

    assert response.status_code == 503
    assert response.json()["title"] == "Billing Not Configured"


async def test_invalid_input_names_the_field_in_snake_case(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    await save_card_rest(make, org, emulator, VISA)

    below = await topup(make, org, "x", aud_cents=50)
    typed = await topup(make, org, "y", aud_cents="lots")
    no_key = await make.http.post(
        op_url(make, "billing.topup"), headers=auth(org), json={"credits": 10_000}
    )

    assert (below.status_code, below.json()["field"]) == (422, "aud_cents")
    assert (typed.status_code, typed.json()["field"]) == (422, "aud_cents")
    assert (no_key.status_code, no_key.json()["field"]) == (422, "idempotency_key")


async def test_set_auto_topup_the_seed_example(make: Factory, emulator: StripeEmulator) -> None:
    org = await make.org(credits=100_000)
    pm = await save_card_rest(make, org, emulator, VISA)

    response = await make.http.post(
        op_url(make, "billing.set_auto_topup"),
        headers=auth(org),
        json={
            "enabled": True,
            "threshold_credits": 5000,
            "topup_amount_credits": 50000,
            "daily_charge_cap_aud": 500,
        },
    )

    assert response.status_code == 200
    assert response.json() == {
        "enabled": True,
        "threshold_credits": 5000,
        "topup_amount_credits": 50000,
        "daily_charge_cap_aud": 500,
        "payment_method_id": pm,
    }


async def test_http_errors_are_problems(make: Factory) -> None:
    org = await make.org()
    reader = make.client(await make.token(org.pk, "billing:read"))

    unauthenticated = await make.http.get(op_url(make, "billing.credits.balance"))
    forbidden = await make.http.post(
        op_url(make, "billing.topup"), headers={"Authorization": f"Bearer {reader.token}"}, json={}
    )
    unknown = await make.http.get(op_url(make, "billing.nothing"), headers=auth(org))
    wrong_method = await make.http.get(op_url(make, "billing.topup"), headers=auth(org))
    bad_json = await make.http.post(
        op_url(make, "billing.topup"),
        headers={**auth(org), "content-type": "application/json"},
        content=b"{not json",
    )

    statuses = [
        r.status_code for r in (unauthenticated, forbidden, unknown, wrong_method, bad_json)
    ]
    assert statuses == [401, 403, 404, 405, 400]
    for response in (unauthenticated, forbidden, unknown, wrong_method, bad_json):
        assert response.headers["content-type"].startswith(PROBLEM)
        assert {"type", "title", "status", "detail"} <= set(response.json())
