"""The schema, built once per process."""

from __future__ import annotations

from collections.abc import Sequence

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from .mutations import Mutation
from .problems import (
    AuthenticationRequired,
    BillingNotConfigured,
    CardDeclined,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidInput,
    InvalidState,
    NotFound,
    PaymentMethodRequired,
    PaymentProviderUnavailable,
)
from .queries import Query
from .scalars import CREDITS_SCALAR, Credits
from .spend_api import SpendMutation, SpendQuery
from .spend_types import Approval, Invoice, Reservation
from .types import Organization, PaymentMethod, TopupAttempt, Transaction, Wallet

MASKED_MESSAGE = "Internal server error"


def _should_mask(error: GraphQLError) -> bool:
    """Mask genuine faults; keep the errors we raise on purpose (codes, validation)."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    # Input coercion (a bad Credits value, say) is the client's fault and safe to show.
    return not isinstance(original, ValueError | TypeError) or error.path is not None


class MaskFaults(MaskErrors):
    """Genuine server faults reach the client as one generic message, never a trace."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_should_mask, error_message=MASKED_MESSAGE)


class BillingSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log faults only: a client's bad query or missing scope is not the server's error."""
        faults = [e for e in errors if _is_fault(e)]
        super().process_errors(faults, execution_context)


def _is_fault(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError) and _should_mask(error)


def build_schema(extensions: Sequence[type[SchemaExtension]] = ()) -> BillingSchema:
    return BillingSchema(
        query=merge_types("Query", (Query, SpendQuery)),
        mutation=merge_types("Mutation", (Mutation, SpendMutation)),
        types=[
            Reservation,
            Approval,
            Invoice,
            Organization,
            Wallet,
            Transaction,
            PaymentMethod,
            TopupAttempt,
            AuthenticationRequired,
            PaymentMethodRequired,
            CardDeclined,
            InsufficientCredits,
            InvalidInput,
            IdempotencyConflict,
            NotFound,
            InvalidState,
            PaymentProviderUnavailable,
            BillingNotConfigured,
        ],
        config=StrawberryConfig(scalar_map={Credits: CREDITS_SCALAR}),
        extensions=[MaskFaults, *extensions],
    )
