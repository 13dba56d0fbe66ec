"""Customer webhooks over HTTP: endpoints managed through GraphQL, events delivered to real
receivers on loopback ports in the Standard Webhooks format, verified with each endpoint's
secret through `standardwebhooks`; the worker's delivery passes driven on a fake clock."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from conftest import Factory, Org
from gql_billing.clock import FakeClock
from gql_billing.worker import Worker
from support.app_server import ServedApp
from support.cards import DECLINED_ON_CHARGE, THREE_D_SECURE, VISA, save_card
from support.emulator import StripeEmulator
from support.receiver import receiver

ENDPOINT_FIELDS = "id url description eventTypes enabled disabledReason createdAt"
CREATE = f"""
mutation Create($input: CreateWebhookEndpointInput!) {{
  createWebhookEndpoint(input: $input) {{
    __typename
    ... on WebhookEndpointCreated {{ secret endpoint {{ {ENDPOINT_FIELDS} }} }}
    ... on InvalidInput {{ field detail }}
  }}
}}
"""
UPDATE = f"""
mutation Update($input: UpdateWebhookEndpointInput!) {{
  updateWebhookEndpoint(input: $input) {{
    __typename
    ... on WebhookEndpointUpdated {{ endpoint {{ {ENDPOINT_FIELDS} }} }}
    ... on InvalidInput {{ field }}
  }}
}}
"""
DELETE = """
mutation Delete($id: ID!) {
  deleteWebhookEndpoint(input: {id: $id}) { __typename ... on WebhookEndpointDeleted { id } }
}
"""
ROTATE = """
mutation Rotate($id: ID!) {
  rotateWebhookEndpointSecret(input: {id: $id}) {
    __typename ... on WebhookSecretRotated { secret endpoint { id } }
  }
}
"""
SEND_TEST = """
mutation Test($id: ID!) {
  sendTestWebhook(input: {id: $id}) {
    __typename ... on TestWebhookQueued { delivery { id eventId eventType status attempts } }
  }
}
"""
ENDPOINTS = """
{ webhookEndpoints { id url enabled disabledReason
  deliveries(first: 20) { edges { node {
    eventId eventType status attempts lastResponseStatus lastError nextAttemptAt deliveredAt
  } } } } }
"""
TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) { __typename ... on TopupSuccess { topupAttemptId newBalance } }
}
"""
SET_AUTO = """
mutation { setAutoTopup(input: {enabled: true, thresholdCredits: 5000,
  topupAmountCredits: 50000, dailyChargeCapAud: 500}) { __typename } }
"""
AUTO = "{ wallet { autoTopup { enabled disabledReason lastAttempt { id status } } } }"


async def create(org: Org, url: str, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = (await org.api(CREATE, {"input": {"url": url, **extra}}))[
        "createWebhookEndpoint"
    ]
    return result


async def deliver(app: ServedApp, passes: int = 1) -> int:
    """Run the worker's delivery pass (what `gql-billing worker` runs on its own loop)."""
    return sum([await app.billing.webhook_delivery.run_once() for _ in range(passes)])


async def deliveries(org: Org) -> list[dict[str, Any]]:
    [endpoint] = (await org.api(ENDPOINTS))["webhookEndpoints"]
    return [edge["node"] for edge in endpoint["deliveries"]["edges"]]


# -- managing endpoints -------------------------------------------------------------------------


async def test_create_shows_the_secret_once_and_lists_the_endpoint(make: Factory) -> None:
    org = await make.org()
    created = await create(
        org,
        "https://hooks.example.com/billing",
        description="Finance",
        eventTypes=["TOPUP_SUCCEEDED", "WALLET_BALANCE_LOW"],
    )
    assert created["__typename"] == "WebhookEndpointCreated"
    assert created["secret"].startswith("whsec_")
    endpoint = created["endpoint"]
    assert (endpoint["url"], endpoint["description"], endpoint["enabled"]) == (
        "https://hooks.example.com/billing",
        "Finance",
        True,
    )
    assert endpoint["eventTypes"] == ["TOPUP_SUCCEEDED", "WALLET_BALANCE_LOW"]

    listed = (await org.api(ENDPOINTS))["webhookEndpoints"]
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert listed[0]["deliveries"]["edges"] == []


async def test_update_rotate_and_delete(make: Factory) -> None:
    org = await make.org()
    created = await create(org, "https://hooks.example.com/a")
    endpoint_id = created["endpoint"]["id"]

    changed = (
        await org.api(
            UPDATE,
            {"input": {"id": endpoint_id, "url": "https://hooks.example.com/b", "enabled": False}},
        )
    )["updateWebhookEndpoint"]
    assert changed["__typename"] == "WebhookEndpointUpdated"
    assert (changed["endpoint"]["url"], changed["endpoint"]["enabled"]) == (
        "https://hooks.example.com/b",
        False,
    )
    assert changed["endpoint"]["description"] == ""  # kept

    rotated = (await org.api(ROTATE, {"id": endpoint_id}))["rotateWebhookEndpointSecret"]
    assert rotated["__typename"] == "WebhookSecretRotated"
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]

    deleted = (await org.api(DELETE, {"id": endpoint_id}))["deleteWebhookEndpoint"]
    assert deleted == {"__typename": "WebhookEndpointDeleted", "id": endpoint_id}
    assert (await org.api(ENDPOINTS))["webhookEndpoints"] == []
    again = (await org.api(DELETE, {"id": endpoint_id}))["deleteWebhookEndpoint"]
    assert again == {"__typename": "NotFound"}


async def test_another_organizations_endpoint_is_not_found(make: Factory) -> None:
    owner = await make.org(name="Owner")
    other = await make.org(name="Other")
    endpoint_id = (await create(owner, "https://hooks.example.com/x"))["endpoint"]["id"]

    for document, variables in (
        (DELETE, {"id": endpoint_id}),
        (ROTATE, {"id": endpoint_id}),
        (SEND_TEST, {"id": endpoint_id}),
        (UPDATE, {"input": {"id": endpoint_id, "enabled": False}}),
    ):
        data = await other.api(document, variables)
        assert next(iter(data.values()))["__typename"] == "NotFound"
    assert (await other.api(ENDPOINTS))["webhookEndpoints"] == []
    [still] = (await owner.api(ENDPOINTS))["webhookEndpoints"]
    assert still["enabled"] is True


async def test_at_most_ten_endpoints(make: Factory) -> None:
    org = await make.org()
    for n in range(10):
        assert (await create(org, f"https://hooks.example.com/{n}"))["__typename"] == (
            "WebhookEndpointCreated"
        )
    eleventh = await create(org, "https://hooks.example.com/11")
    assert (eleventh["__typename"], eleventh["field"]) == ("InvalidInput", "url")
    assert len((await org.api(ENDPOINTS))["webhookEndpoints"]) == 10


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/", "not a url", "https://", "https://u:p@example.com/"]
)
async def test_a_bad_url_is_invalid_input_naming_url(make: Factory, url: str) -> None:
    org = await make.org()
    refused = await create(org, url)
    assert (refused["__typename"], refused["field"]) == ("InvalidInput", "url")
    assert (await org.api(ENDPOINTS))["webhookEndpoints"] == []


async def test_read_scope_lists_but_cannot_create(make: Factory) -> None:
    org = await make.org(scopes="billing:read")
    response = await org.api.post(CREATE, {"input": {"url": "https://hooks.example.com/"}})
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await org.api(ENDPOINTS))["webhookEndpoints"] == []


# -- delivery -----------------------------------------------------------------------------------


async def test_webhook_test_is_delivered_signed_with_the_endpoint_secret(
    app: ServedApp, make: Factory
) -> None:
    org = await make.org()
    with receiver() as hook:
        created = await create(org, hook.url)
        queued = (await org.api(SEND_TEST, {"id": created["endpoint"]["id"]}))["sendTestWebhook"]
        assert queued["__typename"] == "TestWebhookQueued"
        assert (queued["delivery"]["eventType"], queued["delivery"]["status"]) == (
            "WEBHOOK_TEST",
            "PENDING",
        )

        assert await deliver(app) == 1

        [payload] = hook.of_type("webhook.test", created["secret"])
        assert hook.ids() == [queued["delivery"]["eventId"]]
        assert payload["data"]["endpoint_url"] == hook.url
    [delivery] = await deliveries(org)
    assert (delivery["status"], delivery["attempts"], delivery["lastResponseStatus"]) == (
        "DELIVERED",
        1,
        200,
    )


async def test_topup_succeeded_reaches_the_receiver(
    app: ServedApp, make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator, VISA)
    with receiver() as hook:
        created = await create(org, hook.url)
        key = str(uuid.uuid4())
        done = (await org.api(TOPUP, {"input": {"audCents": 50_000, "idempotencyKey": key}}))[
            "topup"
        ]
        assert done["__typename"] == "TopupSuccess"
        await deliver(app)
        [payload] = hook.of_type("topup.succeeded", created["secret"])
    data = payload["data"]
    assert data["topup_attempt_id"] == done["topupAttemptId"]
    assert data["organization_id"] == org.id
    assert (data["status"], data["trigger"], data["credits_granted"], data["new_balance"]) == (
        "succeeded",
        "manual",
        50_000,
        73_500,
    )


async def test_retries_with_the_same_webhook_id_until_delivered(
    app: ServedApp, make: Factory, clock: FakeClock
) -> None:
    org = await make.org()
    with receiver([500, 500, 200]) as hook:
        created = await create(org, hook.url)
        await org.api(SEND_TEST, {"id": created["endpoint"]["id"]})

        assert await deliver(app) == 1
        [first] = await deliveries(org)
        assert (first["status"], first["attempts"], first["lastResponseStatus"]) == (
            "PENDING",
            1,
            500,
        )
        assert await deliver(app) == 0  # not due before its back-off

        clock.advance(timedelta(seconds=5))
        assert await deliver(app) == 1
        clock.advance(timedelta(minutes=5))
        assert await deliver(app) == 1

        ids = hook.ids()
        assert len(ids) == 3 and len(set(ids)) == 1
        for item in hook.received:
            item.verify(created["secret"])
    [delivery] = await deliveries(org)
    assert (delivery["status"], delivery["attempts"], delivery["lastResponseStatus"]) == (
        "DELIVERED",
        3,
        200,
    )
    assert delivery["eventId"] == ids[0]


async def test_gives_up_after_the_last_retry_and_switches_the_endpoint_off_after_three_days(
    app: ServedApp, make: Factory, clock: FakeClock
) -> None:
    org = await make.org()
    with receiver([500] * 40) as hook:
        created = await create(org, hook.url)
        endpoint_id = created["endpoint"]["id"]
        await org.api(SEND_TEST, {"id": endpoint_id})
        for step in (0, 5, 300, 1800, 7200, 18000, 36000, 36000):
            clock.advance(timedelta(seconds=step))
            assert await deliver(app) == 1
        [gave_up] = await deliveries(org)
        assert (gave_up["status"], gave_up["attempts"], gave_up["nextAttemptAt"]) == (
            "FAILED",
            8,
            None,
        )

        # failures go on into a third day: the endpoint is switched off
        clock.advance(timedelta(days=2))
        await org.api(SEND_TEST, {"id": endpoint_id})
        assert await deliver(app) == 1
    [endpoint] = (await org.api(ENDPOINTS))["webhookEndpoints"]
    assert endpoint["enabled"] is False
    assert "3 days" in endpoint["disabledReason"]


async def test_after_rotation_both_secrets_sign_for_a_day(
    app: ServedApp, make: Factory, clock: FakeClock
) -> None:
    org = await make.org()
    with receiver() as hook:
        created = await create(org, hook.url)
        endpoint_id = created["endpoint"]["id"]
        new = (await org.api(ROTATE, {"id": endpoint_id}))["rotateWebhookEndpointSecret"]
        await org.api(SEND_TEST, {"id": endpoint_id})
        await deliver(app)
        [during] = hook.received
        during.verify(created["secret"])
        during.verify(new["secret"])

        clock.advance(timedelta(hours=24, seconds=1))
        await org.api(SEND_TEST, {"id": endpoint_id})
        await deliver(app)
        after = hook.received[1]
        after.verify(new["secret"])
        with pytest.raises(Exception, match="signature"):
            after.verify(created["secret"])


async def test_only_the_chosen_event_types_are_sent(
    app: ServedApp, make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    await save_card(org.api, emulator, VISA)
    with receiver() as hook:
        await create(org, hook.url, eventTypes=["TOPUP_FAILED"])
        key = str(uuid.uuid4())
        await org.api(TOPUP, {"input": {"audCents": 50_000, "idempotencyKey": key}})
        assert await deliver(app) == 0
        assert hook.received == []


# -- automatic top-ups --------------------------------------------------------------------------


async def test_auto_topup_needing_3ds_sends_requires_action(
    app: ServedApp, make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator, THREE_D_SECURE)
    with receiver() as hook:
        created = await create(org, hook.url)
        assert (await org.api(SET_AUTO))["setAutoTopup"]["__typename"] == "AutoTopupUpdated"
        await Worker(app.billing).tick()
        await deliver(app)
        [payload] = hook.of_type("topup.requires_action", created["secret"])
    attempt = (await org.api(AUTO))["wallet"]["autoTopup"]["lastAttempt"]
    assert attempt["status"] == "REQUIRES_ACTION"
    data = payload["data"]
    assert (data["topup_attempt_id"], data["trigger"], data["status"]) == (
        attempt["id"],
        "auto",
        "requires_action",
    )
    assert "client_secret" not in data


async def test_third_declined_auto_topup_sends_auto_topup_disabled(
    app: ServedApp, make: Factory, emulator: StripeEmulator, clock: FakeClock
) -> None:
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator, DECLINED_ON_CHARGE)
    with receiver() as hook:
        created = await create(org, hook.url)
        await org.api(SET_AUTO)
        worker = Worker(app.billing)
        for _ in range(3):
            await worker.tick()
            clock.advance(timedelta(hours=1, seconds=1))
        await deliver(app)
        failed = hook.of_type("topup.failed", created["secret"])
        [disabled] = hook.of_type("auto_topup.disabled", created["secret"])
    assert len(failed) == 3
    assert {f["data"]["trigger"] for f in failed} == {"auto"}
    auto = (await org.api(AUTO))["wallet"]["autoTopup"]
    assert auto["enabled"] is False
    assert disabled["data"]["disabled_reason"] == auto["disabledReason"]
    assert disabled["data"]["organization_id"] == org.id
