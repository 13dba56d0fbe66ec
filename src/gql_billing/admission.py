"""One admission path for every door: `/graphql` over HTTP and its websocket, `/v1/op/*` and
the Stripe webhook.

Each door asks the same questions in the same order of cost: is the declared body too large,
who is calling (bearer token), may they (scope), have they spent their per-token budget (rate
limit), is the body of a kind we read (REST: JSON), and is the body, read as it streams in,
within the limit. A refusal is a `Refusal` the door renders in its own shape (GraphQL-shaped
or `application/problem+json`). A door that admits records the token's use afterwards.

Websockets are admitted message by message: every message re-checks the token against the
database, every `subscribe` counts against the same budget as an HTTP request, and a message
larger than an HTTP body is refused. `RevocationWatch` closes the open sockets of a token
revoked by any process within a second, idle ones included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from .auth import (
    Principal,
    Scope,
    TokenCache,
    TokenUsage,
    authenticate,
    bearer_token,
    revoked_among,
)
from .clock import Clock
from .db import Database
from .ratelimit import RateLimiter, build_rate_limiter
from .settings import Settings

log = logging.getLogger(__name__)

JSON = "application/json"
# How long this process trusts a token it found live without reading it again: well under
# the second within which every process must refuse a revoked token.
TOKEN_CACHE_SECONDS = 0.5


@dataclass(frozen=True)
class Refusal:
    """Why a door turned a request away; each door renders it in its own shape."""

    status: int
    # extensions.code for GraphQL-shaped answers.
    code: str
    # The problem document's title for REST answers.
    title: str
    detail: str
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_after_seconds: int | None = None


def unauthenticated() -> Refusal:
    return Refusal(
        401,
        "UNAUTHENTICATED",
        "Unauthenticated",
        "Missing, invalid or revoked bearer token",
        {"WWW-Authenticate": 'Bearer realm="gql-billing"'},
    )


def forbidden(scope: Scope) -> Refusal:
    return Refusal(403, "FORBIDDEN", "Forbidden", f"This token lacks the {scope} scope")


def too_large(limit_bytes: int, *, hang_up: bool = False) -> Refusal:
    # Connection: close makes the server hang up rather than read an endless upload on.
    return Refusal(
        413,
        "PAYLOAD_TOO_LARGE",
        "Payload Too Large",
        f"Request body exceeds {limit_bytes} bytes",
        {"Connection": "close"} if hang_up else {},
    )


def unsupported_media_type() -> Refusal:
    return Refusal(
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "Unsupported Media Type",
        "The body must be JSON, sent with Content-Type: application/json",
        {"Accept": JSON},
    )


def rate_limited(retry_after_seconds: int) -> Refusal:
    return Refusal(
        429,
        "RATE_LIMITED",
        "Too Many Requests",
        f"Rate limit exceeded; retry after {retry_after_seconds} s",
        {"Retry-After": str(retry_after_seconds)},
        retry_after_seconds,
    )


def declared_too_large(headers: Mapping[str, str], limit_bytes: int) -> bool:
    declared = headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit_bytes


def has_body(headers: Mapping[str, str]) -> bool:
    declared = headers.get("content-length", "")
    if declared.isdigit():
        return int(declared) > 0
    return "transfer-encoding" in headers


def is_json(headers: Mapping[str, str]) -> bool:
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == JSON


async def read_body(receive: Receive, limit_bytes: int) -> bytes | None:
    """The whole body, or None as soon as it grows past the limit (the rest is never read):
    a chunked upload has no Content-Length to check up front."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def drop_rest(receive: Receive, *, seconds: float) -> bool:
    """Read and drop the rest of a refused body for at most `seconds`; True if it ended."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return True
    except TimeoutError:
        return False


async def read_within(
    receive: Receive, limit_bytes: int, *, linger_seconds: float
) -> bytes | Refusal:
    """The body if it stays within the limit. Past it nothing more is kept: the rest is read
    and dropped for at most `linger_seconds`, so that a client that sends its whole body before
    reading (most do) gets its 413, and then the server hangs up on an upload still going
    (nginx's lingering close, for the same reason)."""
    body = await read_body(receive, limit_bytes)
    if body is not None:
        return body
    ended = await drop_rest(receive, seconds=linger_seconds)
    return too_large(limit_bytes, hang_up=not ended)


async def read_limited(
    request: Request, limit_bytes: int, *, linger_seconds: float
) -> bytes | Refusal:
    """The body of an unauthenticated door (the Stripe webhook): the size limit alone."""
    if declared_too_large(request.headers, limit_bytes):
        return too_large(limit_bytes)
    return await read_within(request.receive, limit_bytes, linger_seconds=linger_seconds)


@dataclass(frozen=True)
class Admitted:
    principal: Principal
    body: bytes


class Admission:
    """The checks every authenticated door runs, with the state they share: the per-token
    rate limiter, the token-usage record and the revocation watch."""

    def __init__(
        self,
        db: Database,
        *,
        rate_limiter: RateLimiter,
        token_usage: TokenUsage,
        revocations: RevocationWatch,
        max_body_bytes: int,
        linger_seconds: float,
    ) -> None:
        self.db = db
        self.rate_limiter = rate_limiter
        self.token_usage = token_usage
        self.revocations = revocations
        self.max_body_bytes = max_body_bytes
        self.linger_seconds = linger_seconds
        self.tokens = TokenCache(lifetime_seconds=TOKEN_CACHE_SECONDS)
        db.on_tokens_revoked.append(self.tokens.forget)

    async def admit(
        self,
        request: Request,
        *,
        needs: Scope | None = None,
        json_only: bool = False,
        with_body: bool = True,
    ) -> Admitted | Refusal:
        """The caller and the body, or why not: 413, 401, 429, 403, 415, then 413 while
        reading. `needs` is a scope the whole request needs (GraphQL checks scopes per field);
        `json_only` refuses a body that is not declared JSON."""
        if with_body and declared_too_large(request.headers, self.max_body_bytes):
            return too_large(self.max_body_bytes)
        principal = await self.caller(request.headers.get("authorization"))
        if principal is None:
            return unauthenticated()
        refusal = await self.count(principal)
        if refusal is not None:
            return refusal
        if needs is not None and not principal.has(needs):
            return forbidden(needs)
        if not with_body:
            return Admitted(principal, b"")
        if json_only and has_body(request.headers) and not is_json(request.headers):
            return unsupported_media_type()
        body = await read_within(
            request.receive, self.max_body_bytes, linger_seconds=self.linger_seconds
        )
        return body if isinstance(body, Refusal) else Admitted(principal, body)

    async def caller(self, authorization: str | None) -> Principal | None:
        return await authenticate(self.db, bearer_token(authorization), self.tokens)

    async def count(self, principal: Principal) -> Refusal | None:
        """One request (or websocket operation) against the token's budget."""
        decision = await self.rate_limiter.hit(f"token:{principal.token_id}")
        return None if decision.allowed else rate_limited(decision.retry_after_seconds)

    async def still_live(self, principal: Principal) -> bool:
        """False once the token is revoked: read from the database, so every process agrees."""
        return not await revoked_among(self.db, [principal.token_id])

    def message_too_large(self, text: str) -> bool:
        # A character is at least one byte: only a borderline message needs encoding.
        return len(text) > self.max_body_bytes or len(text.encode()) > self.max_body_bytes

    async def record_use(self, principal: Principal) -> None:
        """After the answer went out: a slow or failed write never delays or fails a request."""
        try:
            await self.token_usage.record(principal.token_id)
        except Exception:
            log.warning("could not record the use of token id %s", principal.token_id)

    async def close(self) -> None:
        await self.revocations.close()
        await self.rate_limiter.close()


OnRevoked = Callable[[], Awaitable[None]]


class RevocationWatch:
    """The open websockets of this process by token; while any is open, one query per
    interval finds the revoked tokens among them and closes their sockets. One query for
    all sockets, so its cost does not grow with the number of connections."""

    # Bound parameters per query: well inside SQLite's and PostgreSQL's limits.
    BATCH = 500

    def __init__(self, db: Database, *, interval_seconds: float) -> None:
        self._db = db
        self._interval_seconds = interval_seconds
        self._sockets: dict[int, set[OnRevoked]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def watch(self, token_id: int, on_revoked: OnRevoked) -> Callable[[], None]:
        """Call `on_revoked` once the token is revoked; returns the function that stops it."""
        self._sockets[token_id].add(on_revoked)
        if self._task is None:
            self._task = asyncio.create_task(self._run())

        def unwatch() -> None:
            sockets = self._sockets.get(token_id)
            if sockets is not None:
                sockets.discard(on_revoked)
                if not sockets:
                    del self._sockets[token_id]

        return unwatch

    async def _run(self) -> None:
        try:
            while self._sockets:
                await asyncio.sleep(self._interval_seconds)
                await self._check()
        finally:
            # Nothing left to watch (or closing): the next watch starts a new loop.
            self._task = None

    async def _check(self) -> None:
        token_ids = list(self._sockets)
        revoked: set[int] = set()
        try:
            for start in range(0, len(token_ids), self.BATCH):
                revoked |= await revoked_among(self._db, token_ids[start : start + self.BATCH])
        except Exception:
            # Every message re-checks the token anyway; the next round tries again.
            log.warning("could not check for revoked tokens", exc_info=True)
            return
        for token_id in revoked:
            for on_revoked in self._sockets.pop(token_id, set()):
                try:
                    await on_revoked()
                except Exception:
                    log.warning("could not close a websocket of revoked token id %s", token_id)

    async def close(self) -> None:
        task, self._task = self._task, None
        self._sockets.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def build_admission(settings: Settings, db: Database, clock: Clock) -> Admission:
    return Admission(
        db,
        rate_limiter=build_rate_limiter(settings, clock),
        token_usage=TokenUsage(
            db, clock, interval=timedelta(seconds=settings.token_usage_interval_seconds)
        ),
        revocations=RevocationWatch(
            db, interval_seconds=settings.revocation_check_interval_seconds
        ),
        max_body_bytes=settings.max_body_bytes,
        linger_seconds=settings.oversized_body_linger_seconds,
    )
