"""The payment provider behind a small protocol that speaks the project's own dataclasses.

`StripeGateway` uses the official SDK's async client. Outages (connection errors, timeouts,
5xx, rate limits, an idempotent request still in flight at Stripe) become
PaymentProviderUnavailable; everything a caller must act on comes back as data. No
`stripe` exception leaves this module: a request Stripe refuses is PaymentProviderRefused,
a webhook that does not verify is InvalidWebhook.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

import stripe

from .errors import CardDeclined, NotFound, PaymentProviderUnavailable

# Statuses of an off-session charge, normalised over real Stripe and the emulator.
SUCCEEDED = "succeeded"
REQUIRES_ACTION = "requires_action"
DECLINED = "declined"
PROCESSING = "processing"
REQUIRES_CAPTURE = "requires_capture"
CANCELED = "canceled"

# A metadata look-up reads at most this many pages of 100 intents (newest first).
MAX_LIST_PAGES = 50

AUTHENTICATION_CODES = frozenset(
    {"authentication_required", "payment_intent_authentication_failure"}
)


class PaymentProviderRefused(Exception):
    """Stripe refused a request, not for an outage: an object it does not have (another
    account's id, a forged one) or parameters it does not accept. The same request gets the
    same answer."""


class InvalidWebhook(Exception):
    """A webhook whose body or signature does not verify: forged, tampered or stale."""


# How far a webhook signature's timestamp may be from now (Stripe's default, 300 s).
WEBHOOK_TOLERANCE_SECONDS: int = stripe.Webhook.DEFAULT_TOLERANCE


def verify_webhook(payload: bytes, signature: str, secret: str) -> dict[str, Any]:
    """The event, once its `Stripe-Signature` verifies over the exact raw body (default
    tolerance, so a replayed old event is refused)."""
    try:
        event = stripe.Webhook.construct_event(payload.decode("utf-8"), signature, secret)
    except (ValueError, UnicodeDecodeError, stripe.SignatureVerificationError) as exc:
        raise InvalidWebhook() from exc
    return event.to_dict()  # type: ignore[no-any-return]


P = ParamSpec("P")
R = TypeVar("R")


def _refusals_as_ours(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """A Stripe error that a gateway method did not turn into data or a problem leaves as
    PaymentProviderRefused."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except stripe.StripeError as exc:
            raise PaymentProviderRefused(f"{type(exc).__name__}: {exc.user_message}") from exc

    return call


@dataclass(frozen=True)
class SetupIntent:
    id: str
    client_secret: str


@dataclass(frozen=True)
class Card:
    id: str
    customer_id: str | None
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class Payment:
    """Where a PaymentIntent stands, as far as granting credits is concerned."""

    intent_id: str | None
    status: str
    amount_cents: int = 0
    client_secret: str | None = None
    decline_code: str | None = None
    failure_message: str | None = None
    metadata: dict[str, str] | None = None
    customer_id: str | None = None


class PaymentGateway(Protocol):
    async def create_customer(self, *, name: str, organization_id: int) -> str: ...

    async def create_setup_intent(self, customer_id: str) -> SetupIntent: ...

    async def retrieve_card(self, payment_method_id: str) -> Card: ...

    async def attach_card(self, payment_method_id: str, customer_id: str) -> Card: ...

    async def detach_card(self, payment_method_id: str) -> None: ...

    async def set_default_card(self, customer_id: str, payment_method_id: str) -> None: ...

    async def charge_off_session(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        idempotency_key: str,
        metadata: dict[str, str],
        capture_manual: bool = False,
    ) -> Payment: ...

    async def retrieve_payment(self, intent_id: str) -> Payment: ...

    async def capture_payment(
        self, intent_id: str, *, amount_cents: int, idempotency_key: str
    ) -> Payment: ...

    async def cancel_payment(self, intent_id: str, *, idempotency_key: str) -> Payment: ...

    async def refund_payment(
        self, intent_id: str, *, amount_cents: int, idempotency_key: str
    ) -> None: ...

    async def find_payment(
        self, customer_id: str, metadata_key: str, value: str
    ) -> Payment | None: ...

    async def ping(self) -> None:
        """Raise unless the provider answers (readiness)."""
        ...

    async def close(self) -> None: ...


class CallObserver(Protocol):
    """Told about every Stripe call: its name, how long it took, the error class it raised."""

    def stripe_call(self, call: str, seconds: float, error: str | None) -> None: ...


def _payment_from_intent(intent: Any) -> Payment:
    status = intent["status"]
    error = intent.get("last_payment_error") or {}
    decline_code = error.get("decline_code")
    if status == "requires_payment_method":
        # Off-session 3-D Secure on real Stripe leaves the intent here with
        # `authentication_required`, a failed challenge with
        # `payment_intent_authentication_failure` (the customer may try again); a decline
        # after authenticating leaves it here too, with a decline.
        if error.get("code") in AUTHENTICATION_CODES or not error:
            status = REQUIRES_ACTION
        else:
            status = DECLINED
            decline_code = decline_code or error.get("code")
    metadata = dict(intent.get("metadata") or {})
    return Payment(
        intent_id=intent["id"],
        status=status,
        amount_cents=int(intent.get("amount") or 0),
        client_secret=intent.get("client_secret"),
        decline_code=decline_code,
        failure_message=error.get("message"),
        metadata=metadata,
        customer_id=_id_of(intent.get("customer")),
    )


def _id_of(value: Any) -> str | None:
    """An expandable field: an id string, or the expanded object."""
    if value is None or isinstance(value, str):
        return value
    return str(value["id"])


def _idempotency_detail(exc: stripe.IdempotencyError) -> str:
    if exc.http_status == 409:
        return "Stripe is still processing an earlier request for this payment; retry shortly"
    return "Stripe refused a repeated request for this payment; retry, or contact support"


def _is_outage(exc: stripe.StripeError) -> bool:
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    status = exc.http_status or 0
    # 409 is a lock conflict at Stripe (an idempotent request still in flight): retry later.
    return status >= 500 or status == 409


class StripeGateway:
    def __init__(
        self,
        secret_key: str,
        *,
        api_base: str | None = None,
        timeout_seconds: float = 20.0,
        observer: CallObserver | None = None,
    ) -> None:
        self._observer = observer
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        base = {"api": api_base.rstrip("/")} if api_base else None
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses=base,  # type: ignore[arg-type]
            http_client=self._http,
            max_network_retries=0,
        )

    @_refusals_as_ours
    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    @_refusals_as_ours
    async def ping(self) -> None:
        await self._call("balance.retrieve", self._client.v1.balance.retrieve_async())

    async def _call(self, call: str, coro: Any) -> dict[str, Any]:
        """Await an SDK call, timed and counted under `call`; its object comes back as data."""
        started = time.perf_counter()
        try:
            result = await coro
        except stripe.IdempotencyError as exc:
            # 409: a request with this key is still in flight at Stripe (a concurrent or
            # timed-out one). 400: the key was used with other parameters. Neither charged,
            # captured or refunded anything twice; the retry (same key) settles it.
            self._observe(call, started, type(exc).__name__)
            raise PaymentProviderUnavailable(_idempotency_detail(exc)) from exc
        except stripe.StripeError as exc:
            self._observe(call, started, type(exc).__name__)
            if _is_outage(exc):
                raise PaymentProviderUnavailable() from exc
            raise
        except Exception as exc:
            self._observe(call, started, type(exc).__name__)
            raise
        self._observe(call, started, None)
        return result.to_dict()  # type: ignore[no-any-return]

    def _observe(self, call: str, started: float, error: str | None) -> None:
        if self._observer is not None:
            self._observer.stripe_call(call, time.perf_counter() - started, error)

    @_refusals_as_ours
    async def create_customer(self, *, name: str, organization_id: int) -> str:
        customer = await self._call(
            "customers.create",
            self._client.v1.customers.create_async(
                params={"name": name, "metadata": {"organization_id": str(organization_id)}},
            ),
        )
        return str(customer["id"])

    @_refusals_as_ours
    async def create_setup_intent(self, customer_id: str) -> SetupIntent:
        params: Any = {
            "customer": customer_id,
            "usage": "off_session",
            "payment_method_types": ["card"],
        }
        intent = await self._call(
            "setup_intents.create", self._client.v1.setup_intents.create_async(params=params)
        )
        return SetupIntent(id=intent["id"], client_secret=intent["client_secret"])

    @_refusals_as_ours
    async def retrieve_card(self, payment_method_id: str) -> Card:
        try:
            pm = await self._call(
                "payment_methods.retrieve",
                self._client.v1.payment_methods.retrieve_async(payment_method_id),
            )
        except stripe.InvalidRequestError as exc:
            raise NotFound(f"No payment method {payment_method_id!r}") from exc
        return _card(pm)

    @_refusals_as_ours
    async def attach_card(self, payment_method_id: str, customer_id: str) -> Card:
        try:
            pm = await self._call(
                "payment_methods.attach",
                self._client.v1.payment_methods.attach_async(
                    payment_method_id, params={"customer": customer_id}
                ),
            )
        except stripe.CardError as exc:
            raise CardDeclined(
                _decline_code(exc), exc.user_message or "The card was declined"
            ) from exc
        except stripe.InvalidRequestError as exc:
            if _looks_declined(exc):
                raise CardDeclined(_decline_code(exc), "The card was declined") from exc
            raise NotFound(f"No payment method {payment_method_id!r}") from exc
        return _card(pm)

    @_refusals_as_ours
    async def detach_card(self, payment_method_id: str) -> None:
        # Already detached at Stripe: the local removal is what matters.
        with contextlib.suppress(stripe.InvalidRequestError):
            await self._call(
                "payment_methods.detach",
                self._client.v1.payment_methods.detach_async(payment_method_id),
            )

    @_refusals_as_ours
    async def set_default_card(self, customer_id: str, payment_method_id: str) -> None:
        await self._call(
            "customers.update",
            self._client.v1.customers.update_async(
                customer_id,
                params={"invoice_settings": {"default_payment_method": payment_method_id}},
            ),
        )

    @_refusals_as_ours
    async def charge_off_session(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        idempotency_key: str,
        metadata: dict[str, str],
        capture_manual: bool = False,
    ) -> Payment:
        params: Any = {
            "amount": amount_cents,
            "currency": "aud",
            "customer": customer_id,
            "payment_method": payment_method_id,
            "payment_method_types": ["card"],
            "off_session": True,
            "confirm": True,
            "metadata": metadata,
        }
        if capture_manual:
            params["capture_method"] = "manual"
        try:
            intent = await self._call(
                "payment_intents.create",
                self._client.v1.payment_intents.create_async(
                    params=params, options={"idempotency_key": idempotency_key}
                ),
            )
        except stripe.CardError as exc:
            return await self._payment_from_card_error(exc)
        except stripe.InvalidRequestError as exc:
            if _looks_declined(exc):
                return Payment(
                    intent_id=_error_intent_id(exc),
                    status=DECLINED,
                    decline_code=_decline_code(exc),
                    failure_message=exc.user_message,
                )
            raise
        return _payment_from_intent(intent)

    async def _payment_from_card_error(self, exc: stripe.CardError) -> Payment:
        intent_id = _error_intent_id(exc)
        if exc.code == "authentication_required" and intent_id:
            # Real Stripe: the intent exists, waiting for the customer to authenticate.
            return await self.retrieve_payment(intent_id)
        return Payment(
            intent_id=intent_id,
            status=DECLINED,
            decline_code=_decline_code(exc),
            failure_message=exc.user_message,
        )

    @_refusals_as_ours
    async def retrieve_payment(self, intent_id: str) -> Payment:
        intent = await self._call(
            "payment_intents.retrieve", self._client.v1.payment_intents.retrieve_async(intent_id)
        )
        return _payment_from_intent(intent)

    @_refusals_as_ours
    async def capture_payment(
        self, intent_id: str, *, amount_cents: int, idempotency_key: str
    ) -> Payment:
        intent = await self._settle_call(
            "payment_intents.capture",
            self._client.v1.payment_intents.capture_async(
                intent_id,
                params={"amount_to_capture": amount_cents},
                options={"idempotency_key": idempotency_key},
            ),
            intent_id,
        )
        return _payment_from_intent(intent)

    @_refusals_as_ours
    async def cancel_payment(self, intent_id: str, *, idempotency_key: str) -> Payment:
        intent = await self._settle_call(
            "payment_intents.cancel",
            self._client.v1.payment_intents.cancel_async(
                intent_id, options={"idempotency_key": idempotency_key}
            ),
            intent_id,
        )
        return _payment_from_intent(intent)

    @_refusals_as_ours
    async def refund_payment(
        self, intent_id: str, *, amount_cents: int, idempotency_key: str
    ) -> None:
        params: Any = {"payment_intent": intent_id, "amount": amount_cents}
        await self._settle_call(
            "refunds.create",
            self._client.v1.refunds.create_async(
                params=params, options={"idempotency_key": idempotency_key}
            ),
            intent_id,
        )

    async def _settle_call(self, call: str, coro: Any, intent_id: str) -> dict[str, Any]:
        """A settlement that Stripe refuses (the intent already moved on) is an outage to us
        only if we cannot tell; otherwise the intent's own state is the answer."""
        try:
            return await self._call(call, coro)
        except stripe.InvalidRequestError:
            intent = await self._call(
                "payment_intents.retrieve",
                self._client.v1.payment_intents.retrieve_async(intent_id),
            )
            return intent

    @_refusals_as_ours
    async def find_payment(self, customer_id: str, metadata_key: str, value: str) -> Payment | None:
        """Look an intent up by our metadata (after Stripe's 24 h idempotency window).

        Pages through the intents and filters here: not every Stripe-compatible server
        filters a list by customer (the emulator refuses to), and real Stripe's search API
        is eventually consistent."""
        params: Any = {"limit": 100}
        for _ in range(MAX_LIST_PAGES):
            page = await self._call(
                "payment_intents.list", self._client.v1.payment_intents.list_async(params=params)
            )
            for intent in page["data"]:
                payment = _payment_from_intent(intent)
                if (
                    payment.customer_id == customer_id
                    and (payment.metadata or {}).get(metadata_key) == value
                ):
                    return payment
            if not page.get("has_more") or not page["data"]:
                return None
            params = {"limit": 100, "starting_after": page["data"][-1]["id"]}
        return None


def _card(pm: Any) -> Card:
    card = pm.get("card") or {}
    customer = pm.get("customer")
    if customer is not None and not isinstance(customer, str):
        customer = customer["id"]
    return Card(
        id=pm["id"],
        customer_id=customer,
        brand=str(card.get("brand") or "unknown"),
        last4=str(card.get("last4") or ""),
        exp_month=int(card.get("exp_month") or 0),
        exp_year=int(card.get("exp_year") or 0),
    )


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body or {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_intent_id(exc: stripe.StripeError) -> str | None:
    intent = _error_body(exc).get("payment_intent")
    if isinstance(intent, dict):
        return str(intent.get("id"))
    return None


def _decline_code(exc: stripe.StripeError) -> str | None:
    error = _error_body(exc)
    code = error.get("decline_code") or error.get("code") or getattr(exc, "code", None)
    return str(code) if code else None


def _looks_declined(exc: stripe.StripeError) -> bool:
    # The emulator reports declines as invalid_request_error with code card_declined.
    error = _error_body(exc)
    return error.get("code") in {"card_declined", "expired_card", "incorrect_cvc"}
