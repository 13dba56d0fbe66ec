"""The real app under uvicorn on a free port, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn

from gql_billing.app import create_app
from gql_billing.billing import Billing
from gql_billing.clock import Clock
from gql_billing.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServedApp:
    base_url: str
    billing: Billing
    settings: Settings

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/graphql"


@contextlib.asynccontextmanager
async def serve(settings: Settings, clock: Clock | None = None) -> AsyncIterator[ServedApp]:
    app = create_app(settings, clock=clock)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield ServedApp(f"http://127.0.0.1:{port}", app.state.billing, settings)
    finally:
        server.should_exit = True
        await task
