"""Accounts: users with bcrypt-hashed passwords, API tokens stored as SHA-256, and the shared signing secret.

Users are disabled, never deleted, so the names on labels and leases always resolve. An API token is 32 random
bytes: a fast hash is enough to store it (a password needs bcrypt because people choose guessable ones).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

import bcrypt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.errors import DBError, NotFoundError
from db.schema import USER_ROLES, ApiToken, ServerSecret, User, utcnow

TOKEN_PREFIX = "slpt_"
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; a longer password is refused rather than silently cut


_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt())


class DuplicateUserError(DBError):
    """A user of that name exists already."""


def check_username(username: str) -> str:
    if not USERNAME.match(username or ""):
        raise DBError(
            f"invalid user name {username!r}: 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return username


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise DBError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise DBError(f"a password may have at most {MAX_PASSWORD_BYTES} bytes")
    return password


def hash_password(password: str) -> str:
    return bcrypt.hashpw(check_password(password).encode(), bcrypt.gensalt()).decode()


def create_user(session: Session, username: str, role: str, password: str | None = None) -> User:
    """Add a user (``password`` None: a token-only account); :class:`DuplicateUserError` if the name is taken."""
    if role not in USER_ROLES:
        raise DBError(f"unknown role {role!r}: use one of {USER_ROLES}")
    check_username(username)
    now = utcnow()
    user = User(
        username=username, role=role, password_hash=hash_password(password) if password is not None else None,
        disabled=False, created_at=now, updated_at=now,
    )
    try:
        with session.begin_nested():  # a taken name fails alone, not the caller's whole transaction
            session.add(user)
            session.flush()
    except IntegrityError:
        raise DuplicateUserError(f"a user named {username!r} exists already") from None
    return user


def get_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def require_user(session: Session, username: str) -> User:
    user = get_user(session, username)
    if user is None:
        raise NotFoundError(f"unknown user {username!r}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The enabled user with that name and password, else None (the same answer for every kind of mismatch)."""
    user = get_user(session, username)
    if user is None or user.disabled or user.password_hash is None:
        bcrypt.checkpw(b"timing", _DUMMY_HASH)  # as slow as a real check: no probing for user names by timing
        return None
    if len(password.encode()) > MAX_PASSWORD_BYTES or not bcrypt.checkpw(password.encode(), user.password_hash.encode()):
        return None
    return user


def update_user(
    session: Session, username: str, *, role: str | None = None, disabled: bool | None = None,
    password: str | None = None,
) -> User:
    user = require_user(session, username)
    if role is not None:
        if role not in USER_ROLES:
            raise DBError(f"unknown role {role!r}: use one of {USER_ROLES}")
        user.role = role
    if disabled is not None:
        user.disabled = disabled
    if password is not None:
        user.password_hash = hash_password(password)
    user.updated_at = utcnow()
    session.flush()
    return user


def disabled_usernames(session: Session) -> set[str]:
    return set(session.scalars(select(User.username).where(User.disabled.is_(True))))


def user_roles(session: Session) -> dict[str, str]:
    """Every user's current role, by name."""
    return {username: role for username, role in session.execute(select(User.username, User.role))}


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_api_token(
    session: Session, username: str, name: str = "api", expires_at: datetime | None = None, token: str | None = None
) -> tuple[ApiToken, str]:
    """A new API token of ``username``: (its row, the token itself, which is stored only hashed).

    ``token`` lets an operator choose it (``SLPT_ADMIN_TOKEN``); it must be long enough to be unguessable.
    """
    user = require_user(session, username)
    if token is None:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    elif len(token) < 24:
        raise DBError("an API token needs at least 24 characters")
    row = ApiToken(user_id=user.id, name=name, token_hash=token_digest(token), created_at=utcnow(), expires_at=expires_at)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise DBError("that API token exists already") from None
    return row, token


#: ``last_used_at`` is kept to the minute: a request with an API token then writes at most once a minute per token
#: (each write is a database write transaction, which on SQLite every Next Sample claim would wait behind).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def live_api_token(session: Session, token: str, now: datetime | None = None) -> tuple[User, ApiToken] | None:
    """(enabled owner, token row) of a live API token, else None. Reads only (see :func:`note_api_token_use`)."""
    now = now or utcnow()
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return user, row


def api_token_use_due(row: ApiToken, now: datetime | None = None) -> bool:
    """Whether ``row.last_used_at`` is older than :data:`LAST_USED_RESOLUTION` (or unset)."""
    return row.last_used_at is None or (now or utcnow()) - row.last_used_at >= LAST_USED_RESOLUTION


def note_api_token_use(session: Session, token_id: int, now: datetime | None = None) -> None:
    """Set a token's ``last_used_at`` (in the caller's write transaction)."""
    row = session.get(ApiToken, token_id)
    if row is not None:
        row.last_used_at = now or utcnow()


def api_tokens_of(session: Session, username: str) -> list[ApiToken]:
    user = require_user(session, username)
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def revoke_api_token(session: Session, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"unknown API token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


def username_of_token(session: Session, row: ApiToken) -> str:
    return session.scalar(select(User.username).where(User.id == row.user_id)) or ""


def server_secret(session: Session, name: str) -> str:
    """The named secret shared by every server on this database, made on first use (race-safe: one insert wins)."""
    existing = session.get(ServerSecret, name)
    if existing is not None:
        return existing.value
    try:
        with session.begin_nested():
            session.add(ServerSecret(name=name, value=secrets.token_urlsafe(48), created_at=utcnow()))
            session.flush()
    except IntegrityError:
        pass  # another process made it first
    session.expire_all()
    return session.get(ServerSecret, name).value

