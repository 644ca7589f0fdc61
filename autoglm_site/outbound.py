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

import http.client
import ipaddress
import socket
import ssl
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


def outbound_post(
    checked: CheckedURL, body: bytes, *, headers: dict[str, str], timeout: float
) -> int:
    """POST ``body`` to a checked URL, connecting to the address it was checked at (TLS still
    verifies the host's certificate); the response's status. A redirect is a status like any
    other: it is not followed. Raises OSError when no answer comes within ``timeout``."""
    parts = urlsplit(checked.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection_class = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = connection_class(checked, timeout)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(4096)  # a little of the body only: a receiver's answer is not read
        return response.status
    except http.client.HTTPException as exc:  # a malformed answer
        raise OSError(f"bad HTTP answer: {exc!r}") from exc
    finally:
        connection.close()


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to the checked address, with the URL's host in its Host header."""

    def __init__(self, checked: CheckedURL, timeout: float) -> None:
        super().__init__(checked.host, checked.port, timeout=timeout)
        self.address = checked.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(_PinnedHTTP):
    default_port = 443

    def connect(self) -> None:
        super().connect()
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
