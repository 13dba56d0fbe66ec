"""Domain problems: the expected failures a client must handle.

    BillingProblem                 (status: the HTTP status the REST API answers with;
    │                               title: the same words on REST and GraphQL, Title Case)
    ├── InvalidInput               422  field at fault, in snake_case (GraphQL camel-cases it)
    ├── NotFound                   404
    ├── InvalidState               409
    ├── IdempotencyConflict        409
    ├── InsufficientCredits        402  available_credits, requested_credits
    ├── PaymentMethodRequired      402
    ├── CardDeclined               402  decline_code
    ├── AuthenticationRequired     402  client_secret, payment_intent_id, ...
    ├── PaymentProviderUnavailable 502
    └── BillingNotConfigured       503

Services raise them; `graphql/problems.py` turns each into its GraphQL type in one place.
"""

from __future__ import annotations


class BillingProblem(Exception):
    title = "Billing Problem"
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(BillingProblem):
    title = "Invalid Input"
    status = 422

    def __init__(self, field: str | None, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class NotFound(BillingProblem):
    title = "Not Found"
    status = 404


class InvalidState(BillingProblem):
    title = "Invalid State"
    status = 409


class IdempotencyConflict(BillingProblem):
    title = "Idempotency Conflict"
    status = 409


class InsufficientCredits(BillingProblem):
    title = "Insufficient Credits"
    status = 402

    def __init__(self, available_credits: int, requested_credits: int) -> None:
        super().__init__(
            f"{requested_credits} credits requested but only {available_credits} available"
        )
        self.available_credits = available_credits
        self.requested_credits = requested_credits


class PaymentMethodRequired(BillingProblem):
    title = "Payment Method Required"
    status = 402

    def __init__(self, detail: str = "No default card: attach one first") -> None:
        super().__init__(detail)


class CardDeclined(BillingProblem):
    title = "Card Declined"
    status = 402

    def __init__(self, decline_code: str | None, detail: str = "The card was declined") -> None:
        super().__init__(detail)
        self.decline_code = decline_code


# The seed's words; clients confirm with Stripe.js, then retry with the same idempotency key.
AUTHENTICATION_REQUIRED_DETAIL = (
    "Card requires authentication (3DS) — customer must complete on-session"
)


class AuthenticationRequired(BillingProblem):
    title = "Authentication Required"
    status = 402

    def __init__(
        self,
        *,
        client_secret: str,
        payment_intent_id: str,
        payment_method_id: str | None,
        topup_attempt_id: int | None = None,
    ) -> None:
        super().__init__(AUTHENTICATION_REQUIRED_DETAIL)
        self.client_secret = client_secret
        self.payment_intent_id = payment_intent_id
        self.payment_method_id = payment_method_id
        self.topup_attempt_id = topup_attempt_id


class PaymentProviderUnavailable(BillingProblem):
    title = "Payment Provider Unavailable"
    status = 502

    def __init__(
        self, detail: str = "Stripe could not be reached; retry with the same idempotency key"
    ) -> None:
        super().__init__(detail)


class BillingNotConfigured(BillingProblem):
    title = "Billing Not Configured"
    status = 503

    def __init__(self, detail: str = "No payment backend is configured on this gateway") -> None:
        super().__init__(detail)
