"""Outbound URLs (webhooks, job callbacks) are checked before the server calls them: no
server-side request forgery into its own network.

A URL must be http(s), carry no credentials, and its host must resolve only to public
addresses: loopback, private, link-local (cloud metadata at 169.254.169.254), multicast,
reserved and unspecified ones are refused, however they are spelled (a decimal or IPv4-mapped
IPv6 address resolves to what it means). AUTOGLM_OUTBOUND_ALLOW_PRIVATE lets them through (the
tests' receivers listen on loopback). The caller connects to the address checked here, so a DNS
answer that changes between the check and the call (rebinding) cannot move it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from .errors import InvalidRequestError


class OutboundURLError(InvalidRequestError):
    code = "invalid_url"


@dataclass(frozen=True)
class CheckedURL:
    url: str
    host: str
    port: int
    address: str  # the resolved address to connect to


def check_outbound_url(url: str, *, param: str = "url") -> CheckedURL:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundURLError("The URL must be an http or https URL with a host.", param=param)
    if parts.username or parts.password:
        raise OutboundURLError("The URL must not carry a user name or password.", param=param)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise OutboundURLError(f"The URL's port is invalid: {exc}.", param=param) from exc
    try:
        answers = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundURLError(f"The URL's host does not resolve: {exc}.", param=param) from exc
    addresses = [ipaddress.ip_address(answer[4][0]) for answer in answers]
    if not settings.AUTOGLM_OUTBOUND_ALLOW_PRIVATE:
        for address in addresses:
            if not _public(address):
                raise OutboundURLError(
                    "The URL's host is a private, loopback or link-local address; the server "
                    "calls public addresses only.",
                    param=param,
                )
    return CheckedURL(url=url.strip(), host=parts.hostname, port=port, address=str(addresses[0]))


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_global and not address.is_multicast
