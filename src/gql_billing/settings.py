"""Configuration from the environment (and a `.env` file)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the gateway. Names follow the operator interface (SPEC §12)."""

    model_config = SettingsConfigDict(
        env_prefix="GQL_BILLING_", env_file=".env", extra="ignore", populate_by_name=True
    )

    database_url: str = "sqlite+aiosqlite:///./gql_billing.db"
    env: Literal["development", "production"] = "development"

    stripe_secret_key: str | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_SECRET_KEY", "stripe_secret_key")
    )
    stripe_api_base: str | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_API_BASE", "stripe_api_base")
    )
    stripe_webhook_secret: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET", "stripe_webhook_secret"),
    )
    # A Stripe call that takes longer than this is treated as an outage; the retry reuses
    # the same Stripe idempotency key, so giving up early never risks a second charge.
    stripe_timeout_seconds: float = 20.0

    # How long a claimed idempotency key counts as "in progress" before a crashed request's
    # claim may be taken over. Longer than any Stripe call can take.
    idempotency_lease_seconds: float = 60.0

    # Display conversion: "USD=0.65322,EUR=0.60" (AUD per unit is 1). Empty uses the
    # built-in table in money.py.
    display_rates: str = ""
    display_rates_as_of: str = ""

    sqlite_busy_timeout_ms: int = 15000

    # Background worker (in `serve` unless turned off; `gql-billing worker` runs it alone).
    run_worker: bool = True
    worker_interval_seconds: float = 2.0
    # Stripe cancels uncaptured authorisations at about 7 days: release ours first.
    card_hold_ttl_seconds: float = 6 * 24 * 3600

    max_page_size: int = 100
    default_page_size: int = 20

    @property
    def stripe_configured(self) -> bool:
        return bool(self.stripe_secret_key)
