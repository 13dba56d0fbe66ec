"""The fault proxy, exercised with the real stripe SDK the app uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import stripe

from support.emulator import API_KEY, StripeEmulator
from support.stripe_proxy import FaultProxy

PI_PATH = "/v1/payment_intents"
PI_PARAMS: dict[str, Any] = {
    "amount": 1000,
    "currency": "aud",
    "payment_method_types": ["card"],
    "metadata": {"topup_attempt_id": "1"},
}


@pytest.fixture
def proxy(stripe_proxy: FaultProxy) -> FaultProxy:
    """The session's proxy, reset (and the emulator emptied) by the conftest fixture."""
    return stripe_proxy


def make_client(
    base_url: str, timeout: float = 5.0, api_key: str = API_KEY
) -> tuple[stripe.StripeClient, Any]:
    http_client = stripe.HTTPXClient(timeout=timeout)
    client = stripe.StripeClient(
        api_key,
        base_addresses={"api": base_url},
        http_client=http_client,
        max_network_retries=0,
    )
    return client, http_client


@pytest.fixture
async def client(proxy: FaultProxy) -> AsyncIterator[stripe.StripeClient]:
    sdk, http_client = make_client(proxy.base_url)
    yield sdk
    await http_client.close_async()


@pytest.fixture
async def impatient_client(proxy: FaultProxy) -> AsyncIterator[stripe.StripeClient]:
    sdk, http_client = make_client(proxy.base_url, timeout=1.0)
    yield sdk
    await http_client.close_async()


async def create_pi(client: stripe.StripeClient, key: str, **overrides: Any) -> Any:
    params: Any = {**PI_PARAMS, **overrides}
    return await client.v1.payment_intents.create_async(
        params=params, options={"idempotency_key": key}
    )


async def test_replays_same_key_without_forwarding(
    client: stripe.StripeClient, proxy: FaultProxy, emulator: StripeEmulator
) -> None:
    first = await create_pi(client, "topup:1")
    second = await create_pi(client, "topup:1")

    assert second.id == first.id
    assert second.metadata["topup_attempt_id"] == "1"
    assert second.last_response.headers.get("idempotent-replayed") == "true"
    assert [pi["id"] for pi in emulator.list_payment_intents()] == [first.id]
    assert proxy.requests == [("POST", PI_PATH, "topup:1")] * 2


async def test_fingerprint_ignores_param_order(proxy: FaultProxy) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "k"}
    async with httpx.AsyncClient(base_url=proxy.base_url, headers=headers) as http:
        a = await http.post(PI_PATH, content="amount=100&currency=aud", headers=_FORM)
        b = await http.post(PI_PATH, content="currency=aud&amount=100", headers=_FORM)
    assert a.status_code == b.status_code == 200
    assert b.json()["id"] == a.json()["id"]
    assert b.headers["idempotent-replayed"] == "true"


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_same_key_other_params_is_idempotency_error(
    client: stripe.StripeClient, emulator: StripeEmulator
) -> None:
    await create_pi(client, "topup:1")
    with pytest.raises(stripe.IdempotencyError) as exc:
        await create_pi(client, "topup:1", amount=2000)
    assert exc.value.http_status == 400
    assert len(emulator.list_payment_intents()) == 1


async def test_keys_are_scoped_per_api_key(proxy: FaultProxy, emulator: StripeEmulator) -> None:
    one, http_one = make_client(proxy.base_url)
    other, http_other = make_client(proxy.base_url, api_key="sk_test_other")
    try:
        a = await create_pi(one, "topup:1")
        b = await create_pi(other, "topup:1")
    finally:
        await http_one.close_async()
        await http_other.close_async()
    assert a.id != b.id
    assert len(emulator.list_payment_intents()) == 2


async def test_http_500_is_not_stored_and_not_retried(
    client: stripe.StripeClient, proxy: FaultProxy, emulator: StripeEmulator
) -> None:
    proxy.inject("http_500", path_contains=PI_PATH)
    with pytest.raises(stripe.APIError) as exc:
        await create_pi(client, "topup:1")
    assert exc.value.http_status == 500
    assert emulator.list_payment_intents() == []
    assert proxy.count("POST", PI_PATH) == 1  # max_network_retries=0: no automatic retry

    retried = await create_pi(client, "topup:1")  # a 5xx is not saved: this one executes
    assert retried.last_response.headers.get("idempotent-replayed") is None
    assert [pi["id"] for pi in emulator.list_payment_intents()] == [retried.id]


async def test_timeout_after_forward_then_retry_replays(
    impatient_client: stripe.StripeClient, proxy: FaultProxy, emulator: StripeEmulator
) -> None:
    proxy.inject("timeout_after_forward", path_contains=PI_PATH)
    with pytest.raises(stripe.APIConnectionError):
        await create_pi(impatient_client, "topup:1")
    created = emulator.list_payment_intents()
    assert len(created) == 1  # Stripe acted even though the client saw no answer

    retried = await create_pi(impatient_client, "topup:1")
    assert retried.id == created[0]["id"]
    assert retried.last_response.headers.get("idempotent-replayed") == "true"
    assert len(emulator.list_payment_intents()) == 1


async def test_hanging_request_does_not_block_others(
    impatient_client: stripe.StripeClient, client: stripe.StripeClient, proxy: FaultProxy
) -> None:
    proxy.inject("timeout_after_forward", path_contains=PI_PATH)
    hanging = asyncio.create_task(create_pi(impatient_client, "topup:1"))
    await asyncio.sleep(0.2)
    customer = await client.v1.customers.create_async(params={"email": "a@example.com"})
    assert customer.id.startswith("cus_")
    assert not hanging.done()
    with pytest.raises(stripe.APIConnectionError):
        await hanging


async def test_refuse_drops_the_request(
    client: stripe.StripeClient, proxy: FaultProxy, emulator: StripeEmulator
) -> None:
    proxy.inject("refuse", path_contains=PI_PATH)
    with pytest.raises(stripe.APIConnectionError):
        await create_pi(client, "topup:1")
    assert emulator.list_payment_intents() == []
    assert (await create_pi(client, "topup:1")).id.startswith("pi_")


async def test_refusing_is_a_full_outage(
    client: stripe.StripeClient, proxy: FaultProxy, emulator: StripeEmulator
) -> None:
    await client.v1.customers.create_async()  # leaves a pooled keep-alive connection
    with proxy.refusing():
        with pytest.raises(stripe.APIConnectionError) as exc:
            await create_pi(client, "topup:1")
        assert isinstance(exc.value.__cause__, httpx.ConnectError)
    assert emulator.list_payment_intents() == []
    assert (await create_pi(client, "topup:1")).id.startswith("pi_")


async def test_concurrent_same_key_gets_409(
    client: stripe.StripeClient, proxy: FaultProxy, emulator: StripeEmulator
) -> None:
    proxy.slow_seconds = 0.5
    proxy.inject("slow", path_contains=PI_PATH)
    results = await asyncio.gather(
        create_pi(client, "topup:1"), create_pi(client, "topup:1"), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    intents = [r for r in results if not isinstance(r, BaseException)]
    assert len(intents) == 1 and len(errors) == 1
    error = errors[0]
    assert isinstance(error, stripe.APIError)
    assert error.http_status == 409
    assert error.error is not None and error.error.code == "idempotency_key_in_use"
    assert proxy.count("POST", PI_PATH) == 2  # the SDK did not retry the 409

    again = await create_pi(client, "topup:1")
    assert again.id == intents[0].id
    assert len(emulator.list_payment_intents()) == 1


def test_faults_match_method_and_path_and_are_consumed(proxy: FaultProxy) -> None:
    proxy.inject("http_500", path_contains="/v1/customers", count=2)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=proxy.base_url, headers=headers) as http:
        assert http.get("/v1/customers").status_code == 200  # GET does not match
        assert http.post(PI_PATH, data={"amount": 1, "currency": "aud"}).status_code == 200
        statuses = [http.post("/v1/customers").status_code for _ in range(3)]
        proxy.inject("http_500")
        proxy.clear_faults()
        assert http.post("/v1/customers").status_code == 200
    assert statuses == [500, 500, 200]
    assert [r.method for r in proxy.requests] == ["GET", "POST", "POST", "POST", "POST", "POST"]
