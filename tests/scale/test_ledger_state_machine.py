"""A Hypothesis state machine over the service layer: top-ups (with Stripe faults), spends
and their settlements, auto top-up ticks and the passing of time, against the real store
(SQLite or PostgreSQL) and the Stripe emulator. After every step the ledger invariants of
docs/invariants.md hold and the wallet matches a model of what should have happened."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from conftest import TEST_SECRET_KEY
from gql_billing import errors
from gql_billing.billing import Billing
from gql_billing.billing.auto_topup import AutoTopupSettings
from gql_billing.billing.organizations import create_organization
from gql_billing.billing.spend import ReserveRequest
from gql_billing.billing.topups import TopupRequest
from gql_billing.clock import FakeClock
from gql_billing.db import Database
from gql_billing.invariants import check_invariants
from gql_billing.ledger import wallet_for
from gql_billing.models import Plan
from gql_billing.settings import Settings
from gql_billing.stripe_gateway import StripeGateway
from gql_billing.worker import Worker
from support import databases
from support.emulator import StripeEmulator
from support.stripe_proxy import FaultProxy

EXAMPLES = 30
STEPS = 30


@dataclass
class Model:
    balance: int = 0
    reserved: int = 0
    # key -> (amount first sent with it, whether it has been granted)
    topups: dict[str, tuple[int, bool]] = field(default_factory=dict)
    reservations: dict[int, tuple[str, int, int]] = field(default_factory=dict)


class LedgerMachine(RuleBasedStateMachine):
    # Set by the test before running: where to make each example's database, and Stripe.
    make_database: ClassVar[Any]
    drop_database: ClassVar[Any]
    proxy: ClassVar[FaultProxy]
    emulator: ClassVar[StripeEmulator]
    steps_checked: ClassVar[int] = 0

    held = Bundle("held")
    captured = Bundle("captured")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.model = Model()
        self.clock = FakeClock(datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
        self.db_name, url = self.run(type(self).make_database())
        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url,
            stripe_secret_key=TEST_SECRET_KEY,
            stripe_api_base=self.proxy.base_url,
            stripe_timeout_seconds=2.0,
        )
        self.db = Database(url)
        self.gateway = StripeGateway(
            TEST_SECRET_KEY, api_base=self.proxy.base_url, timeout_seconds=2
        )
        self.billing = Billing.build(self.settings, self.db, self.gateway, self.clock)
        self.org_id = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.proxy.clear_faults()
        self.run(self.gateway.close())
        self.run(self.db.dispose())
        self.run(type(self).drop_database(self.db_name))
        self.loop.close()

    @initialize()
    def open_organization_with_a_card(self) -> None:
        async def setup() -> int:
            org = await create_organization(self.db, name="Model Pty", plan=Plan.STANDARD)
            assert org.id is not None
            pm = await asyncio.to_thread(
                self.emulator.create_card_payment_method, "4242424242424242"
            )
            await self.billing.cards.attach(org.id, pm, set_as_default=True)
            return org.id

        self.org_id = self.run(setup())

    # -- top-ups ----------------------------------------------------------------------------

    @rule(
        key=st.sampled_from(["k1", "k2", "k3", "k4", "k5", "k6"]),
        aud_cents=st.sampled_from([10_000, 25_000, 2_000_001]),
        fault=st.sampled_from([None] * 6 + ["http_500", "http_500", "timeout_after_forward"]),
    )
    def topup(self, key: str, aud_cents: int, fault: str | None) -> None:
        if fault is not None:
            self.proxy.inject(fault, path_contains="/v1/payment_intents")  # type: ignore[arg-type]
        request = TopupRequest(aud_cents=aud_cents, credits=None, idempotency_key=key)
        first_amount, granted = self.model.topups.get(key, (aud_cents, False))
        try:
            outcome = self.run(self.billing.topups.topup(self.org_id, request))
        except errors.IdempotencyConflict:
            assert first_amount != aud_cents
            return
        except errors.PaymentProviderUnavailable:
            assert fault is not None
            # The key now belongs to this attempt, charged at Stripe or not.
            self.model.topups[key] = (first_amount, granted)
            return
        finally:
            self.proxy.clear_faults()
        assert first_amount == aud_cents and outcome.credits_granted == aud_cents
        self.model.topups[key] = (aud_cents, True)
        if granted:
            return  # a replay
        bonus = aud_cents * 5 // 100 if aud_cents > 2_000_000 else 0
        assert (outcome.credits_granted, outcome.bonus_credits) == (aud_cents, bonus)
        self.model.balance += aud_cents + bonus

    # -- spend ------------------------------------------------------------------------------

    @rule(target=held, amount=st.integers(min_value=1, max_value=60_000), key=st.uuids())
    def reserve(self, amount: int, key: Any) -> Any:
        request = ReserveRequest(self.org_id, amount, f"order-{key}", None, str(key))
        available = self.model.balance - self.model.reserved + self._auto_granted()
        try:
            spend = self.run(self.billing.spend.reserve(request))
        except errors.InsufficientCredits as exc:
            assert amount > available and exc.available_credits == available
            return None
        assert amount <= available
        self.model.reserved += amount
        reservation_id = spend.reservation.id
        self.model.reservations[reservation_id] = ("HELD", amount, 0)
        return reservation_id

    @rule(target=captured, reservation=consumes(held), data=st.data())
    def capture(self, reservation: int | None, data: st.DataObject) -> Any:
        if reservation is None:
            return None
        _, amount, _ = self.model.reservations[reservation]
        captured = data.draw(st.integers(min_value=1, max_value=amount))
        self.run(self.billing.spend.capture(reservation, captured))
        self.model.reserved -= amount
        self.model.balance -= captured
        self.model.reservations[reservation] = ("CAPTURED", amount, captured)
        return reservation

    @rule(reservation=consumes(held))
    def release(self, reservation: int | None) -> None:
        if reservation is None:
            return
        _, amount, _ = self.model.reservations[reservation]
        self.run(self.billing.spend.release(reservation))
        self.model.reserved -= amount
        self.model.reservations[reservation] = ("RELEASED", amount, 0)

    @rule(reservation=consumes(captured))
    def refund(self, reservation: int | None) -> None:
        if reservation is None:
            return
        _, amount, captured = self.model.reservations[reservation]
        self.run(self.billing.spend.refund(reservation))
        self.model.balance += captured
        self.model.reservations[reservation] = ("REFUNDED", amount, captured)

    @rule(reservation=held)
    def settling_twice_differently_is_refused(self, reservation: int | None) -> None:
        if reservation is None or self.model.reservations[reservation][0] != "HELD":
            return
        with pytest.raises(errors.InvalidState):
            self.run(self.billing.spend.refund(reservation))

    # -- auto top-up and time -----------------------------------------------------------------

    @rule(enabled=st.booleans())
    def configure_auto_topup(self, enabled: bool) -> None:
        settings = AutoTopupSettings(enabled, 20_000, 10_000, 1_000)
        self.run(self.billing.auto_topups.configure(self.org_id, settings))

    @rule(minutes=st.sampled_from([1, 30, 90, 24 * 60]))
    def worker_tick(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))
        self.run(Worker(self.billing).tick())

    # -- what must always hold ----------------------------------------------------------------

    def _auto_granted(self) -> int:
        async def total() -> int:
            from sqlalchemy import text

            async with self.db.read() as session:
                sql = text(
                    "SELECT coalesce(sum(e.balance_delta_credits), 0) FROM ledger_entries e "
                    "JOIN topup_attempts t ON t.id = e.topup_attempt_id WHERE t.trigger = 'AUTO'"
                )
                return int((await session.execute(sql)).scalar_one())

        return int(self.run(total()))

    @invariant()
    def ledger_invariants_hold(self) -> None:
        if not self.org_id:
            return
        failed = [c.name for c in self.run(check_invariants(self.db)) if not c.passed]
        assert not failed, failed

    @invariant()
    def wallet_matches_the_model(self) -> None:
        if not self.org_id:
            return
        type(self).steps_checked += 1

        async def wallet() -> tuple[int, int]:
            async with self.db.read() as session:
                row = await wallet_for(session, self.org_id)
                return row.balance_credits, row.reserved_credits

        balance, reserved = self.run(wallet())
        assert balance == self.model.balance + self._auto_granted()
        assert reserved == self.model.reserved


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_ledger_state_machine(
    template_db: Any,
    postgres: databases.PostgresDatabases | None,
    stripe_proxy: FaultProxy,
    emulator: StripeEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    counter = iter(range(10_000))

    async def make_database() -> tuple[str, str]:
        if postgres is not None:
            return await postgres.create()
        directory = tmp_path_factory.mktemp(f"machine{next(counter)}")
        return str(directory), databases.sqlite_copy(template_db, directory)

    async def drop_database(name: str) -> None:
        if postgres is not None:
            await postgres.drop(name)

    stripe_proxy.hang_seconds = 3
    LedgerMachine.make_database = make_database
    LedgerMachine.drop_database = drop_database
    LedgerMachine.proxy = stripe_proxy
    LedgerMachine.emulator = emulator
    LedgerMachine.steps_checked = 0
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            # A failure prints its whole sequence; shrinking it would take minutes in CI.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
        ),
    )
    print(f"ledger state machine: {LedgerMachine.steps_checked} steps checked")
    assert LedgerMachine.steps_checked >= EXAMPLES * 5
