"""Exit 0 when the test PostgreSQL server answers (used by `make test-postgres`)."""

from __future__ import annotations

import asyncio
import sys

from support.databases import pg_reachable

if __name__ == "__main__":
    sys.exit(0 if asyncio.run(pg_reachable()) else 1)
