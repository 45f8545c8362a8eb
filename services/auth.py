"""Who may look, and who may change things, once the app is reachable beyond this machine.

Bound to loopback (the default) the app trusts its one user: no login. Beyond it, the app starts
only with a way to know its users (`--users-file`, `--trust-proxy-auth`) or when told it is open
on purpose (`--insecure-no-auth`, said on every page).

- **Users** come from `--users-file`, one per line, `user NAME ROLE HASH`: ROLE is `viewer` or
  `editor`, HASH werkzeug's password hash (`python app.py --users-file F --add-user NAME:ROLE`
  writes the line, asking for the password). They sign in on `/login` (Flask-Login: a signed
  session cookie, HttpOnly, SameSite=Lax).
- **Tokens** for scripts: `token NAME SHA256` lines (`--add-token NAME` prints a new token once
  and keeps only its digest); `Authorization: Bearer TOKEN` acts as that user.
- **A reverse proxy** that authenticates may name the user in `X-Forwarded-User`, read only with
  `--trust-proxy-auth` and only from `--trusted-proxies`; the user's role is the users file's,
  `viewer` for anyone not in it.

Viewers see everything; only editors change the settings, the watchlist, the rules, the webhook
or the REST host, or send a test alert (`require_editor`, called by the service layer itself, so
that every route and callback that changes something is covered). `/api/health`, `/metrics`,
`/login` and the static files stay open; the rest of the API answers 401 without a session or a
token, and the pages send the browser to `/login`.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, jsonify, redirect, request, session
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.security import check_password_hash, generate_password_hash

from services.settings import SettingsError
from services.webguard import trusted

log = logging.getLogger(__name__)
ROLES = ("viewer", "editor")
PROXY_USER_HEADER = "X-Forwarded-User"
OPEN_PREFIXES = ("/assets/", "/_dash-component-suites/", "/login", "/logout")
OPEN_PATHS = frozenset({"/api/health", "/metrics", "/_favicon.ico"})
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class AuthConfigError(ValueError):
    """The users file can't be used; the message says which line and why."""


class NotAnEditor(SettingsError):
    """A viewer (or no one) asked to change something: a 403 from the API, a message on a page."""


@dataclass(frozen=True)
class User(UserMixin):
    name: str
    role: str

    def get_id(self) -> str:
        return self.name

    @property
    def is_editor(self) -> bool:
        return self.role == "editor"


@dataclass(frozen=True)
class Directory:
    """The users file, read: passwords (hashes) and tokens (digests) by user."""

    users: dict  # name -> (role, password hash or None)
    tokens: dict  # sha256 hex -> name

    @classmethod
    def load(cls, path: str | os.PathLike | None) -> Directory:
        users, tokens = {}, {}
        if not path:
            return cls(users, tokens)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthConfigError(f"{path}: can't be read ({exc.strerror})") from None
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            where = f"{path}, line {number}"
            if words[0] == "user" and len(words) == 4 and NAME_RE.match(words[1]) and words[2] in ROLES:
                users[words[1]] = (words[2], None if words[3] == "-" else words[3])
            elif words[0] == "token" and len(words) == 3 and re.fullmatch(r"[0-9a-f]{64}", words[2]):
                tokens[words[2]] = words[1]
            else:
                raise AuthConfigError(f"{where}: expected 'user NAME viewer|editor HASH' or 'token NAME SHA256'")
        for name in tokens.values():
            if name not in users:
                raise AuthConfigError(f"{path}: a token names {name!r}, who is not a user of the file")
        return cls(users, tokens)

    def user(self, name: str | None) -> User | None:
        entry = self.users.get(name or "")
        return None if entry is None else User(name, entry[0])

    def check_password(self, name: str, password: str) -> User | None:
        role, hashed = self.users.get(name, (None, None))
        if hashed is None:
            check_password_hash(DUMMY_HASH, password)  # the same time for a wrong name as a wrong password
            return None
        return User(name, role) if check_password_hash(hashed, password) else None

    def token_user(self, token: str) -> User | None:
        name = self.tokens.get(hashlib.sha256(token.encode()).hexdigest())
        return self.user(name)


DUMMY_HASH = generate_password_hash(secrets.token_hex(8))
RELOAD_EVERY_S = 2.0


class UsersFile:
    """The users file, read again when it changes (looked at once every RELOAD_EVERY_S): a user or
    token added with --add-user or --add-token works without a restart. A file made unusable
    while running keeps the last good one in use, and says why in the log."""

    def __init__(self, path: str):
        self.path, self._checked, self._mtime = path, 0.0, None
        self.directory = Directory.load(path)
        self._mtime = self._stat()

    def _stat(self):
        try:
            return os.stat(self.path).st_mtime_ns if self.path else None
        except OSError:
            return None

    def current(self) -> Directory:
        now = time.monotonic()
        if self.path and now - self._checked >= RELOAD_EVERY_S:
            self._checked = now
            mtime = self._stat()
            if mtime != self._mtime:
                self._mtime = mtime
                try:
                    self.directory = Directory.load(self.path)
                except AuthConfigError as exc:
                    log.error("%s; the users read before stay in use", exc)
        return self.directory


@dataclass(frozen=True)
class AuthConfig:
    users_file: str = ""
    trust_proxy_auth: bool = False
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks; loopback when empty


def peer() -> str | None:
    """The address this request came from: the proxy's, also after ProxyFix took the client's
    from X-Forwarded-For."""
    return request.environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR", request.remote_addr)


def require_editor() -> None:
    """Raise NotAnEditor unless whoever asks may change things: no one signed in is needed when
    auth is off (loopback, or --insecure-no-auth), and code outside a request (the collector,
    tests) is the operator."""
    from flask import current_app, has_request_context

    if not has_request_context() or "auth" not in current_app.extensions:
        return
    user = who()
    if user is None:
        raise NotAnEditor("Sign in to change this")
    if not user.is_editor:
        raise NotAnEditor(f"Only editors can change this; {user.name} is a viewer")


def may_edit() -> bool:
    """Whether this request's user may change things (see require_editor)."""
    try:
        require_editor()
    except NotAnEditor:
        return False
    return True


def who() -> User | None:
    """The user of this request: the session's, a bearer token's, or the trusted proxy's."""
    cached = getattr(request, "_auth_user", False)
    if cached is not False:
        return cached
    users, config = _state()
    directory = users.current()
    user = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        user = directory.token_user(header[7:].strip())
    elif config.trust_proxy_auth and trusted(peer(), config.trusted_proxies):
        name = request.headers.get(PROXY_USER_HEADER, "").strip()
        if NAME_RE.match(name):
            user = directory.user(name) or User(name, "viewer")
    if user is None and current_user.is_authenticated:
        user = current_user
    request._auth_user = user
    return user


def _state():
    from flask import current_app

    return current_app.extensions["auth"]


def install(server: Flask, config: AuthConfig, data_dir: str) -> None:
    """Sessions, /login and /logout, and the gate in front of everything else. Only when auth is
    required (see the module's docstring)."""
    users = UsersFile(config.users_file)
    server.extensions["auth"] = (users, config)
    server.secret_key = secret_key(data_dir)
    server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    manager = LoginManager(server)
    manager.user_loader(lambda name: users.current().user(name))

    @server.before_request
    def gate():
        path = request.path
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or who() is not None:
            return None
        if path.startswith("/api/") or path.startswith("/_dash-"):
            return jsonify(error="sign in, or send Authorization: Bearer TOKEN"), 401, {"WWW-Authenticate": "Bearer"}
        return redirect(f"/login?next={path}")

    @server.route("/login", methods=["GET", "POST"])
    def login():
        wanted = request.values.get("next", "/")
        wanted = wanted if same_site(wanted) else "/"
        if request.method == "GET":
            return login_page(wanted)
        user = users.current().check_password(
            request.form.get("name", "")[:64], request.form.get("password", "")[:1024]
        )
        if user is None:
            return login_page(wanted, "Wrong name or password"), 401
        session.clear()
        login_user(user)
        return redirect(wanted)

    @server.route("/logout")
    def logout():
        logout_user()
        return redirect("/login")


def login_page(wanted: str, error: str = "") -> str:
    alert = f'<div class="alert alert-danger py-2 small">{escape(error)}</div>' if error else ""
    return f"""<!doctype html>
<html lang="en" data-bs-theme="dark"><head><meta charset="utf-8"><title>Sign in · Pair Monitor</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/assets/00-bootswatch-darkly-5.3.8.min.css"></head>
<body><main class="container" style="max-width: 24rem; margin-top: 12vh">
<h1 class="h4 mb-3">Pair Monitor</h1>{alert}
<form method="post" action="/login">
<input type="hidden" name="next" value="{escape(wanted)}">
<div class="mb-2"><label class="form-label" for="name">Name</label>
<input class="form-control" id="name" name="name" autocomplete="username" required autofocus></div>
<div class="mb-3"><label class="form-label" for="password">Password</label>
<input class="form-control" id="password" name="password" type="password"
 autocomplete="current-password" required></div>
<button class="btn btn-primary w-100" type="submit">Sign in</button></form></main></body></html>"""


def secret_key(data_dir: str) -> bytes:
    """The key that signs session cookies: SECRET_KEY (the same on every host behind one address),
    else one made once and kept in the data dir (readable by this user only)."""
    given = os.environ.get("SECRET_KEY", "")
    if given:
        return given.encode()
    path = Path(data_dir) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        key = secrets.token_bytes(32)
        f.write(key)
    return key


def add_user(path: str, spec: str, stdin=None) -> str:
    """--add-user NAME:ROLE: set a user's password (asked twice on a terminal, else one line of
    stdin) and role in the users file, replacing the user's line if there is one."""
    name, _, role = spec.partition(":")
    role = role or "viewer"
    if not NAME_RE.match(name) or role not in ROLES:
        raise AuthConfigError(f"--add-user NAME:viewer|editor (letters, digits, _ . @ -), got {spec!r}")
    stdin = stdin or sys.stdin
    if stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise AuthConfigError("the two passwords differ; nothing changed")
    else:
        password = stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise AuthConfigError("a password has at least 8 characters; nothing changed")
    _rewrite(
        path,
        lambda w: not (w[:1] == ["user"] and w[1:2] == [name]),
        f"user {name} {role} {generate_password_hash(password)}",
    )
    return f"{name} ({role}) saved in {path}"


def add_token(path: str, name: str) -> str:
    """--add-token NAME: a new API token for a user of the file; returns it (shown once: only its
    digest is kept)."""
    if Directory.load(path).user(name) is None:
        raise AuthConfigError(f"{name!r} is not a user of {path}; add the user first")
    token = secrets.token_urlsafe(32)
    _rewrite(path, lambda w: True, f"token {name} {hashlib.sha256(token.encode()).hexdigest()}")
    return token


def _rewrite(path: str, keep, line: str) -> None:
    """Write the users file again: the lines `keep(words)` keeps, and `line`, readable by this user only."""
    file = Path(path)
    lines = file.read_text(encoding="utf-8").splitlines() if file.exists() else []
    lines = [kept for kept in lines if keep(kept.split())] + [line]
    temp = file.with_name(file.name + ".new")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temp, file)


def same_site(url: str) -> bool:
    """A `next` target on this site only (no open redirect; browsers read a backslash as a slash)."""
    return url.startswith("/") and not url.startswith("//") and "\\" not in url and not urlsplit(url).netloc
