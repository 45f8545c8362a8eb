"""Browser-facing defences of the web server: the Host header, same-origin writes, no framing.

- **Host.** A request whose `Host` is not the bound address, a loopback name or one of
  `--allowed-hosts` gets a 400: a DNS-rebinding page in a victim's browser can then not read the
  app or drive it.
- **Same origin.** A state-changing request (POST, PUT, PATCH, DELETE: the API's writes and every
  Dash callback) that comes from a browser must come from a page of this app. Browsers send
  `Origin` on such requests (and `Referer` with it); when either names another site, the answer
  is a 403 and nothing changes. A request with neither (curl, a script) is not a browser's and
  passes.
- **Proxies.** `X-Forwarded-For`, `-Proto` and `-Host` are read only from `--trusted-proxies`
  (werkzeug's ProxyFix would take them from anyone), so the Host check and the client's address
  hold behind a reverse proxy and can't be forged around it.
- **Framing.** Every answer says `X-Frame-Options: DENY` and a CSP `frame-ancestors 'none'`, so
  no other site can frame the settings page and lure clicks onto it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from flask import Flask, jsonify, request
from werkzeug.middleware.proxy_fix import ProxyFix

from services.settings import SettingsError, shown

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def host_name(netloc: str) -> str:
    """`example.com:8050` -> `example.com`; `[::1]:8050` -> `::1`; lower case."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def trusted(addr: str | None, proxies) -> bool:
    """Whether a peer address is one of `proxies` (addresses or networks; loopback when none)."""
    try:
        ip = ipaddress.ip_address(addr or "")
    except ValueError:
        return False
    if not proxies:
        return ip.is_loopback
    return any(ip in ipaddress.ip_network(p, strict=False) for p in proxies)


class TrustedProxyFix:
    """WSGI: the X-Forwarded-* headers of a request from a trusted proxy (one hop), and none of
    anyone else's."""

    def __init__(self, app, proxies):
        self.plain, self.proxies = app, tuple(proxies)
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1)

    def __call__(self, environ, start_response):
        app = self.fixed if trusted(environ.get("REMOTE_ADDR"), self.proxies) else self.plain
        return app(environ, start_response)


def parse_proxies(values) -> tuple[str, ...]:
    """--trusted-proxies: addresses or networks (SettingsError names a bad one)."""
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError:
            raise SettingsError(f"not an address or network: {shown(value)}") from None
    return tuple(out)


def allowed_hosts(bound: str, extra) -> frozenset[str]:
    """The names a `Host` header may carry: loopback, the bound address (unless it is every
    interface: then the names must be given), and `extra` (--allowed-hosts)."""
    names = {*LOOPBACK_NAMES, *(host_name(h) for h in extra)}
    if bound not in ("0.0.0.0", "::", ""):
        names.add(host_name(bound))
    return frozenset(names)


def install(server: Flask, bound: str, extra=(), proxies=()) -> None:
    hosts = allowed_hosts(bound, extra)
    if proxies:
        server.wsgi_app = TrustedProxyFix(server.wsgi_app, proxies)

    @server.before_request
    def check_host_and_origin():
        host = host_name(request.host)
        if host not in hosts:
            return jsonify(error=f"Host {shown(request.host)} is not served here; add it with --allowed-hosts"), 400
        if request.method not in WRITES:
            return None
        for header in ("Origin", "Referer"):
            source = request.headers.get(header)
            if source is not None and urlsplit(source).netloc.lower() != request.host.lower():
                return jsonify(error=f"cross-origin {request.method} refused ({header} {shown(source)})"), 403
        return None

    @server.after_request
    def no_framing(resp):
        present = {name.lower() for name, _ in resp.headers}  # (Headers.setdefault builds an exception per miss)
        for name, value in HEADERS.items():
            if name.lower() not in present:
                resp.headers[name] = value
        return resp
