"""Login abuse: ``POST /auth/token`` rate-limited per user and per address, and locked after repeated failures.

Fixed-window limiters from ``limits`` whose counters live in the database (:class:`db.login_limits.SQLLimitStorage`),
so the limits hold across replicas. A refused attempt costs two or three indexed reads and no bcrypt, so a flood of
guesses from one address does not take the server's CPU from everyone else (docs/design.md, "Login abuse"):

- attempts: at most ``login_rate_address`` per address and ``login_rate_user`` per user name (429 past either);
- failures: ``login_lockout_failures`` wrong passwords for one user name, or ``login_lockout_failures_address`` from
  one address, within ``login_lockout_minutes`` lock that name or address for ``login_lockout_minutes`` (429 with
  ``Retry-After``); a successful login clears its user's failures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy.orm import Session, sessionmaker

from app.settings import AppSettings
from db.audit import audit
from db.engine import write_session
from db.login_limits import SQLLimitStorage
from db.users import authenticate

SCOPES = ("address", "user")


class LoginFailed(Exception):
    """A wrong user name or password (or a disabled user)."""


class LoginRefused(Exception):
    """An attempt refused before the password is checked: ``retry_after`` seconds; ``first`` when it is the first
    refusal of its window or the lockout it reports began with it (worth one audit event, not one per attempt)."""

    def __init__(self, message: str, retry_after: int, reason: str, first: bool):
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason
        self.first = first


@dataclass(frozen=True)
class Lockout:
    scope: str  # "address" or "user"
    who: str
    minutes: float


class LoginGuard:
    def __init__(self, sessions: sessionmaker[Session], settings: AppSettings):
        self.sessions = sessions
        self.storage = SQLLimitStorage(sessions, settings.clock)
        self.limiter = FixedWindowRateLimiter(self.storage)
        self.clock = settings.clock
        self.rates: dict[str, RateLimitItem] = {"address": parse(settings.login_rate_address),
                                                "user": parse(settings.login_rate_user)}
        self.minutes = settings.login_lockout_minutes
        window = max(1, round(settings.login_lockout_minutes * 60))
        # A window "allows" one failure fewer than the lockout count: the failure that exhausts it is the last one.
        self.failures: dict[str, RateLimitItem] = {
            "address": RateLimitItemPerSecond(settings.login_lockout_failures_address - 1, window),
            "user": RateLimitItemPerSecond(settings.login_lockout_failures - 1, window),
        }
        self.lock = RateLimitItemPerSecond(1, window)

    def _retry_after(self, item: RateLimitItem, *keys: str) -> int:
        reset = self.limiter.get_window_stats(item, *keys).reset_time
        return max(1, math.ceil(reset - self.clock().timestamp()))

    def check(self, username: str, address: str) -> None:
        """Raise :class:`LoginRefused` if the address or user name is locked or over its attempt rate; else count the
        attempt."""
        who = {"address": address, "user": username}
        for scope in SCOPES:
            if not self.limiter.test(self.lock, "login-lock", scope, who[scope]):
                retry = self._retry_after(self.lock, "login-lock", scope, who[scope])
                subject = f"user {username!r}" if scope == "user" else f"address {address}"
                raise LoginRefused(f"too many failed logins: {subject} is locked; try again in {retry} s", retry,
                                   f"{scope}_locked", first=False)
        for scope in SCOPES:
            rate = self.rates[scope]
            if not self.limiter.hit(rate, "login-rate", scope, who[scope]):
                retry = self._retry_after(rate, "login-rate", scope, who[scope])
                first = self.storage.get(rate.key_for("login-rate", scope, who[scope])) == rate.amount + 1
                subject = f"user {username!r}" if scope == "user" else f"address {address}"
                raise LoginRefused(f"too many login attempts for {subject} (at most {rate}); try again in {retry} s",
                                   retry, f"{scope}_rate", first=first)

    def failed(self, username: str, address: str) -> list[Lockout]:
        """Count a wrong password; return the lockouts it starts."""
        started = []
        for scope, who in (("address", address), ("user", username)):
            if not self.limiter.hit(self.failures[scope], "login-fail", scope, who):
                if self.limiter.hit(self.lock, "login-lock", scope, who):  # the first hit of the lock's window
                    started.append(Lockout(scope, who, self.minutes))
        return started

    def succeeded(self, username: str) -> None:
        """A correct password: the user's failures start from zero again."""
        self.storage.clear(self.failures["user"].key_for("login-fail", "user", username))

    def attempt(self, username: str, password: str, address: str, **detail: str) -> str:
        """One login, guarded and audited: the user's role, or :class:`LoginRefused` (refused unchecked) or
        :class:`LoginFailed`. ``detail`` goes into the audit events (e.g. ``via="ui"``)."""
        actor = username or "unknown"
        try:
            self.check(username, address)
        except LoginRefused as refusal:
            if refusal.first:
                with write_session(self.sessions) as session:
                    audit(session, actor, "login_throttled", source=address, reason=refusal.reason, **detail)
            raise
        with self.sessions() as session:  # bcrypt outside any write transaction: SQLite's writers never wait for it
            user = authenticate(session, username, password) if username and password else None
            role = user.role if user is not None else None
        if role is None:
            lockouts = self.failed(username, address)
            with write_session(self.sessions) as session:
                audit(session, actor, "login_failed", source=address, **detail)
                for lockout in lockouts:
                    audit(session, actor, "login_locked", source=address, scope=lockout.scope, locked=lockout.who,
                          minutes=lockout.minutes, **detail)
            raise LoginFailed("wrong user name or password, or the user is disabled")
        self.succeeded(username)
        with write_session(self.sessions) as session:
            audit(session, username, "login", source=address, **detail)
        return role
