"""The node clients in tests/clients (its package.json): installed with `npm ci` when its
node_modules is missing, so `make test` needs nothing but node and npm on the machine."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLIENTS = Path(__file__).resolve().parents[1] / "clients"


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require(tool: str) -> str:
    """The tool's path. Without it the test is skipped on a workstation; CI must have it."""
    path = shutil.which(tool)
    if path is None:
        if in_ci():
            pytest.fail(f"{tool} is not installed (CI must have it: see .ci/run)")
        pytest.skip(f"{tool} is not installed")
    return path


@functools.cache
def _install(npm: str) -> None:
    if (CLIENTS / "node_modules" / ".package-lock.json").exists():
        return
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=CLIENTS,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"


def node() -> str:
    """The node binary, once tests/clients has its packages."""
    path = require("node")
    _install(require("npm"))
    return path
