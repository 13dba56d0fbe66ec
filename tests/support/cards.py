"""Saving a card the way a browser would: SetupIntent, Stripe.js confirm, attach."""

from __future__ import annotations

import asyncio

from support.api import GraphQLClient
from support.emulator import StripeEmulator

VISA = "4242424242424242"
THREE_D_SECURE = "4000002760003184"
DECLINED_ON_CHARGE = "4000000000000341"

CREATE_SETUP_INTENT = """
mutation { createSetupIntent { __typename
  ... on SetupIntentCreated { clientSecret setupIntentId }
  ... on Problem { detail } } }
"""

ATTACH = """
mutation Attach($pm: String!, $default: Boolean!) {
  attachPaymentMethod(input: {paymentMethodId: $pm, setAsDefault: $default}) {
    __typename
    ... on PaymentMethodAttached {
      paymentMethod { id stripeId brand last4 expMonth expYear isDefault }
    }
    ... on CardDeclined { declineCode }
    ... on Problem { title httpStatus: status detail }
  }
}
"""


async def save_card(
    api: GraphQLClient, emulator: StripeEmulator, number: str = VISA, *, default: bool = True
) -> str:
    """Returns the saved card's pm_ id."""
    created = (await api(CREATE_SETUP_INTENT))["createSetupIntent"]
    assert created["__typename"] == "SetupIntentCreated", created
    assert created["clientSecret"].startswith(created["setupIntentId"])
    pm = await asyncio.to_thread(emulator.create_card_payment_method, number)
    await asyncio.to_thread(emulator.confirm_setup_intent, created["setupIntentId"], pm)
    attached = (await api(ATTACH, {"pm": pm, "default": default}))["attachPaymentMethod"]
    assert attached["__typename"] == "PaymentMethodAttached", attached
    return pm
