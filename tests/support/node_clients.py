"""The node clients in tests/clients (its package.json). `make test` installs their packages
once, before the suites start (`npm ci` into one shared folder must not run twice at once),
so a test here only checks that they are present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

CLIENTS = Path(__file__).resolve().parents[1] / "clients"


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def _missing(what: str) -> NoReturn:
    """Skip on a workstation, in one line; CI must have every prerequisite."""
    if in_ci():
        pytest.fail(f"{what} (CI must have it: see .ci/run)")
    pytest.skip(what)


def require(tool: str) -> str:
    """The tool's path. Without it the test is skipped on a workstation; CI must have it."""
    path = shutil.which(tool)
    if path is None:
        _missing(f"{tool} is not installed")
    return path


def node() -> str:
    """The node binary, once tests/clients has its packages (`make test` installs them)."""
    path = require("node")
    if not (CLIENTS / "node_modules" / ".package-lock.json").exists():
        _missing("tests/clients has no node_modules: `make test` installs them with npm ci")
    return path
