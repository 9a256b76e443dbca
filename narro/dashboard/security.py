"""Who may use the dashboard: bind rules, sessions, CSRF tokens and the Host check.

- A loopback bind needs nothing; any other bind refuses to start unless the `dashboard.token`
  setting (NARRO_DASHBOARD_TOKEN) is set, and then every page asks for that token once per
  browser session.
- Sessions are a signed cookie (HMAC over a random id and the signed-in flag), HttpOnly and
  SameSite=Strict; the signing key is random per process, so a restart signs everyone out.
- Every state-changing request must carry the session's CSRF token (a form field or the
  X-CSRF-Token header), derived from the session id with the same key.
- On a loopback bind without a token, requests must name a loopback Host, so a web page on
  another site cannot reach the dashboard by pointing a DNS name at 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from narro.errors import DashboardError
from narro.settings import env_name

TOKEN_ENV = env_name("dashboard", "token")
COOKIE = "narro_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (brackets around IPv6 allowed)."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if not is_loopback(host) and token is None:
        raise DashboardError(
            f"refusing to listen on {host}: it is reachable from other machines. Set {TOKEN_ENV} to a long "
            f"random secret (e.g. `export {TOKEN_ENV}=$(openssl rand -hex 16)`), or bind to 127.0.0.1"
        )


@dataclass(frozen=True)
class Session:
    sid: str
    signed_in: bool


class Guard:
    """Signs and checks session cookies and CSRF tokens for one running dashboard."""

    def __init__(self, token: str | None, loopback_only: bool):
        self.token = token
        self.loopback_only = loopback_only
        self._key = secrets.token_bytes(32)

    @property
    def needs_sign_in(self) -> bool:
        return self.token is not None

    def _sign(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def new_session(self, signed_in: bool) -> tuple[Session, str]:
        """A fresh session and its cookie value."""
        session = Session(secrets.token_urlsafe(18), signed_in)
        return session, self.cookie_value(session)

    def cookie_value(self, session: Session) -> str:
        body = f"{session.sid}.{int(session.signed_in)}"
        return f"{body}.{self._sign(body)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie names, or None when absent or forged."""
        if not cookie or cookie.count(".") != 2:
            return None
        sid, flag, signature = cookie.split(".")
        if flag not in ("0", "1") or not hmac.compare_digest(signature, self._sign(f"{sid}.{flag}")):
            return None
        return Session(sid, flag == "1")

    def allowed(self, session: Session | None) -> bool:
        """May this session see pages? Without a token every session may."""
        return session is not None and (session.signed_in or not self.needs_sign_in)

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf:{session.sid}")

    def csrf_ok(self, session: Session | None, presented: str | None) -> bool:
        return session is not None and bool(presented) and hmac.compare_digest(presented or "", self.csrf_token(session))

    def token_ok(self, presented: str) -> bool:
        return self.token is not None and hmac.compare_digest(presented.encode(), self.token.encode())

    def host_ok(self, host_header: str | None) -> bool:
        """With no token, only loopback Host names are served (DNS-rebinding defence)."""
        if not self.loopback_only:
            return True
        if not host_header:
            return False
        host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        if host_header.startswith("[") and "]" in host_header:
            host = host_header[: host_header.index("]") + 1]
        return is_loopback(host)
