"""Where a webhook may point: public addresses only, never the app itself.

A webhook URL is user input that makes the server send requests, so it could be turned on the
app (an alert loop) or on the network behind it (cloud metadata at 169.254.169.254, a database
port on loopback). Every address a host name resolves to is checked, whatever its notation
(`0x7f000001`, `2130706433`, `[::ffff:127.0.0.1]` all resolve to loopback), when the URL is
saved and again on the socket at connect time, so a DNS answer that changes in between
(rebinding) does not get through either.

`allow_private` (`--allow-private-webhooks`) admits private and loopback receivers, for a
trusted network or a receiver on this machine. Link-local, multicast, reserved and unspecified
addresses, and the app's own address and port, are refused even then.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from services.settings import SettingsError, parse_url, shown

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(SettingsError):
    """The webhook points somewhere the app does not send to; the message says why."""


@dataclass(frozen=True)
class WebhookPolicy:
    allow_private: bool = False
    own_host: str = "127.0.0.1"  # where the app listens: never a receiver
    own_port: int = 8050

    def refusal(self, ip: Address, port: int) -> str | None:
        """Why `ip`:`port` may not receive webhooks, or None."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if port == self.own_port and (ip.is_loopback or ip.is_unspecified or str(ip) in self._own_addresses()):
            return f"{ip} port {port} is this app"
        for kind in ("link_local", "multicast", "unspecified", "reserved"):
            if getattr(ip, f"is_{kind}"):
                return f"{ip} is a {kind.replace('_', '-')} address"
        if ip.is_global:
            return None
        if self.allow_private and (ip.is_private or ip.is_loopback):
            return None
        what = "loopback" if ip.is_loopback else "private"
        return f"{ip} is a {what} address (start with --allow-private-webhooks to send to a trusted network)"

    def _own_addresses(self) -> set[str]:
        try:
            return {str(ipaddress.ip_address(self.own_host))}
        except ValueError:  # a host name: whatever it resolves to
            return {str(ip) for ip in _resolve(self.own_host, self.own_port)}

    def check(self, url: str) -> str:
        """`url` if every address its host resolves to may receive webhooks, else TargetRefused."""
        url = parse_url(url, "Webhook URL")
        if not url:
            return url
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise TargetRefused("Webhook URL must not carry a user name or password")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise TargetRefused(f"Webhook URL has no valid port (host {shown(parts.hostname)})") from None
        addresses = _resolve(parts.hostname, port)
        if not addresses:
            raise TargetRefused(f"Webhook host {shown(parts.hostname)} does not resolve")
        for ip in addresses:
            why = self.refusal(ip, port)
            if why:
                raise TargetRefused(f"Webhook URL refused: {why}")
        return url


def _resolve(host: str, port: int) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


class RefusedAtConnect(NewConnectionError):
    """The socket reached an address the policy refuses (the DNS answer changed after the check)."""


class _Guarded:
    """A urllib3 connection that checks the address it actually connected to."""

    policy: WebhookPolicy

    def _new_conn(self):
        sock = super()._new_conn()
        host, port = sock.getpeername()[:2]
        why = self.policy.refusal(ipaddress.ip_address(host.split("%")[0]), port)
        if why:
            sock.close()
            raise RefusedAtConnect(self, f"webhook target refused at connect time: {why}")
        return sock


def guarded_pool_classes(policy: WebhookPolicy) -> dict:
    """urllib3 pool classes (per scheme) whose connections obey `policy`."""
    http = type("GuardedHTTPConnection", (_Guarded, HTTPConnection), {"policy": policy})
    https = type("GuardedHTTPSConnection", (_Guarded, HTTPSConnection), {"policy": policy})
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
    }
