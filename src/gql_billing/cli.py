"""The `gql-billing` command line (SPEC §12): serve, demo, migrate, org, token, credits,
worker, reconcile, report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from . import auth, logs, migrate
from .billing.organizations import create_organization, grant_credits
from .db import Database
from .errors import BillingProblem
from .graphql.ids import pk_of, to_global_id
from .models import Plan
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
    migrate.upgrade(settings.database_url)
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
        worker = Worker(Billing.build(settings, db, gateway, SystemClock()))
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

    migrate.upgrade(settings.database_url)

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gql-billing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, then serve GraphQL")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="local playground with a Stripe emulator")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("migrate", help="upgrade the database").set_defaults(func=cmd_migrate)
    sub.add_parser("worker", help="only the background worker").set_defaults(func=cmd_worker)
    reconcile = sub.add_parser("reconcile", help="match top-ups with Stripe and repair")
    reconcile.add_argument("--json", action="store_true")
    reconcile.set_defaults(func=cmd_reconcile)
    report = sub.add_parser(
        "report", help="one organization's wallet, ledger totals and invariants (exit 1: broken)"
    )
    report.add_argument("--org", required=True)
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)

    org = sub.add_parser("org", help="organizations").add_subparsers(
        dest="org_command", required=True
    )
    org_create = org.add_parser("create")
    org_create.add_argument("--name", required=True)
    org_create.add_argument(
        "--plan", default="standard", choices=["free", "standard", "enterprise"]
    )
    org_create.add_argument("--display-currency", default="AUD")
    org_create.add_argument("--approval-threshold", type=int, default=None)
    org_create.add_argument("--json", action="store_true")
    org_create.set_defaults(func=cmd_org_create)
    # (--approval-threshold: spends above this many credits wait for billing:approve)

    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True
    )
    token_create = token.add_parser("create")
    token_create.add_argument("--org")
    token_create.add_argument("--scopes", default="billing:read,billing:write")
    token_create.add_argument("--service", action="store_true")
    token_create.add_argument("--name", default="")
    token_create.add_argument("--json", action="store_true")
    token_create.set_defaults(func=cmd_token_create)
    token_revoke = token.add_parser("revoke")
    token_revoke.add_argument("token", help="the token's prefix (gqlb_xxxxxxxx) or id")
    token_revoke.add_argument("--json", action="store_true")
    token_revoke.set_defaults(func=cmd_token_revoke)

    credits = sub.add_parser("credits", help="operator credits").add_subparsers(
        dest="credits_command", required=True
    )
    grant = credits.add_parser("grant")
    grant.add_argument("--org", required=True)
    grant.add_argument("--credits", type=int, required=True)
    grant.add_argument("--reason", required=True)
    grant.add_argument("--json", action="store_true")
    grant.set_defaults(func=cmd_credits_grant)

    export = sub.add_parser("export-schema", help="write the GraphQL SDL")
    export.add_argument("path", nargs="?")
    export.set_defaults(func=cmd_export_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    # JSON lines on stderr for every command: stdout stays the command's own output.
    logs.configure_logging(settings.log_level)
    try:
        args.func(args, settings)
    except BillingProblem as problem:
        print(f"error: {problem.detail}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
