"""Which URLs an endpoint may have. In production: https, to a host whose every resolved
address is public (checked on the addresses, not the name, so a name pointing at 127.0.0.1
or the cloud metadata address is refused). Elsewhere http and private addresses are fine,
for receivers on a developer's machine."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from ..errors import InvalidInput

MAX_URL_LENGTH = 2000


def _refuse(detail: str) -> InvalidInput:
    return InvalidInput("url", detail)


def parse(url: str, *, production: bool) -> tuple[str, int]:
    """(host, port) of an acceptable URL, or InvalidInput naming `url`."""
    if len(url) > MAX_URL_LENGTH or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise _refuse(f"url must be at most {MAX_URL_LENGTH} characters, without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse("url is not a valid URL") from exc
    allowed = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed:
        raise _refuse("url must start with https://" if production else "url must be http(s)")
    if not parts.hostname:
        raise _refuse("url must name a host")
    if parts.username is not None or parts.password is not None:
        raise _refuse("url must not carry credentials")
    if parts.fragment:
        raise _refuse("url must not have a #fragment")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check(url: str, *, production: bool) -> None:
    """Refuse a URL the platform must not call (see the module's docstring)."""
    host, port = parse(url, production=production)
    if not production:
        return
    for address in await resolve(host, port):
        if not is_public(address):
            raise _refuse("url must point at a public address")


async def resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _refuse("url's host does not resolve") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise _refuse("url's host does not resolve")
    return addresses


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
