"""The `gql-billing` command line: serve, demo, migrate, org, token, credits, worker,
reconcile, report, export-schema. Configuration comes from the environment (a `.env` file is
read too): GQL_BILLING_DATABASE_URL, STRIPE_SECRET_KEY, STRIPE_API_BASE, STRIPE_WEBHOOK_SECRET,
and the other GQL_BILLING_* settings of the README."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from . import auth, logs, migrate
from .billing.organizations import create_organization, grant_credits
from .db import Database
from .errors import BillingProblem
from .graphql.ids import pk_of, to_global_id
from .models import Plan
from .preflight import PreflightError, parse_database_url, require_migrated
from .progress import progress_reporter
from .settings import Settings

# How long `serve` lets in-flight requests finish after SIGTERM before closing them.
HTTP_SHUTDOWN_GRACE_SECONDS = 30


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def _with_db(
    settings: Settings, action: Callable[[Database], Coroutine[Any, Any, Any]]
) -> Any:
    db = Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    try:
        return await action(db)
    finally:
        await db.dispose()


def organization_pk(value: str) -> int:
    """Accept the global id printed by `org create` (or a bare number)."""
    pk = int(value) if value.isascii() and value.isdigit() else pk_of(value, "Organization")
    if pk is None:
        raise SystemExit(f"error: {value!r} is not an organization id")
    return pk


def _print(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload) if getattr(args, "json", False) else text)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    migrate.upgrade(settings.database_url)
    print("database upgraded to the latest schema")


def cmd_org_create(args: argparse.Namespace, settings: Settings) -> None:
    migrate.upgrade(settings.database_url)
    org = _run(
        _with_db(
            settings,
            lambda db: create_organization(
                db,
                name=args.name,
                plan=Plan(args.plan.upper()),
                display_currency=args.display_currency,
                approval_threshold_credits=args.approval_threshold,
            ),
        )
    )
    global_id = to_global_id("Organization", org.id)
    _print(args, {"id": global_id}, f"organization {org.name!r} created: {global_id}")


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> None:
    if args.service:
        if args.org:
            raise SystemExit("error: a service token has no organization (drop --org)")
        org_pk, scopes = None, auth.SERVICE_SCOPES
    else:
        if not args.org:
            raise SystemExit("error: --org is required (or --service for a service token)")
        org_pk, scopes = organization_pk(args.org), auth.parse_scopes(args.scopes)
    issued = _run(
        _with_db(
            settings,
            lambda db: auth.issue_token(db, organization_id=org_pk, scopes=scopes, name=args.name),
        )
    )
    _print(
        args,
        {"token": issued.token, "id": issued.id, "prefix": issued.prefix},
        f"{issued.token}\n(shown once; revoke with: gql-billing token revoke {issued.prefix})",
    )


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> None:
    token_id = _run(_with_db(settings, lambda db: auth.revoke_token(db, args.token)))
    _print(args, {"revoked": token_id}, f"token {token_id} revoked")


def cmd_credits_grant(args: argparse.Namespace, settings: Settings) -> None:
    org_pk = organization_pk(args.org)
    posted = _run(
        _with_db(
            settings,
            lambda db: grant_credits(
                db, organization_id=org_pk, amount_credits=args.credits, reason=args.reason
            ),
        )
    )
    _print(
        args,
        {"balanceCredits": posted.balance_credits, "availableCredits": posted.available_credits},
        f"adjusted by {args.credits} credits: balance {posted.balance_credits}",
    )


def cmd_export_schema(args: argparse.Namespace, settings: Settings) -> None:
    from .graphql.schema import build_schema

    sdl = build_schema().as_str() + "\n"
    if args.path:
        Path(args.path).write_text(sdl)
    else:
        sys.stdout.write(sdl)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    migrate.upgrade(settings.database_url)
    # Our JSON lines for uvicorn's own logs too (log_config=None keeps its handlers out), and
    # no access log: the request-id middleware writes one line per request, with the id.
    # On SIGTERM uvicorn stops accepting, lets in-flight requests finish (at most the grace
    # period), then shuts the app down, whose worker finishes its tick.
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": HTTP_SHUTDOWN_GRACE_SECONDS,
        # A websocket message is held whole before the app sees it: no larger than a body.
        "ws_max_size": settings.max_body_bytes,
    }
    if args.workers > 1:
        uvicorn.run("gql_billing.app:app_from_env", factory=True, workers=args.workers, **options)
        return
    from .app import create_app
    from .collector import settle_after_startup

    app = create_app(settings)
    settle_after_startup()
    uvicorn.run(app, **options)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from .app import build_gateway
    from .billing import Billing
    from .clock import SystemClock
    from .worker import Worker

    migrate.upgrade(settings.database_url)

    async def work() -> None:
        db = Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        gateway = build_gateway(settings)
        # Alone, the worker is the process's whole output: every pass is logged.
        worker = Worker(Billing.build(settings, db, gateway, SystemClock()), log_idle_passes=True)
        # SIGTERM (an orchestrator stopping us) and Ctrl-C: finish the tick, then exit.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        try:
            await worker.run_forever()
        finally:
            if gateway is not None:
                await gateway.close()
            await db.dispose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(work())


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> None:
    from dataclasses import asdict

    from .app import build_gateway
    from .billing import Billing
    from .clock import SystemClock
    from .reconcile import reconcile

    if not settings.stripe_configured:
        # Checking nothing and saying "checked 0" would read as "all settled".
        raise PreflightError(
            "Stripe is not configured: reconcile looks every unsettled top-up up at Stripe; "
            "set STRIPE_SECRET_KEY (and STRIPE_API_BASE for an emulator)"
        )

    async def run() -> dict[str, Any]:
        db = Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        gateway = build_gateway(settings)
        try:
            billing = Billing.build(settings, db, gateway, SystemClock())
            with progress_reporter("reconciling top-ups") as on_progress:
                return asdict(await reconcile(billing, on_progress=on_progress))
        finally:
            if gateway is not None:
                await gateway.close()
            await db.dispose()

    report = _run(run())
    text = (
        f"checked {report['checked']} unsettled top-ups: "
        f"{len(report['repaired'])} repaired (granted), {len(report['still_open'])} still open, "
        f"{len(report['unreachable'])} not reachable at Stripe"
    )
    _print(args, report, text)


def cmd_report(args: argparse.Namespace, settings: Settings) -> None:
    from rich.console import Console

    from .report import build_report, render

    org_pk = organization_pk(args.org)
    report = _run(_with_db(settings, lambda db: build_report(db, org_pk)))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        render(report, Console())
    if not report.passed:
        # Scripts (and cron) notice a broken ledger by the exit status.
        raise SystemExit(1)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from .demo import run_demo

    run_demo(port=args.port, host=args.host)


def cmd_demo_authenticate(args: argparse.Namespace, settings: Settings) -> None:
    from .demo import DEMO_SECRET_KEY, authenticate_payment

    api_base = args.stripe_api_base or settings.stripe_api_base
    if not api_base:
        raise PreflightError(
            "STRIPE_API_BASE is not set: use the emulator URL the demo printed "
            "(or pass --stripe-api-base)"
        )
    status = authenticate_payment(
        api_base,
        settings.stripe_secret_key or DEMO_SECRET_KEY,
        args.payment_intent,
        success=not args.fail,
    )
    print(
        f"{args.payment_intent}: {status}; send the same top-up again with the same "
        "idempotency key to settle it"
    )


class Needs(Enum):
    """What a command needs of the database before it runs."""

    NONE = "none"  # no database (export-schema, demo)
    MIGRATES = "migrates"  # creates or upgrades it itself (migrate, serve, worker, org create)
    MIGRATED = "migrated"  # reads or writes an existing one: refused when not migrated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gql-billing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        parent: Any, name: str, func: Callable[..., None], database: Needs, help: str
    ) -> argparse.ArgumentParser:
        found: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        found.set_defaults(func=func, database=database)
        return found

    def json_flag(found: argparse.ArgumentParser) -> None:
        found.add_argument("--json", action="store_true", help="print the result as JSON")

    serve = command(
        sub,
        "serve",
        cmd_serve,
        Needs.MIGRATES,
        "upgrade the database, then serve GraphQL, REST, webhooks and the worker",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (default 1)"
    )

    demo = command(
        sub,
        "demo",
        cmd_demo,
        Needs.NONE,
        "local playground: a throw-away SQLite database, a Stripe emulator, a demo "
        "organization, its token and test cards",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on")
    demo.add_argument("--port", type=int, default=8000, help="port to listen on")
    demo_sub = demo.add_subparsers(dest="demo_command")
    authenticate = command(
        demo_sub,
        "authenticate",
        cmd_demo_authenticate,
        Needs.NONE,
        "pass the 3-D Secure challenge of a demo top-up (what Stripe.js does in a browser)",
    )
    authenticate.add_argument(
        "payment_intent", help="the pi_... of the AuthenticationRequired answer"
    )
    authenticate.add_argument(
        "--stripe-api-base",
        default=None,
        help="the demo's Stripe emulator URL (default: STRIPE_API_BASE)",
    )
    authenticate.add_argument(
        "--fail", action="store_true", help="fail the challenge instead of passing it"
    )

    command(sub, "migrate", cmd_migrate, Needs.MIGRATES, "upgrade the database schema")
    command(
        sub,
        "worker",
        cmd_worker,
        Needs.MIGRATES,
        "only the background worker: auto top-ups, card hold expiry, invoices, reconciliation",
    )
    reconcile = command(
        sub,
        "reconcile",
        cmd_reconcile,
        Needs.MIGRATED,
        "look unsettled top-ups up at Stripe and settle them (grants the paid ones)",
    )
    json_flag(reconcile)
    report = command(
        sub,
        "report",
        cmd_report,
        Needs.MIGRATED,
        "one organization's wallet, ledger totals, ledger invariants and recent top-ups "
        "(exit 1 when an invariant fails); read-only",
    )
    report.add_argument("--org", required=True, help="the organization's id (from org create)")
    json_flag(report)

    org = sub.add_parser("org", help="organizations").add_subparsers(
        dest="org_command", required=True
    )
    org_create = command(org, "create", cmd_org_create, Needs.MIGRATES, "create an organization")
    org_create.add_argument("--name", required=True, help="the organization's name")
    org_create.add_argument(
        "--plan",
        default="standard",
        choices=["free", "standard", "enterprise"],
        help="billing plan (default standard)",
    )
    org_create.add_argument(
        "--display-currency",
        default="AUD",
        help="currency balances are shown in (settlement is always AUD)",
    )
    org_create.add_argument(
        "--approval-threshold",
        type=int,
        default=None,
        metavar="CREDITS",
        help="spends above this many credits wait for a billing:approve token",
    )
    json_flag(org_create)

    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True
    )
    token_create = command(
        token,
        "create",
        cmd_token_create,
        Needs.MIGRATED,
        "issue a token (printed once, stored hashed)",
    )
    token_create.add_argument("--org", help="the organization's id (from org create)")
    token_create.add_argument(
        "--scopes",
        default="billing:read,billing:write",
        help="comma-separated: billing:read, billing:write, billing:approve",
    )
    token_create.add_argument(
        "--service",
        action="store_true",
        help="a service token: billing:spend, no organization",
    )
    token_create.add_argument("--name", default="", help="a label to recognise the token by")
    json_flag(token_create)
    token_revoke = command(
        token, "revoke", cmd_token_revoke, Needs.MIGRATED, "revoke a token at once"
    )
    token_revoke.add_argument("token", help="the token's prefix (gqlb_xxxxxxxx) or id")
    json_flag(token_revoke)

    credits = sub.add_parser("credits", help="operator credits").add_subparsers(
        dest="credits_command", required=True
    )
    grant = command(
        credits,
        "grant",
        cmd_credits_grant,
        Needs.MIGRATED,
        "book an ADJUSTMENT entry: a goodwill credit, or a debit with a negative amount",
    )
    grant.add_argument("--org", required=True, help="the organization's id (from org create)")
    grant.add_argument(
        "--credits",
        type=int,
        required=True,
        help="credits to add (100 = A$1); negative debits, never below zero",
    )
    grant.add_argument("--reason", required=True, help="shown on the ledger entry")
    json_flag(grant)

    export = command(sub, "export-schema", cmd_export_schema, Needs.NONE, "write the GraphQL SDL")
    export.add_argument("path", nargs="?", help="file to write (default: standard output)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo" and args.demo_command == "authenticate":
        args.func = cmd_demo_authenticate
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        print(f"error: configuration: {problems}", file=sys.stderr)
        return 2
    # JSON lines on stderr for every command: stdout stays the command's own output.
    logs.configure_logging(settings.log_level)
    try:
        if args.database is not Needs.NONE:
            parse_database_url(settings.database_url)
        if args.database is Needs.MIGRATED:
            _run(require_migrated(settings.database_url))
        args.func(args, settings)
    except BillingProblem as problem:
        print(f"error: {problem.detail}", file=sys.stderr)
        return 2
    except PreflightError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, OSError) as exc:
        # The database went away or refused us mid-command: one line, not a traceback.
        shown = _shown_url(settings.database_url)
        print(f"error: database {shown}: {_first_line(exc)}", file=sys.stderr)
        return 2
    return 0


def _shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def _first_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
