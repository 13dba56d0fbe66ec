"""Top-up over HTTP against the real app, the Stripe SDK and the emulator: every outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import Factory, Org
from support.cards import DECLINED_ON_CHARGE, THREE_D_SECURE, save_card
from support.emulator import StripeEmulator
from support.invariants import assert_invariants
from support.stripe_proxy import FaultProxy

TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) {
    __typename
    ... on TopupSuccess {
      topupAttemptId paymentIntentId status creditsGranted bonusCredits newBalance
      wallet { balanceCredits availableCredits }
    }
    ... on AuthenticationRequired {
      clientSecret paymentIntentId paymentMethodId requiresAction challengeAttemptId: topupAttemptId
    }
    ... on CardDeclined { declineCode }
    ... on InvalidInput { field }
    ... on Problem { title httpStatus: status detail }
  }
}
"""

RESUME = """
mutation Resume($id: ID!) {
  resumeTopup(input: {topupAttemptId: $id}) {
    __typename
    ... on TopupSuccess { creditsGranted newBalance }
    ... on AuthenticationRequired { clientSecret }
    ... on Problem { detail }
  }
}
"""

LEDGER = """
{ wallet { balanceCredits reservedCredits availableCredits }
  transactions(first: 100) { edges { node {
    kind amountCredits balanceDeltaCredits availableDeltaCredits balanceAfterCredits
    topup { id status paymentIntentId } } } } }
"""

TOPUPS = """
{ topups(first: 10) { edges { node {
  id status trigger audCents creditsGranted bonusCredits paymentIntentId clientSecret
  failureReason completedAt } } } }
"""


async def topup(org: Org, headers: dict[str, str] | None = None, **input: Any) -> dict[str, Any]:
    data = await org.api(TOPUP, {"input": input}, headers=headers)
    return data["topup"]  # type: ignore[no-any-return]


async def ledger_kinds(org: Org) -> list[str]:
    data = await org.api(LEDGER)
    return [edge["node"]["kind"] for edge in data["transactions"]["edges"]]


def intents_of(emulator: StripeEmulator, amount: int | None = None) -> list[dict[str, Any]]:
    intents = emulator.list_payment_intents()
    return [i for i in intents if amount is None or i["amount"] == amount]


async def test_seed_example_grants_on_a_wallet_of_23500(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)

    result = await topup(org, audCents=50_000, idempotencyKey="k")

    assert result["__typename"] == "TopupSuccess"
    assert result["status"] == "succeeded"
    assert (result["creditsGranted"], result["bonusCredits"], result["newBalance"]) == (
        50_000,
        0,
        73_500,
    )
    assert result["wallet"] == {"balanceCredits": 73_500, "availableCredits": 73_500}
    assert result["paymentIntentId"].startswith("pi_")
    intent = emulator.retrieve_payment_intent(result["paymentIntentId"])
    assert (intent["amount"], intent["currency"], intent["status"]) == (50_000, "aud", "succeeded")
    assert await ledger_kinds(org) == ["GRANT", "ADJUSTMENT"]
    await assert_invariants(make.app.billing.db)


@pytest.mark.parametrize(
    ("charge", "bonus"),
    [(2_000_000, 0), (2_000_001, 100_000), (2_100_000, 105_000)],
)
async def test_volume_bonus_starts_above_20000_dollars(
    make: Factory, emulator: StripeEmulator, charge: int, bonus: int
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)

    result = await topup(org, credits=charge, idempotencyKey=f"bonus-{charge}")

    assert result["__typename"] == "TopupSuccess"
    assert (result["creditsGranted"], result["bonusCredits"]) == (charge, bonus)
    assert result["newBalance"] == 23_500 + charge + bonus
    expected = ["BONUS", "GRANT", "ADJUSTMENT"] if bonus else ["GRANT", "ADJUSTMENT"]
    assert await ledger_kinds(org) == expected
    await assert_invariants(make.app.billing.db)


async def test_same_key_replays_the_success_without_charging_again(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)

    first = await topup(org, audCents=50_000, idempotencyKey="again")
    second = await topup(org, audCents=50_000, idempotencyKey="again")

    assert second == first
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1
    assert len(intents_of(emulator, 50_000)) == 1
    assert await ledger_kinds(org) == ["GRANT", "ADJUSTMENT"]


async def test_key_from_the_idempotency_key_header(make: Factory, emulator: StripeEmulator) -> None:
    org = await make.org()
    await save_card(org.api, emulator)

    first = await topup(org, headers={"Idempotency-Key": "hdr-1"}, audCents=10_000)
    replay = await topup(org, headers={"Idempotency-Key": "hdr-1"}, audCents=10_000)

    assert first["__typename"] == "TopupSuccess"
    assert replay == first


async def test_header_key_does_not_apply_to_two_topups_in_one_document(make: Factory) -> None:
    org = await make.org()
    document = """mutation {
      a: topup(input: {audCents: 10000}) { __typename ... on InvalidInput { field } }
      b: topup(input: {audCents: 10000}) { __typename ... on InvalidInput { field } }
    }"""

    data = await org.api(document, headers={"Idempotency-Key": "shared"})

    assert data["a"] == data["b"] == {"__typename": "InvalidInput", "field": "idempotencyKey"}


async def test_same_key_different_input_is_a_conflict(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    await save_card(org.api, emulator)
    await topup(org, audCents=10_000, idempotencyKey="k1")

    result = await topup(org, audCents=20_000, idempotencyKey="k1")

    assert result["__typename"] == "IdempotencyConflict"
    assert result["httpStatus"] == 409
    assert len(intents_of(emulator)) == 1


@pytest.mark.parametrize(
    ("input", "field"),
    [
        ({"audCents": 10_000, "credits": 10_000, "idempotencyKey": "x"}, "audCents"),
        ({"idempotencyKey": "x"}, "audCents"),
        ({"audCents": 9_999, "idempotencyKey": "x"}, "audCents"),
        ({"credits": 9_999, "idempotencyKey": "x"}, "credits"),
        ({"audCents": 100_000_000, "idempotencyKey": "x"}, "audCents"),
        ({"audCents": -5, "idempotencyKey": "x"}, "audCents"),
        ({"audCents": 10_000}, "idempotencyKey"),
        ({"audCents": 10_000, "idempotencyKey": ""}, "idempotencyKey"),
        ({"audCents": 10_000, "idempotencyKey": "k" * 256}, "idempotencyKey"),
        ({"audCents": 10_000, "idempotencyKey": "ключ"}, "idempotencyKey"),
    ],
)
async def test_invalid_input_names_the_field_and_changes_nothing(
    make: Factory, emulator: StripeEmulator, input: dict[str, Any], field: str
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)

    result = await topup(org, **input)

    assert result["__typename"] == "InvalidInput"
    assert (result["field"], result["httpStatus"]) == (field, 422)
    assert len(intents_of(emulator)) == 0
    assert (await org.api(TOPUPS))["topups"]["edges"] == []
    assert await ledger_kinds(org) == ["ADJUSTMENT"]


async def test_credits_that_are_not_integers_are_rejected_before_running(make: Factory) -> None:
    org = await make.org()

    response = await org.api.post(TOPUP, {"input": {"credits": 10000.5, "idempotencyKey": "f"}})

    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert "Credits" in body["errors"][0]["message"]


async def test_no_default_card_needs_a_payment_method_and_keeps_the_key(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()

    before = await topup(org, audCents=10_000, idempotencyKey="later")
    await save_card(org.api, emulator)
    after = await topup(org, audCents=10_000, idempotencyKey="later")

    assert (before["__typename"], before["httpStatus"]) == ("PaymentMethodRequired", 402)
    assert after["__typename"] == "TopupSuccess"


async def test_declined_card_reports_the_decline_code_and_replays_it(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org(credits=500)
    await save_card(org.api, emulator, DECLINED_ON_CHARGE)

    first = await topup(org, audCents=10_000, idempotencyKey="d")
    again = await topup(org, audCents=10_000, idempotencyKey="d")

    assert (first["__typename"], first["httpStatus"]) == ("CardDeclined", 402)
    assert first["declineCode"] == "card_declined"
    assert again == first
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1
    attempts = (await org.api(TOPUPS))["topups"]["edges"]
    assert [a["node"]["status"] for a in attempts] == ["FAILED"]
    assert attempts[0]["node"]["failureReason"]
    assert await ledger_kinds(org) == ["ADJUSTMENT"]
    await assert_invariants(make.app.billing.db)


async def test_three_d_secure_round_trip_grants_exactly_once(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=23_500)
    pm = await save_card(org.api, emulator, THREE_D_SECURE)

    challenge = await topup(org, audCents=50_000, idempotencyKey="3ds")
    assert challenge["__typename"] == "AuthenticationRequired"
    assert challenge["httpStatus"] == 402 and challenge["requiresAction"] is True
    assert challenge["paymentMethodId"] == pm
    assert challenge["clientSecret"].startswith(challenge["paymentIntentId"])
    pending = (await org.api(TOPUPS))["topups"]["edges"][0]["node"]
    assert pending["status"] == "REQUIRES_ACTION"
    assert pending["clientSecret"] == challenge["clientSecret"]
    assert pending["id"] == challenge["challengeAttemptId"]

    # A retry before the customer acted asks again, and charges nothing new.
    still = await topup(org, audCents=50_000, idempotencyKey="3ds")
    assert still["__typename"] == "AuthenticationRequired"
    assert still["paymentIntentId"] == challenge["paymentIntentId"]

    await asyncio.to_thread(
        emulator.authenticate_payment_intent,
        challenge["paymentIntentId"],
        challenge["clientSecret"],
    )
    done = await topup(org, audCents=50_000, idempotencyKey="3ds")
    replay = await topup(org, audCents=50_000, idempotencyKey="3ds")

    assert done["__typename"] == "TopupSuccess"
    assert done["paymentIntentId"] == challenge["paymentIntentId"]
    assert (done["creditsGranted"], done["newBalance"]) == (50_000, 73_500)
    assert replay == done
    assert len(intents_of(emulator)) == 1
    assert await ledger_kinds(org) == ["GRANT", "ADJUSTMENT"]
    finished = (await org.api(TOPUPS))["topups"]["edges"][0]["node"]
    assert (finished["status"], finished["clientSecret"]) == ("SUCCEEDED", None)
    await assert_invariants(make.app.billing.db)


async def test_failed_challenge_asks_again_and_grants_nothing(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    await save_card(org.api, emulator, THREE_D_SECURE)
    challenge = await topup(org, audCents=10_000, idempotencyKey="3ds-fail")

    await asyncio.to_thread(
        emulator.authenticate_payment_intent,
        challenge["paymentIntentId"],
        challenge["clientSecret"],
        False,
    )
    resumed = (await org.api(RESUME, {"id": challenge["challengeAttemptId"]}))["resumeTopup"]
    by_key = await topup(org, audCents=10_000, idempotencyKey="3ds-fail")

    assert resumed["__typename"] == "AuthenticationRequired"
    assert resumed["clientSecret"] == challenge["clientSecret"]
    assert by_key["__typename"] == "AuthenticationRequired"
    assert await ledger_kinds(org) == []
    await assert_invariants(make.app.billing.db)


async def test_resume_settles_an_authenticated_attempt_once(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    await save_card(org.api, emulator, THREE_D_SECURE)
    challenge = await topup(org, audCents=10_000, idempotencyKey="3ds-resume")
    await asyncio.to_thread(
        emulator.authenticate_payment_intent,
        challenge["paymentIntentId"],
        challenge["clientSecret"],
    )

    resumed = (await org.api(RESUME, {"id": challenge["challengeAttemptId"]}))["resumeTopup"]
    again = (await org.api(RESUME, {"id": challenge["challengeAttemptId"]}))["resumeTopup"]
    by_key = await topup(org, audCents=10_000, idempotencyKey="3ds-resume")

    assert resumed == {"__typename": "TopupSuccess", "creditsGranted": 10_000, "newBalance": 10_000}
    assert again == resumed
    assert by_key["__typename"] == "TopupSuccess" and by_key["newBalance"] == 10_000
    assert await ledger_kinds(org) == ["GRANT"]
    await assert_invariants(make.app.billing.db)


async def test_resume_of_another_organizations_attempt_is_not_found(
    make: Factory, emulator: StripeEmulator
) -> None:
    owner = await make.org(name="Owner")
    await save_card(owner.api, emulator, THREE_D_SECURE)
    challenge = await topup(owner, audCents=10_000, idempotencyKey="mine")
    other = await make.org(name="Other")

    result = (await other.api(RESUME, {"id": challenge["challengeAttemptId"]}))["resumeTopup"]

    assert result["__typename"] == "NotFound"


async def test_stripe_500_is_provider_unavailable_and_the_retry_charges_once(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()
    await save_card(org.api, emulator)
    stripe_proxy.inject("http_500", path_contains="/v1/payment_intents")

    failed = await topup(org, audCents=10_000, idempotencyKey="outage")
    retried = await topup(org, audCents=10_000, idempotencyKey="outage")

    assert (failed["__typename"], failed["httpStatus"]) == ("PaymentProviderUnavailable", 502)
    assert retried["__typename"] == "TopupSuccess"
    assert len(intents_of(emulator)) == 1
    keys = {r.idempotency_key for r in stripe_proxy.requests if r.path == "/v1/payment_intents"}
    assert len(keys) == 1, "the retry must reuse the attempt's Stripe key"
    await assert_invariants(make.app.billing.db)


async def test_timeout_after_the_charge_then_retry_charges_once(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)
    stripe_proxy.inject("timeout_after_forward", path_contains="/v1/payment_intents")

    timed_out = await topup(org, audCents=50_000, idempotencyKey="slow")
    assert timed_out["__typename"] == "PaymentProviderUnavailable"
    assert len(intents_of(emulator)) == 1, "the charge went through at Stripe"
    assert (await org.api(LEDGER))["wallet"]["balanceCredits"] == 23_500

    retried = await topup(org, audCents=50_000, idempotencyKey="slow")

    assert retried["__typename"] == "TopupSuccess"
    assert retried["newBalance"] == 73_500
    assert len(intents_of(emulator)) == 1
    assert await ledger_kinds(org) == ["GRANT", "ADJUSTMENT"]
    await assert_invariants(make.app.billing.db)


async def test_refused_connection_is_provider_unavailable(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()
    await save_card(org.api, emulator)

    with stripe_proxy.refusing():
        refused = await topup(org, audCents=10_000, idempotencyKey="down")
    recovered = await topup(org, audCents=10_000, idempotencyKey="down")

    assert refused["__typename"] == "PaymentProviderUnavailable"
    assert recovered["__typename"] == "TopupSuccess"
    assert len(intents_of(emulator)) == 1


async def test_fifty_concurrent_retries_with_one_key_charge_and_grant_once(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)

    results = await asyncio.gather(
        *(topup(org, audCents=50_000, idempotencyKey="race") for _ in range(50))
    )
    final = await topup(org, audCents=50_000, idempotencyKey="race")

    kinds = {r["__typename"] for r in results}
    assert kinds <= {"TopupSuccess", "IdempotencyConflict"}, kinds
    assert final["__typename"] == "TopupSuccess" and final["newBalance"] == 73_500
    successes = [r for r in results if r["__typename"] == "TopupSuccess"]
    assert all(s == final for s in successes)
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1
    assert len(intents_of(emulator)) == 1
    assert await ledger_kinds(org) == ["GRANT", "ADJUSTMENT"]
    await assert_invariants(make.app.billing.db)


async def test_new_key_is_a_new_attempt(make: Factory, emulator: StripeEmulator) -> None:
    org = await make.org()
    await save_card(org.api, emulator)

    one = await topup(org, audCents=10_000, idempotencyKey="one")
    two = await topup(org, audCents=10_000, idempotencyKey="two")

    assert one["paymentIntentId"] != two["paymentIntentId"]
    assert two["newBalance"] == 20_000
    assert len(intents_of(emulator)) == 2
    await assert_invariants(make.app.billing.db)


async def test_keys_are_per_organization(make: Factory, emulator: StripeEmulator) -> None:
    first = await make.org(name="First")
    second = await make.org(name="Second")
    await save_card(first.api, emulator)
    await save_card(second.api, emulator)

    a = await topup(first, audCents=10_000, idempotencyKey="shared-key")
    b = await topup(second, audCents=20_000, idempotencyKey="shared-key")

    assert a["__typename"] == b["__typename"] == "TopupSuccess"
    assert (a["newBalance"], b["newBalance"]) == (10_000, 20_000)
