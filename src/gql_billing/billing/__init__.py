"""Billing services: what the GraphQL and REST surfaces call. Nothing here imports strawberry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..clock import Clock
from ..customer_webhooks.delivery import Dispatcher
from ..customer_webhooks.endpoints import EndpointService
from ..db import Database
from ..live import WalletEvents
from ..metrics import Metrics
from ..money import DisplayRates
from ..settings import Settings
from ..stripe_gateway import PaymentGateway
from .auto_topup import AutoTopupService
from .cards import CardService
from .spend import SpendService
from .topups import TopupService


@dataclass
class Billing:
    """The services of one running app, built once from its collaborators."""

    settings: Settings
    db: Database
    gateway: PaymentGateway | None
    clock: Clock
    rates: DisplayRates
    cards: CardService
    topups: TopupService
    spend: SpendService
    auto_topups: AutoTopupService
    wallet_events: WalletEvents
    metrics: Metrics
    webhook_endpoints: EndpointService
    webhook_delivery: Dispatcher

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        gateway: PaymentGateway | None,
        clock: Clock,
        *,
        metrics: Metrics | None = None,
    ) -> Billing:
        lease = timedelta(seconds=settings.idempotency_lease_seconds)
        # A command that serves no /metrics still counts, into a registry nobody reads.
        metrics = metrics if metrics is not None else Metrics()
        topups = TopupService(db, gateway, clock, lease=lease, metrics=metrics)
        return cls(
            settings=settings,
            db=db,
            gateway=gateway,
            clock=clock,
            rates=DisplayRates.parse(settings.display_rates, settings.display_rates_as_of),
            cards=CardService(db, gateway),
            topups=topups,
            spend=SpendService(db, gateway, clock, lease=lease),
            auto_topups=AutoTopupService(db, gateway, clock, topups, lease=lease),
            metrics=metrics,
            wallet_events=WalletEvents(),
            webhook_endpoints=EndpointService(db, clock, production=settings.production),
            webhook_delivery=Dispatcher(
                db,
                clock,
                production=settings.production,
                timeout_seconds=settings.webhook_timeout_seconds,
                lease=timedelta(seconds=settings.webhook_lease_seconds),
                concurrency=settings.webhook_concurrency,
            ),
        )
