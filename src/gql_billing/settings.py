"""Configuration from the environment (and a `.env` file)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the gateway. Names are the operator interface
    (README, Configuration): scripts rely on them."""

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

    # Customer webhooks: an answer must come within the timeout; a claimed delivery is
    # another worker's to retry once its lease lapses (longer than the timeout).
    webhook_timeout_seconds: float = 10.0
    webhook_lease_seconds: float = 60.0
    webhook_concurrency: int = 16

    max_page_size: int = 100
    default_page_size: int = 20

    # JSON log lines on stderr at this level and above (DEBUG adds probe and scrape lines).
    log_level: str = "INFO"

    # Query limits (README, Configuration). Tokens are lexical tokens, comments included.
    max_query_depth: int = 10
    max_query_aliases: int = 30
    max_query_tokens: int = 2000
    # Fields a document may ask to resolve, page sizes multiplied through nesting, aliases
    # counted (graphql/limits.py). A full page of 100 ledger entries with their reservation
    # and approval (24 fields each) costs 2,401; thirty aliases of that are refused.
    max_query_cost: int = 5000
    max_body_bytes: int = 64 * 1024
    # Operations in one batched (array) request; 0 turns batching off (HTTP 400).
    max_batch_operations: int = 0
    # Unset: on in development, off in production (an operator may turn it back on alone).
    introspection: bool | None = None
    # Browser origins allowed to call the API, comma-separated: "https://app.example.com,...".
    cors_allow_origins: str = ""

    # Automatic persisted queries (Apollo's APQ): documents kept per process by their SHA-256,
    # least recently used out first; 0 turns the protocol off.
    apq_cache_size: int = 1000

    # Per-token rate limit: requests per fixed window. In memory (per process) unless a Redis
    # URL is set, which shares the count between workers and hosts.
    rate_limit_requests: int = 600
    rate_limit_window_seconds: int = 60
    redis_url: str | None = None
    rate_limit_key_prefix: str = "gql-billing:ratelimit:"
    # A token's last_used_at is written at most this often per process, keeping auth a read.
    token_usage_interval_seconds: float = 60.0
    # How often each process looks for revoked tokens among its open websockets (which it
    # then closes); every websocket message re-checks its token besides.
    revocation_check_interval_seconds: float = 0.5
    # Stripe's webhook body, read as it streams in before the signature is checked. Stripe
    # events are a few KB, rarely tens; a quarter MiB leaves room and caps the memory.
    webhook_max_body_bytes: int = 256 * 1024
    # How long the rest of an oversized body is read and dropped (never kept) so the client
    # gets its 413 before the server hangs up on an upload that is still going.
    oversized_body_linger_seconds: float = 10.0

    @property
    def stripe_configured(self) -> bool:
        return bool(self.stripe_secret_key)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def introspection_enabled(self) -> bool:
        return self.introspection if self.introspection is not None else not self.production

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.cors_allow_origins.split(",") if o.strip()]
