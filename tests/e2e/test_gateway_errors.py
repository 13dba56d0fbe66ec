"""Stripe's own exceptions stay inside the gateway: callers see the project's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import stripe

from conftest import TEST_SECRET_KEY
from gql_billing.errors import NotFound
from gql_billing.stripe_gateway import PaymentProviderRefused, StripeGateway
from support.stripe_proxy import FaultProxy


@pytest.fixture
async def gateway(stripe_proxy: FaultProxy) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(TEST_SECRET_KEY, api_base=stripe_proxy.base_url)
    yield gateway
    await gateway.close()


async def test_an_intent_stripe_does_not_have_is_refused_in_our_terms(
    gateway: StripeGateway,
) -> None:
    with pytest.raises(PaymentProviderRefused) as refused:
        await gateway.retrieve_payment("pi_nobody_has_this")

    assert not isinstance(refused.value, stripe.StripeError)
    assert isinstance(refused.value.__cause__, stripe.InvalidRequestError)


async def test_a_card_stripe_does_not_have_is_not_found(gateway: StripeGateway) -> None:
    with pytest.raises(NotFound):
        await gateway.retrieve_card("pm_nobody_has_this")
