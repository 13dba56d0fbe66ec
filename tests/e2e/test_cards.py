"""Saved cards over HTTP: SetupIntent, attach, default, detach, against the emulator."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col

from conftest import Factory, Org
from gql_billing import models
from gql_billing.settings import Settings
from support.app_server import serve
from support.cards import VISA, save_card
from support.emulator import StripeEmulator
from support.stripe_proxy import FaultProxy

MASTERCARD = "5555555555554444"
DECLINED_AT_SETUP = "4000000000000002"

CREATE_SETUP_INTENT = """
mutation {
  createSetupIntent {
    __typename
    ... on SetupIntentCreated { clientSecret setupIntentId }
    ... on Problem { title httpStatus: status detail }
  }
}
"""

ATTACH = """
mutation Attach($pm: String!, $default: Boolean!) {
  attachPaymentMethod(input: {paymentMethodId: $pm, setAsDefault: $default}) {
    __typename
    ... on PaymentMethodAttached {
      paymentMethod { id stripeId brand last4 expMonth expYear isDefault }
      wallet { defaultPaymentMethod { stripeId } }
    }
    ... on CardDeclined { declineCode }
    ... on InvalidInput { field }
    ... on Problem { title httpStatus: status detail }
  }
}
"""

SET_DEFAULT = """
mutation SetDefault($pm: String!) {
  setDefaultPaymentMethod(input: {paymentMethodId: $pm}) {
    __typename
    ... on DefaultPaymentMethodSet {
      paymentMethod { id stripeId isDefault }
      wallet { defaultPaymentMethod { stripeId } }
    }
    ... on Problem { title httpStatus: status detail }
  }
}
"""

DETACH = """
mutation Detach($pm: String!) {
  detachPaymentMethod(input: {paymentMethodId: $pm}) {
    __typename
    ... on PaymentMethodDetached { deletedId paymentMethodId }
    ... on Problem { title httpStatus: status detail }
  }
}
"""

TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) {
    __typename
    ... on Problem { title httpStatus: status detail }
  }
}
"""

CARDS = """
{ paymentMethods { id stripeId brand last4 expMonth expYear isDefault }
  wallet { defaultPaymentMethod { stripeId } } }
"""

NODE = """
query Node($id: ID!) { node(id: $id) { __typename id ... on PaymentMethod { stripeId last4 } } }
"""


# -- helpers ------------------------------------------------------------------------------------


async def create_setup_intent(org: Org) -> dict[str, Any]:
    return (await org.api(CREATE_SETUP_INTENT))["createSetupIntent"]  # type: ignore[no-any-return]


async def attach(org: Org, pm: str, *, default: bool) -> dict[str, Any]:
    data = await org.api(ATTACH, {"pm": pm, "default": default})
    return data["attachPaymentMethod"]  # type: ignore[no-any-return]


async def set_default(org: Org, pm: str) -> dict[str, Any]:
    return (await org.api(SET_DEFAULT, {"pm": pm}))["setDefaultPaymentMethod"]  # type: ignore[no-any-return]


async def detach(org: Org, pm: str) -> dict[str, Any]:
    return (await org.api(DETACH, {"pm": pm}))["detachPaymentMethod"]  # type: ignore[no-any-return]


async def cards(org: Org) -> list[dict[str, Any]]:
    return (await org.api(CARDS))["paymentMethods"]  # type: ignore[no-any-return]


async def default_card(org: Org) -> str | None:
    default = (await org.api(CARDS))["wallet"]["defaultPaymentMethod"]
    return None if default is None else default["stripeId"]  # type: ignore[no-any-return]


async def stripe_get(emulator: StripeEmulator, path: str) -> dict[str, Any]:
    return await asyncio.to_thread(emulator._call, "GET", path)


async def new_card(emulator: StripeEmulator, number: str = VISA) -> str:
    """A PaymentMethod as Stripe.js creates it, not yet attached to any customer."""
    return await asyncio.to_thread(emulator.create_card_payment_method, number)


async def customer_of(emulator: StripeEmulator, pm: str) -> str | None:
    return (await stripe_get(emulator, f"/v1/payment_methods/{pm}"))["customer"]  # type: ignore[no-any-return]


# -- createSetupIntent --------------------------------------------------------------------------


async def test_setup_intent_is_off_session_for_a_new_customer(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()

    created = await create_setup_intent(org)

    assert created["__typename"] == "SetupIntentCreated"
    assert created["setupIntentId"].startswith("seti_")
    assert created["clientSecret"].startswith(created["setupIntentId"] + "_secret_")
    intent = await stripe_get(emulator, f"/v1/setup_intents/{created['setupIntentId']}")
    assert intent["usage"] == "off_session"
    assert intent["customer"].startswith("cus_")
    customer = await stripe_get(emulator, f"/v1/customers/{intent['customer']}")
    assert customer["name"] == "Acme Imagery"
    assert stripe_proxy.count("POST", "/v1/customers") == 1


async def test_second_setup_intent_reuses_the_customer(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()

    first = await create_setup_intent(org)
    second = await create_setup_intent(org)

    assert first["setupIntentId"] != second["setupIntentId"]
    one = await stripe_get(emulator, f"/v1/setup_intents/{first['setupIntentId']}")
    two = await stripe_get(emulator, f"/v1/setup_intents/{second['setupIntentId']}")
    assert one["customer"] == two["customer"]
    assert stripe_proxy.count("POST", "/v1/customers") == 1


async def test_each_organization_gets_its_own_customer(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    first = await make.org(name="First")
    second = await make.org(name="Second")

    a = await create_setup_intent(first)
    b = await create_setup_intent(second)

    one = await stripe_get(emulator, f"/v1/setup_intents/{a['setupIntentId']}")
    two = await stripe_get(emulator, f"/v1/setup_intents/{b['setupIntentId']}")
    assert one["customer"] != two["customer"]
    assert stripe_proxy.count("POST", "/v1/customers") == 2


async def test_stripe_500_on_setup_intent_is_provider_unavailable_then_recovers(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()
    stripe_proxy.inject("http_500", path_contains="/v1/setup_intents")

    failed = await create_setup_intent(org)
    retried = await create_setup_intent(org)

    assert (failed["__typename"], failed["httpStatus"]) == ("PaymentProviderUnavailable", 502)
    assert retried["__typename"] == "SetupIntentCreated"
    assert stripe_proxy.count("POST", "/v1/customers") == 1, "the customer is kept"


# -- attachPaymentMethod ------------------------------------------------------------------------


async def test_attach_as_default_stores_the_card_details(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    created = await create_setup_intent(org)
    pm = await new_card(emulator)
    await asyncio.to_thread(emulator.confirm_setup_intent, created["setupIntentId"], pm)

    attached = await attach(org, pm, default=True)

    assert attached["__typename"] == "PaymentMethodAttached"
    card = attached["paymentMethod"]
    assert card["stripeId"] == pm
    assert (card["brand"], card["last4"], card["expMonth"], card["expYear"]) == (
        "visa",
        "4242",
        12,
        2034,
    )
    assert card["isDefault"] is True
    assert attached["wallet"] == {"defaultPaymentMethod": {"stripeId": pm}}
    setup = await stripe_get(emulator, f"/v1/setup_intents/{created['setupIntentId']}")
    assert await customer_of(emulator, pm) == setup["customer"]
    customer = await stripe_get(emulator, f"/v1/customers/{setup['customer']}")
    assert customer["invoice_settings"]["default_payment_method"] == pm


async def test_payment_methods_lists_the_default_first(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    older = await save_card(org.api, emulator, VISA, default=False)
    newer = await save_card(org.api, emulator, MASTERCARD, default=True)

    listed = await cards(org)

    assert [(c["stripeId"], c["last4"], c["isDefault"]) for c in listed] == [
        (newer, "4444", True),
        (older, "4242", False),
    ]


async def test_attach_without_set_as_default_keeps_the_old_default(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    first = await save_card(org.api, emulator, VISA, default=True)
    customer = await customer_of(emulator, first)

    second = await save_card(org.api, emulator, MASTERCARD, default=False)

    assert await default_card(org) == first
    assert [(c["stripeId"], c["isDefault"]) for c in await cards(org)] == [
        (first, True),
        (second, False),
    ]
    stripe_customer = await stripe_get(emulator, f"/v1/customers/{customer}")
    assert stripe_customer["invoice_settings"]["default_payment_method"] == first
    assert await customer_of(emulator, second) == customer


async def test_first_card_attached_without_default_is_not_made_default(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()

    pm = await save_card(org.api, emulator, default=False)

    assert [(c["stripeId"], c["isDefault"]) for c in await cards(org)] == [(pm, False)]
    assert await default_card(org) is None


async def test_attaching_the_same_card_twice_keeps_one_row(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    pm = await save_card(org.api, emulator, default=False)

    again = await attach(org, pm, default=True)

    assert again["__typename"] == "PaymentMethodAttached"
    assert [(c["stripeId"], c["isDefault"]) for c in await cards(org)] == [(pm, True)]


async def test_another_organizations_card_is_not_found_and_not_moved(
    make: Factory, emulator: StripeEmulator
) -> None:
    owner = await make.org(name="Owner")
    pm = await save_card(owner.api, emulator)
    owners_customer = await customer_of(emulator, pm)
    thief = await make.org(name="Thief")

    result = await attach(thief, pm, default=True)

    assert (result["__typename"], result["httpStatus"]) == ("NotFound", 404)
    assert await customer_of(emulator, pm) == owners_customer
    assert await cards(thief) == []
    assert await default_card(owner) == pm


async def test_unknown_payment_method_is_not_found(make: Factory, emulator: StripeEmulator) -> None:
    org = await make.org()

    result = await attach(org, "pm_doesnotexist", default=False)

    assert (result["__typename"], result["httpStatus"]) == ("NotFound", 404)
    assert await cards(org) == []


@pytest.mark.parametrize("pm", ["card_123", "", "pm_" + "x" * 300, "pm_\n1"])
async def test_malformed_payment_method_id_is_invalid_input_without_calling_stripe(
    make: Factory, stripe_proxy: FaultProxy, pm: str
) -> None:
    org = await make.org()

    result = await attach(org, pm, default=True)

    assert result["__typename"] == "InvalidInput"
    assert (result["field"], result["httpStatus"]) == ("paymentMethodId", 422)
    assert stripe_proxy.requests == []


async def test_card_declined_at_attach_is_card_declined_and_not_saved(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    pm = await new_card(emulator, DECLINED_AT_SETUP)

    result = await attach(org, pm, default=True)

    assert (result["__typename"], result["httpStatus"]) == ("CardDeclined", 402)
    assert result["declineCode"] == "card_declined"
    assert await cards(org) == []
    assert await default_card(org) is None
    assert await customer_of(emulator, pm) is None


async def test_stripe_500_on_attach_is_provider_unavailable(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()
    pm = await new_card(emulator)
    stripe_proxy.inject("http_500", path_contains=f"/v1/payment_methods/{pm}/attach")

    failed = await attach(org, pm, default=True)
    retried = await attach(org, pm, default=True)

    assert (failed["__typename"], failed["httpStatus"]) == ("PaymentProviderUnavailable", 502)
    assert retried["__typename"] == "PaymentMethodAttached"
    assert [c["stripeId"] for c in await cards(org)] == [pm]


async def test_saved_card_is_refetchable_by_node_only_by_its_owner(
    make: Factory, emulator: StripeEmulator
) -> None:
    owner = await make.org(name="Owner")
    await save_card(owner.api, emulator)
    [card] = await cards(owner)
    other = await make.org(name="Other")

    mine = (await owner.api(NODE, {"id": card["id"]}))["node"]
    theirs = (await other.api(NODE, {"id": card["id"]}))["node"]

    assert mine == {
        "__typename": "PaymentMethod",
        "id": card["id"],
        "stripeId": card["stripeId"],
        "last4": "4242",
    }
    assert theirs is None


# -- setDefaultPaymentMethod --------------------------------------------------------------------


async def test_set_default_switches_the_default_here_and_at_stripe(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    first = await save_card(org.api, emulator, VISA, default=True)
    second = await save_card(org.api, emulator, MASTERCARD, default=False)
    customer = await customer_of(emulator, first)

    result = await set_default(org, second)

    assert result["__typename"] == "DefaultPaymentMethodSet"
    assert (result["paymentMethod"]["stripeId"], result["paymentMethod"]["isDefault"]) == (
        second,
        True,
    )
    assert result["wallet"] == {"defaultPaymentMethod": {"stripeId": second}}
    assert [(c["stripeId"], c["isDefault"]) for c in await cards(org)] == [
        (second, True),
        (first, False),
    ]
    stripe_customer = await stripe_get(emulator, f"/v1/customers/{customer}")
    assert stripe_customer["invoice_settings"]["default_payment_method"] == second


async def test_set_default_of_an_unknown_card_is_not_found(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    pm = await save_card(org.api, emulator)

    result = await set_default(org, "pm_doesnotexist")

    assert (result["__typename"], result["httpStatus"]) == ("NotFound", 404)
    assert await default_card(org) == pm


async def test_set_default_of_another_organizations_card_is_not_found(
    make: Factory, emulator: StripeEmulator
) -> None:
    owner = await make.org(name="Owner")
    owners_card = await save_card(owner.api, emulator, VISA)
    other = await make.org(name="Other")
    others_card = await save_card(other.api, emulator, MASTERCARD)
    others_customer = await customer_of(emulator, others_card)

    result = await set_default(other, owners_card)

    assert (result["__typename"], result["httpStatus"]) == ("NotFound", 404)
    assert await default_card(other) == others_card
    assert await default_card(owner) == owners_card
    stripe_customer = await stripe_get(emulator, f"/v1/customers/{others_customer}")
    assert stripe_customer["invoice_settings"]["default_payment_method"] == others_card


async def test_stripe_500_on_set_default_is_provider_unavailable_and_changes_nothing(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()
    first = await save_card(org.api, emulator, VISA, default=True)
    second = await save_card(org.api, emulator, MASTERCARD, default=False)
    customer = await customer_of(emulator, first)
    stripe_proxy.inject("http_500", path_contains=f"/v1/customers/{customer}")

    result = await set_default(org, second)

    assert (result["__typename"], result["httpStatus"]) == ("PaymentProviderUnavailable", 502)
    assert await default_card(org) == first
    stripe_customer = await stripe_get(emulator, f"/v1/customers/{customer}")
    assert stripe_customer["invoice_settings"]["default_payment_method"] == first


# -- detachPaymentMethod ------------------------------------------------------------------------


async def test_detach_returns_the_ids_and_removes_the_card(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    kept = await save_card(org.api, emulator, VISA, default=True)
    removed = await save_card(org.api, emulator, MASTERCARD, default=False)
    global_id = {c["stripeId"]: c["id"] for c in await cards(org)}[removed]

    result = await detach(org, removed)

    assert result == {
        "__typename": "PaymentMethodDetached",
        "deletedId": global_id,
        "paymentMethodId": removed,
    }
    assert [c["stripeId"] for c in await cards(org)] == [kept]
    assert await customer_of(emulator, removed) is None
    assert (await org.api(NODE, {"id": global_id}))["node"] is None


async def test_detaching_the_default_card_leaves_no_default(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    pm = await save_card(org.api, emulator, default=True)

    result = await detach(org, pm)

    assert result["__typename"] == "PaymentMethodDetached"
    assert await cards(org) == []
    assert await default_card(org) is None


async def test_detach_of_an_unknown_card_is_not_found(make: Factory) -> None:
    org = await make.org()

    result = await detach(org, "pm_doesnotexist")

    assert (result["__typename"], result["httpStatus"]) == ("NotFound", 404)


async def test_detach_of_another_organizations_card_is_not_found_and_keeps_it(
    make: Factory, emulator: StripeEmulator
) -> None:
    owner = await make.org(name="Owner")
    pm = await save_card(owner.api, emulator)
    customer = await customer_of(emulator, pm)
    other = await make.org(name="Other")

    result = await detach(other, pm)

    assert (result["__typename"], result["httpStatus"]) == ("NotFound", 404)
    assert [c["stripeId"] for c in await cards(owner)] == [pm]
    assert await customer_of(emulator, pm) == customer


async def test_stripe_500_on_detach_is_provider_unavailable_and_keeps_the_card(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()
    pm = await save_card(org.api, emulator)
    stripe_proxy.inject("http_500", path_contains=f"/v1/payment_methods/{pm}/detach")

    failed = await detach(org, pm)
    retried = await detach(org, pm)

    assert (failed["__typename"], failed["httpStatus"]) == ("PaymentProviderUnavailable", 502)
    assert retried["__typename"] == "PaymentMethodDetached"
    assert await cards(org) == []


async def test_detaching_the_default_card_while_auto_topup_is_on_is_invalid_state(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    pm = await save_card(org.api, emulator, default=True)
    spare = await save_card(org.api, emulator, MASTERCARD, default=False)
    # No setAutoTopup mutation yet: switch it on in the store, as that mutation would.
    async with make.app.billing.db.write() as session:
        await session.execute(
            update(models.Wallet)
            .where(col(models.Wallet.organization_id) == org.pk)
            .values(auto_topup_enabled=True)
        )

    refused = await detach(org, pm)
    spare_removed = await detach(org, spare)

    assert (refused["__typename"], refused["httpStatus"]) == ("InvalidState", 409)
    assert spare_removed["__typename"] == "PaymentMethodDetached"
    assert [c["stripeId"] for c in await cards(org)] == [pm]
    assert await customer_of(emulator, pm) is not None


# -- no Stripe configured -----------------------------------------------------------------------


@pytest.fixture
async def unconfigured(
    tmp_path: Path, template_db: Path, http: httpx.AsyncClient
) -> AsyncIterator[Factory]:
    """A second gateway, started without STRIPE_SECRET_KEY."""
    db_path = tmp_path / "unconfigured.db"
    shutil.copy(template_db, db_path)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{db_path}",
        stripe_secret_key=None,
    )
    async with serve(settings) as served:
        yield Factory(served, http)


@pytest.mark.parametrize(
    ("document", "variables", "field"),
    [
        (CREATE_SETUP_INTENT, None, "createSetupIntent"),
        (ATTACH, {"pm": "pm_123", "default": True}, "attachPaymentMethod"),
        (SET_DEFAULT, {"pm": "pm_123"}, "setDefaultPaymentMethod"),
        (DETACH, {"pm": "pm_123"}, "detachPaymentMethod"),
        (
            TOPUP,
            {"input": {"audCents": 10_000, "idempotencyKey": "no-stripe"}},
            "topup",
        ),
    ],
)
async def test_without_stripe_payment_operations_answer_billing_not_configured(
    unconfigured: Factory, document: str, variables: dict[str, Any] | None, field: str
) -> None:
    org = await unconfigured.org(credits=23_500)

    result = (await org.api(document, variables))[field]

    assert result["__typename"] == "BillingNotConfigured"
    assert result["httpStatus"] == 503
    assert result["detail"]


async def test_without_stripe_the_topup_key_is_not_consumed(unconfigured: Factory) -> None:
    org = await unconfigured.org()
    variables = {"input": {"audCents": 10_000, "idempotencyKey": "later"}}

    await org.api(TOPUP, variables)
    topups = await org.api("{ topups { edges { node { id } } } }")

    assert topups["topups"]["edges"] == []
