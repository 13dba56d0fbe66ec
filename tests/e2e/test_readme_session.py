"""The README's worked top-up (step 3), sent as printed, answers what the README says."""

from __future__ import annotations

from conftest import Factory
from support.cards import THREE_D_SECURE, VISA, save_card
from support.emulator import StripeEmulator
from support.readme import readme_documents

[README_TOPUP] = [doc for doc in readme_documents() if '"order-2026-11-27-1"' in doc]


async def test_readme_topup_grants_on_a_wallet_of_23500(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator, VISA)

    result = (await org.api(README_TOPUP))["topup"]

    assert result["__typename"] == "TopupSuccess", result
    assert (result["status"], result["creditsGranted"], result["bonusCredits"]) == (
        "succeeded",
        50_000,
        0,
    )
    assert result["newBalance"] == 73_500


async def test_readme_topup_on_a_3ds_card_names_the_attempt_to_resume(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=23_500)
    pm = await save_card(org.api, emulator, THREE_D_SECURE)

    result = (await org.api(README_TOPUP))["topup"]
    listed = await org.api("{ topups(first: 1) { edges { node { id status } } } }")

    [attempt] = [edge["node"] for edge in listed["topups"]["edges"]]
    assert attempt["status"] == "REQUIRES_ACTION"
    assert result["__typename"] == "AuthenticationRequired", result
    assert (result["paymentMethodId"], result["topupAttempt"]) == (pm, {"id": attempt["id"]})
    assert (result["title"], result["httpStatus"]) == ("Authentication Required", 402)
    assert result["clientSecret"].startswith(result["paymentIntentId"])
