"""A service token (billing:spend) sees what a spend needs and nothing of the customer's
cards, top-ups or secrets, even where a spend result nests the wallet."""

from __future__ import annotations

from typing import Any

from conftest import Factory, Org
from gql_billing.money import MAX_CREDITS
from support.cards import save_card
from support.emulator import StripeEmulator

WALLET_FIELDS = """
  balanceCredits reservedCredits availableCredits
  defaultPaymentMethod { stripeId last4 expYear }
  autoTopup {
    enabled thresholdCredits topupAmountCredits dailyChargeCapAud chargedTodayAudCents
    disabledReason lastAttempt { id clientSecret paymentIntentId }
  }
"""

RESERVE = f"""
mutation Reserve($input: ReserveCreditsInput!) {{
  reserveCredits(input: $input) {{
    __typename
    ... on ReservationCreated {{ reservation {{ id status }} wallet {{ {WALLET_FIELDS} }} }}
    ... on InsufficientCredits {{ availableCredits requestedCredits detail }}
    ... on InvalidInput {{ field }}
  }}
}}
"""

RELEASE = f"""
mutation Release($input: ReleaseReservationInput!) {{
  releaseReservation(input: $input) {{
    __typename ... on ReservationReleased {{ wallet {{ {WALLET_FIELDS} }} }}
  }}
}}
"""

OWN_WALLET = f"{{ wallet {{ {WALLET_FIELDS} }} }}"

SET_AUTO_TOPUP = """
mutation {
  setAutoTopup(input: {enabled: true, thresholdCredits: 5000, topupAmountCredits: 50000,
                       dailyChargeCapAud: 500}) { __typename }
}
"""

HIDDEN = {
    "defaultPaymentMethod",
    "disabledReason",
    "lastAttempt",
}


async def customer_with_card(make: Factory, emulator: StripeEmulator) -> tuple[Org, str]:
    org = await make.org(credits=123_456)
    pm = await save_card(org.api, emulator)
    updated = await org.api(SET_AUTO_TOPUP)
    assert updated["setAutoTopup"]["__typename"] == "AutoTopupUpdated", updated
    return org, pm


def forbidden_fields(body: dict[str, Any]) -> set[str]:
    return {str(e["path"][-1]) for e in body["errors"] if e["extensions"]["code"] == "FORBIDDEN"}


async def test_a_spend_result_shows_a_service_token_no_card_or_top_up(
    make: Factory, emulator: StripeEmulator
) -> None:
    # given an organization with a saved card and auto top-up on
    org, pm = await customer_with_card(make, emulator)
    service = make.client(await make.token(None, "billing:spend"))

    # when a service token reserves and asks the nested wallet for everything
    response = await service.post(
        RESERVE,
        {
            "input": {
                "organizationId": org.id,
                "amountCredits": 456,
                "reference": "o-1",
                "idempotencyKey": "o-1",
            }
        },
    )

    # then the spend and the balance resolve
    body = response.json()
    result = body["data"]["reserveCredits"]
    assert result["__typename"] == "ReservationCreated", body
    wallet = result["wallet"]
    assert (wallet["balanceCredits"], wallet["reservedCredits"], wallet["availableCredits"]) == (
        123_456,
        456,
        123_000,
    )
    # but the card and top-up fields are FORBIDDEN and null, the settings read as off
    assert forbidden_fields(body) == HIDDEN, body["errors"]
    assert wallet["defaultPaymentMethod"] is None
    assert wallet["autoTopup"] == {
        "enabled": False,
        "thresholdCredits": 0,
        "topupAmountCredits": 0,
        "dailyChargeCapAud": 0,
        "chargedTodayAudCents": 0,
        "disabledReason": None,
        "lastAttempt": None,
    }
    assert pm not in response.text

    # and the same holds on a settlement's wallet
    released = await service.post(
        RELEASE, {"input": {"reservationId": result["reservation"]["id"]}}
    )
    assert released.json()["data"]["releaseReservation"]["__typename"] == "ReservationReleased"
    assert forbidden_fields(released.json()) == HIDDEN
    assert pm not in released.text


async def test_the_organizations_own_token_still_sees_its_card_and_settings(
    make: Factory, emulator: StripeEmulator
) -> None:
    org, pm = await customer_with_card(make, emulator)

    wallet = (await org.api(OWN_WALLET))["wallet"]

    assert wallet["defaultPaymentMethod"]["stripeId"] == pm
    assert wallet["autoTopup"]["enabled"] is True
    assert (wallet["autoTopup"]["thresholdCredits"], wallet["autoTopup"]["dailyChargeCapAud"]) == (
        5000,
        500,
    )


async def test_a_failed_reserve_does_not_tell_a_service_token_the_balance(
    make: Factory, emulator: StripeEmulator
) -> None:
    org, _ = await customer_with_card(make, emulator)
    service = make.client(await make.token(None, "billing:spend"))

    # when a service token asks for more than any balance
    data = await service(
        RESERVE,
        {
            "input": {
                "organizationId": org.id,
                "amountCredits": MAX_CREDITS,
                "reference": "probe",
                "idempotencyKey": "probe",
            }
        },
    )

    # then it learns only that the amount is not available
    refused = data["reserveCredits"]
    assert refused["__typename"] == "InsufficientCredits", refused
    assert (refused["availableCredits"], refused["requestedCredits"]) == (0, MAX_CREDITS)
    assert "123456" not in refused["detail"] and "123,456" not in refused["detail"]


async def test_an_unknown_organization_is_invalid_input_to_a_service_token(
    make: Factory,
) -> None:
    # Service tokens name organizations by design; existence is not hidden from them.
    service = make.client(await make.token(None, "billing:spend"))

    data = await service(
        RESERVE,
        {
            "input": {
                "organizationId": "T3JnYW5pemF0aW9uOjk5OTk5",
                "amountCredits": 1,
                "reference": "x",
                "idempotencyKey": "x",
            }
        },
    )

    assert (data["reserveCredits"]["__typename"], data["reserveCredits"]["field"]) == (
        "InvalidInput",
        "organizationId",
    )
