"""Structured JSON logs (structlog over the standard library) and the request-id middleware.

Every line is one JSON object: `timestamp`, `level`, `logger`, `event`, and the request's
context — `request_id` always, then `organization_id`, `operation`, `outcome` once GraphQL
knows them (see `graphql/instrumentation.py`).

What is never logged: bearer tokens, Stripe API keys, webhook signing secrets, client
secrets of PaymentIntents and SetupIntents, and card data — payment method ids (`pm_…`)
included, since they name a customer's saved card. Ids that only point at our own records
or at a charge (`topup_attempt_id`, `pi_…`, `evt_…`) are logged: an operator needs them to
follow a payment to Stripe's dashboard, and they grant nothing. The code does not pass the
secrets to the logger in the first place; `redact` is the second line of defence, applied
to every line (the libraries' lines too: httpx logs Stripe URLs, some with a `pm_` in them).
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import MutableMapping
from typing import IO, Any

import orjson
import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128
REDACTED = "[redacted]"

SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "token",
        "secret",
        "client_secret",
        "api_key",
        "password",
        "stripe_signature",
        "cookie",
        "card",
        "payment_method",
        "payment_method_id",
    }
)
SECRET_PATTERN = re.compile(
    r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9_]+"  # Stripe API keys
    r"|whsec_[A-Za-z0-9_]+"  # webhook signing secrets
    r"|gqlb_[A-Za-z0-9_\-]+"  # our bearer tokens (see auth.TOKEN_PREFIX)
    r"|\b[A-Za-z0-9]+_[A-Za-z0-9]+_secret_[A-Za-z0-9]+"  # pi_…_secret_…, seti_…_secret_…
    r"|\bpm_[A-Za-z0-9]+"  # saved cards
    r"|\b[Bb]earer\s+\S+"
)
# Probes and scrapes arrive every few seconds: not worth an INFO line each.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
# Their INFO/DEBUG lines repeat every Stripe call (with bodies, client secrets included, at
# DEBUG); our metrics and our own lines already cover what an operator needs from them.
# Alembic would add two lines to every command (each one checks the schema is current).
NOISY_LOGGERS = ("stripe", "httpx", "httpcore", "aiosqlite", "asyncio", "alembic")

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

log = structlog.stdlib.get_logger("gql_billing.http")
# The access line is written without structlog's chain (below): the same fields, built once.
_ACCESS_LOGGER = "gql_billing.http"
_access = logging.getLogger(_ACCESS_LOGGER)
_stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
# Set on a record whose message is already its finished, redacted JSON line.
_PREFORMATTED = "gql_billing_line"
# The keys an access line usually has (none of them sensitive) and the value types that
# need no walking: a line with only these is checked by one search instead of `redact`.
_ACCESS_KEYS = frozenset(
    {
        "event",
        "method",
        "path",
        "status",
        "duration_ms",
        "level",
        "logger",
        "timestamp",
        "request_id",
        "organization_id",
        "operation",
        "operation_type",
        "fields",
        "outcome",
    }
)
_FLAT = frozenset({str, int, float, bool, type(None)})


def scrub(value: Any) -> Any:
    """`value` with every secret-looking substring replaced (strings, and inside containers)."""
    if isinstance(value, str):
        return SECRET_PATTERN.sub(REDACTED, value)
    if isinstance(value, dict):
        return {k: REDACTED if _sensitive(k) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def _sensitive(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in SENSITIVE_KEYS


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor: sensitive keys blanked, secret-looking values scrubbed."""
    return {k: REDACTED if _sensitive(k) else scrub(v) for k, v in event_dict.items()}


def configure_structlog() -> None:
    """Route structlog through the standard library (idempotent; no handlers installed)."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            # First, so a DEBUG line nobody listens to costs one level check.
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class _JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter, passing through a line that `access_line` already finished."""

    def format(self, record: logging.LogRecord) -> str:
        line = getattr(record, _PREFORMATTED, None)
        if line is not None:
            return str(line)
        return super().format(record)


def json_formatter() -> logging.Formatter:
    """One JSON object per line, for our lines and the libraries' alike, always redacted."""
    return _JsonFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(),
        ],
    )


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so configuring twice replaces it instead of printing every line twice."""


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """The process's logging, for the command line: JSON lines on stderr."""
    configure_structlog()
    handler = _JsonHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _JsonHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


CLIENT_CLOSED_REQUEST = 499


def accepted_request_id(value: str | None) -> str | None:
    """A client's X-Request-Id if it is safe to echo and log: printable ASCII, 1–128 chars."""
    if value and len(value) <= MAX_REQUEST_ID_LENGTH and value.isascii() and value.isprintable():
        return value
    return None


class RequestContext:
    """ASGI middleware: a request id for every HTTP request (echoed in `X-Request-Id`), bound
    to every log line of the request; one access line and the HTTP latency metric at the end."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        request_id = request_id or uuid.uuid4().hex
        status = 500  # what the client sees if the app raises before answering
        answered = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        # Restored afterwards: under an in-process transport the "request" shares the
        # caller's context, and GraphQL binds more keys while it runs.
        outer = structlog.contextvars.get_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
            if not answered:
                # The app stops without an answer only when the client went away mid-request:
                # nginx's 499, not a server error.
                status = CLIENT_CLOSED_REQUEST
        finally:
            self._finish(scope, status, time.perf_counter() - started)
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(**outer)

    def _finish(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route(scope)
        self.metrics.http_request(route, scope["method"], status, seconds)
        level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
        if _access.isEnabledFor(level):
            access_line(level, scope["method"], scope["path"], status, seconds)


def access_line(level: int, method: str, path: str, status: int, seconds: float) -> None:
    """The request's access line: what `log.log(level, "request", ...)` would write (the
    request's bound context, then the same keys and the same redaction), without running
    structlog's processor chain and its formatter's for every request. Handlers other than
    ours get the finished JSON line as the record's message."""
    event = structlog.contextvars.get_contextvars()
    event |= {
        "event": "request",
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "level": "debug" if level == logging.DEBUG else "info",
        "logger": _ACCESS_LOGGER,
    }
    _stamp(None, "", event)
    line = orjson.dumps(_redacted(event), default=repr).decode()
    record = _access.makeRecord(_ACCESS_LOGGER, level, __file__, 0, line, (), None)
    setattr(record, _PREFORMATTED, line)
    _access.handle(record)


def _redacted(event: dict[str, Any]) -> MutableMapping[str, Any]:
    """`redact(event)`, skipped when it could change nothing: no key outside the usual ones,
    only flat values, and no secret-looking text in any of them. One search over the string
    values joined by newlines matches wherever a search of each value would (the pattern's
    `\\b` and `\\S` stop at a newline as at the end of a string), so a secret is never missed;
    at worst a match across two values sends the line through `redact`."""
    values = event.values()
    if (
        event.keys() <= _ACCESS_KEYS
        and all(type(value) in _FLAT for value in values)
        and SECRET_PATTERN.search("\n".join(v for v in values if type(v) is str)) is None
    ):
        return event
    return redact(None, "", event)


def _route(scope: Scope) -> str:
    """The matched route's template (bounded, unlike the raw path) for the metric label."""
    if "endpoint" not in scope:
        return "unmatched"
    path = str(scope["path"])
    for name, value in (scope.get("path_params") or {}).items():
        path = path.replace(str(value), "{" + name + "}")
    return path
