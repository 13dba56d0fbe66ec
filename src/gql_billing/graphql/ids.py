"""Opaque Relay global ids ("Type:pk", base64url) and pagination cursors."""

from __future__ import annotations

import base64
import binascii


def to_global_id(type_name: str, pk: int) -> str:
    return _encode(f"{type_name}:{pk}")


def from_global_id(global_id: str) -> tuple[str, int] | None:
    """(type name, primary key), or None for anything that is not one of our ids."""
    raw = _decode(global_id)
    if raw is None:
        return None
    type_name, _, pk = raw.partition(":")
    if not type_name or not (pk.isascii() and pk.isdigit()) or len(pk) > 18:
        return None
    return type_name, int(pk)


def pk_of(global_id: str, type_name: str) -> int | None:
    parsed = from_global_id(global_id)
    if parsed is None or parsed[0] != type_name:
        return None
    return parsed[1]


def to_cursor(pk: int) -> str:
    return _encode(f"cursor:{pk}")


def from_cursor(cursor: str) -> int | None:
    raw = _decode(cursor)
    if raw is None or not raw.startswith("cursor:"):
        return None
    pk = raw.removeprefix("cursor:")
    return int(pk) if pk.isascii() and pk.isdigit() and len(pk) <= 18 else None


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(value: str) -> str | None:
    if not value or len(value) > 200:
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
