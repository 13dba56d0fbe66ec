"""Root mutations: translate input, call a billing service, return a named union member."""

from __future__ import annotations

from typing import Annotated

import strawberry
from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode, SelectionSetNode

from .. import errors
from ..auth import Scope as AuthScope
from ..billing.auto_topup import AutoTopupSettings as AutoTopupRequest
from ..billing.topups import TopupOutcome, TopupRequest
from ..ledger import wallet_for
from . import problems as p
from .context import Info
from .ids import pk_of, to_global_id
from .permissions import needs
from .scalars import Credits
from .types import AutoTopupSettings, PaymentMethod, Wallet

WRITE = [needs(AuthScope.BILLING_WRITE)]
IDEMPOTENT_FIELDS = frozenset({"topup", "reserveCredits"})


@strawberry.type
class SetupIntentCreated:
    client_secret: str
    setup_intent_id: str


@strawberry.type
class PaymentMethodAttached:
    payment_method: PaymentMethod
    wallet: Wallet


@strawberry.type
class DefaultPaymentMethodSet:
    payment_method: PaymentMethod
    wallet: Wallet


@strawberry.type
class PaymentMethodDetached:
    deleted_id: strawberry.ID
    payment_method_id: str


@strawberry.type(description='Mirrors the seed\'s response: status is "succeeded".')
class TopupSuccess:
    topup_attempt_id: strawberry.ID
    payment_intent_id: str
    status: str
    credits_granted: Credits
    bonus_credits: Credits
    new_balance: Credits
    wallet: Wallet


@strawberry.input
class AttachPaymentMethodInput:
    payment_method_id: str
    set_as_default: bool = False


@strawberry.input
class SetDefaultPaymentMethodInput:
    payment_method_id: str


@strawberry.input
class DetachPaymentMethodInput:
    payment_method_id: str


@strawberry.input
class TopupInput:
    aud_cents: int | None = None
    credits: Credits | None = None
    idempotency_key: str | None = None


@strawberry.input(description="A null or absent field keeps its stored value.")
class SetAutoTopupInput:
    enabled: bool
    threshold_credits: Credits | None = None
    topup_amount_credits: Credits | None = None
    daily_charge_cap_aud: int | None = None


@strawberry.type
class AutoTopupUpdated:
    auto_topup: AutoTopupSettings
    wallet: Wallet


@strawberry.input
class ResumeTopupInput:
    topup_attempt_id: strawberry.ID


SetAutoTopupResult = Annotated[
    AutoTopupUpdated
    | p.PaymentMethodRequired
    | p.InvalidInput
    | p.InvalidState
    | p.BillingNotConfigured,
    strawberry.union("SetAutoTopupResult"),
]
CreateSetupIntentResult = Annotated[
    SetupIntentCreated | p.PaymentProviderUnavailable | p.BillingNotConfigured,
    strawberry.union("CreateSetupIntentResult"),
]
AttachPaymentMethodResult = Annotated[
    PaymentMethodAttached
    | p.CardDeclined
    | p.InvalidInput
    | p.NotFound
    | p.PaymentProviderUnavailable
    | p.BillingNotConfigured,
    strawberry.union("AttachPaymentMethodResult"),
]
SetDefaultPaymentMethodResult = Annotated[
    DefaultPaymentMethodSet | p.NotFound | p.PaymentProviderUnavailable | p.BillingNotConfigured,
    strawberry.union("SetDefaultPaymentMethodResult"),
]
DetachPaymentMethodResult = Annotated[
    PaymentMethodDetached
    | p.NotFound
    | p.InvalidState
    | p.PaymentProviderUnavailable
    | p.BillingNotConfigured,
    strawberry.union("DetachPaymentMethodResult"),
]
TopupResult = Annotated[
    TopupSuccess
    | p.AuthenticationRequired
    | p.PaymentMethodRequired
    | p.CardDeclined
    | p.InvalidInput
    | p.InvalidState
    | p.NotFound
    | p.IdempotencyConflict
    | p.PaymentProviderUnavailable
    | p.BillingNotConfigured,
    strawberry.union("TopupResult"),
]


async def current_wallet(info: Info, organization_id: int) -> Wallet:
    async with info.context.billing.db.read() as session:
        return Wallet.from_row(await wallet_for(session, organization_id))


def idempotency_key(info: Info, from_input: str | None) -> str | None:
    """The input's key, else the Idempotency-Key header when this is the document's only
    idempotent mutation (a header cannot say which of two it was meant for)."""
    if from_input is not None:
        return from_input
    header = info.context.request.headers.get("idempotency-key")
    if header is None:
        return None
    count = _count_fields(info.operation.selection_set, info, IDEMPOTENT_FIELDS, set())
    return header if count == 1 else None


def _count_fields(
    selection_set: SelectionSetNode, info: Info, names: frozenset[str], seen: set[str]
) -> int:
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            count += selection.name.value in names
        elif isinstance(selection, InlineFragmentNode):
            count += _count_fields(selection.selection_set, info, names, seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            fragment = info._raw_info.fragments.get(selection.name.value)
            if fragment is not None:
                count += _count_fields(fragment.selection_set, info, names, seen)
    return count


async def topup_success(info: Info, outcome: TopupOutcome) -> TopupSuccess:
    return TopupSuccess(
        topup_attempt_id=strawberry.ID(to_global_id("TopupAttempt", outcome.topup_attempt_id)),
        payment_intent_id=outcome.payment_intent_id,
        status="succeeded",
        credits_granted=outcome.credits_granted,
        bonus_credits=outcome.bonus_credits,
        new_balance=outcome.new_balance_credits,
        wallet=await current_wallet(info, outcome.organization_id),
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        permission_classes=WRITE, description="billing:write. Save a card, step 1."
    )
    @p.problems_as_members
    async def create_setup_intent(self, info: Info) -> CreateSetupIntentResult:
        intent = await info.context.billing.cards.create_setup_intent(info.context.organization_id)
        return SetupIntentCreated(client_secret=intent.client_secret, setup_intent_id=intent.id)

    @strawberry.mutation(
        permission_classes=WRITE, description="billing:write. Save a card, step 3."
    )
    @p.problems_as_members
    async def attach_payment_method(
        self, info: Info, input: AttachPaymentMethodInput
    ) -> AttachPaymentMethodResult:
        org_id = info.context.organization_id
        row = await info.context.billing.cards.attach(
            org_id, input.payment_method_id, set_as_default=input.set_as_default
        )
        return PaymentMethodAttached(
            payment_method=PaymentMethod.from_row(row), wallet=await current_wallet(info, org_id)
        )

    @strawberry.mutation(permission_classes=WRITE, description="billing:write. The card to charge.")
    @p.problems_as_members
    async def set_default_payment_method(
        self, info: Info, input: SetDefaultPaymentMethodInput
    ) -> SetDefaultPaymentMethodResult:
        org_id = info.context.organization_id
        row = await info.context.billing.cards.set_default(org_id, input.payment_method_id)
        return DefaultPaymentMethodSet(
            payment_method=PaymentMethod.from_row(row), wallet=await current_wallet(info, org_id)
        )

    @strawberry.mutation(permission_classes=WRITE, description="billing:write. Remove a card.")
    @p.problems_as_members
    async def detach_payment_method(
        self, info: Info, input: DetachPaymentMethodInput
    ) -> DetachPaymentMethodResult:
        done = await info.context.billing.cards.detach(
            info.context.organization_id, input.payment_method_id
        )
        return PaymentMethodDetached(
            deleted_id=strawberry.ID(to_global_id("PaymentMethod", done.payment_method_row_id)),
            payment_method_id=done.stripe_id,
        )

    @strawberry.mutation(
        permission_classes=WRITE,
        description="billing:write. Charge the default card off-session and grant credits; "
        "idempotent on the key.",
    )
    @p.problems_as_members
    async def topup(self, info: Info, input: TopupInput) -> TopupResult:
        request = TopupRequest(
            aud_cents=input.aud_cents,
            credits=input.credits,
            idempotency_key=idempotency_key(info, input.idempotency_key),
        )
        outcome = await info.context.billing.topups.topup(info.context.organization_id, request)
        return await topup_success(info, outcome)

    @strawberry.mutation(
        permission_classes=WRITE,
        description="billing:write. Settle a top-up that needed 3-D Secure.",
    )
    @p.problems_as_members
    async def resume_topup(self, info: Info, input: ResumeTopupInput) -> TopupResult:
        attempt_id = pk_of(input.topup_attempt_id, "TopupAttempt")
        if attempt_id is None:
            raise errors.NotFound("No such top-up attempt")
        outcome = await info.context.billing.topups.resume(info.context.organization_id, attempt_id)
        return await topup_success(info, outcome)

    @strawberry.mutation(
        permission_classes=WRITE, description="billing:write. Keep the balance above a floor."
    )
    @p.problems_as_members
    async def set_auto_topup(self, info: Info, input: SetAutoTopupInput) -> SetAutoTopupResult:
        request = AutoTopupRequest(
            enabled=input.enabled,
            threshold_credits=input.threshold_credits,
            topup_amount_credits=input.topup_amount_credits,
            daily_charge_cap_aud=input.daily_charge_cap_aud,
        )
        row = await info.context.billing.auto_topups.configure(
            info.context.organization_id, request
        )
        wallet = Wallet.from_row(row)
        return AutoTopupUpdated(auto_topup=AutoTopupSettings(row=row), wallet=wallet)
