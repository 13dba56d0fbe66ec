"""Bearer tokens, scopes and the caller (Principal)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial

from sqlalchemy import select, update
from sqlmodel import col

from . import reads
from .clock import Clock
from .db import Database
from .errors import InvalidInput, NotFound
from .freetext import check_free_text
from .models import ApiToken, utcnow

TOKEN_PREFIX = "gqlb_"


class Scope(StrEnum):
    BILLING_READ = "billing:read"
    BILLING_WRITE = "billing:write"
    BILLING_SPEND = "billing:spend"
    BILLING_APPROVE = "billing:approve"


ORGANIZATION_SCOPES = frozenset({Scope.BILLING_READ, Scope.BILLING_WRITE, Scope.BILLING_APPROVE})
SERVICE_SCOPES = frozenset({Scope.BILLING_SPEND})


@dataclass(frozen=True)
class Principal:
    """Who is calling: an organization's token, or a service token (no organization)."""

    token_id: int
    organization_id: int | None
    scopes: frozenset[Scope]

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class IssuedToken:
    id: int
    token: str
    prefix: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> frozenset[Scope]:
    scopes: set[Scope] = set()
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        try:
            scopes.add(Scope(name))
        except ValueError as exc:
            raise InvalidInput("scopes", f"Unknown scope {name!r}") from exc
    return frozenset(scopes)


async def issue_token(
    db: Database, *, organization_id: int | None, scopes: frozenset[Scope], name: str = ""
) -> IssuedToken:
    """Create a token; the clear text exists only in the return value."""
    check_free_text("name", name)
    allowed = SERVICE_SCOPES if organization_id is None else ORGANIZATION_SCOPES
    if not scopes:
        raise InvalidInput("scopes", "A token needs at least one scope")
    if not scopes <= allowed:
        kind = "Service" if organization_id is None else "Organization"
        extra = ", ".join(sorted(scopes - allowed))
        raise InvalidInput("scopes", f"{kind} tokens cannot hold {extra}")
    secret = secrets.token_urlsafe(32)
    token = f"{TOKEN_PREFIX}{secret}"
    prefix = token[: len(TOKEN_PREFIX) + 8]
    row = ApiToken(
        organization_id=organization_id,
        name=name,
        prefix=prefix,
        token_hash=hash_token(token),
        scopes=",".join(sorted(scopes)),
    )
    async with db.write() as session:
        session.add(row)
        await session.flush()
        assert row.id is not None
        return IssuedToken(id=row.id, token=token, prefix=prefix)


async def revoke_token(db: Database, prefix_or_id: str) -> int:
    async with db.write() as session:
        query = select(ApiToken).where(col(ApiToken.prefix) == prefix_or_id)
        if prefix_or_id.isascii() and prefix_or_id.isdigit():
            query = select(ApiToken).where(col(ApiToken.id) == int(prefix_or_id))
        row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"No token {prefix_or_id!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        assert row.id is not None
        token_id = row.id
    for listener in db.on_tokens_revoked:
        listener({token_id})
    return token_id


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authenticate(
    db: Database, token: str | None, cache: TokenCache | None = None
) -> Principal | None:
    """The caller of a live token, or None for a missing, unknown or revoked one. With a
    `cache`, a token seen live less than its lifetime ago is not read again."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    token_hash = hash_token(token)
    if cache is not None:
        known = cache.get(token_hash)
        if known is not None:
            return known
    row = await db.driver.run(partial(reads.live_token, token_hash=token_hash))
    if row is None:
        return None
    scopes = frozenset(Scope(s) for s in row.scopes.split(",") if s)
    principal = Principal(token_id=row.id, organization_id=row.organization_id, scopes=scopes)
    if cache is not None:
        cache.put(token_hash, principal)
    return principal


class TokenCache:
    """Who a live token is, remembered for at most `lifetime_seconds` (monotonic time).

    A token revoked in this process is forgotten at once (`Database.on_tokens_revoked`); one
    revoked by another process (the CLI, another worker) is refused here once its entry
    expires, so the lifetime must stay under the one second every process has to honour a
    revocation in. Unknown and revoked tokens are never cached: they are read every time."""

    def __init__(self, *, lifetime_seconds: float, max_entries: int = 10_000) -> None:
        self._lifetime_seconds = lifetime_seconds
        self._max_entries = max_entries
        # token hash -> (the caller, when the entry stops counting)
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if time.monotonic() >= entry[1]:
            del self._entries[token_hash]
            return None
        return entry[0]

    def put(self, token_hash: str, principal: Principal) -> None:
        if len(self._entries) >= self._max_entries:
            # Many distinct live tokens within one lifetime: start afresh rather than sweep.
            self._entries.clear()
        self._entries[token_hash] = (principal, time.monotonic() + self._lifetime_seconds)

    def forget(self, token_ids: set[int]) -> None:
        for token_hash in [h for h, (p, _) in self._entries.items() if p.token_id in token_ids]:
            del self._entries[token_hash]


async def revoked_among(db: Database, token_ids: list[int]) -> set[int]:
    """Which of these tokens are revoked (or no longer exist)."""
    if not token_ids:
        return set()
    async with db.read() as session:
        query = select(col(ApiToken.id)).where(
            col(ApiToken.id).in_(token_ids), col(ApiToken.revoked_at).is_(None)
        )
        live = set((await session.execute(query)).scalars())
    return set(token_ids) - live


class TokenUsage:
    """Records each token's last use, at most once per interval per process, so authenticating
    stays a read; the view calls `record` after the response has gone out."""

    def __init__(self, db: Database, clock: Clock, *, interval: timedelta) -> None:
        self._db = db
        self._clock = clock
        self._interval = interval
        # token id -> when this process last wrote it; one small entry per token in use.
        self._written: dict[int, datetime] = {}

    async def record(self, token_id: int) -> bool:
        """Write last_used_at unless this process did within the interval; True if written."""
        now = self._clock.now()
        last = self._written.get(token_id)
        if last is not None and now - last < self._interval:
            return False
        # Claimed before the write, so concurrent requests of one token write once.
        self._written[token_id] = now
        async with self._db.write() as session:
            await session.execute(
                update(ApiToken).where(col(ApiToken.id) == token_id).values(last_used_at=now)
            )
        return True
