"""Who is calling: API tokens (Bearer), their owners, and what each may see.

Tokens are random (256 bits), so a SHA-256 of the token is a safe thing to store and to look
up by. Verified tokens are remembered per process for CACHE_SECONDS, so a revocation takes
effect within that time without a database read on every request. Unknown tokens are
remembered apart, in a smaller cache of their own: a flood of made-up tokens can only push
out other made-up tokens, never a valid one.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Select, delete, select

from ..errors import Forbidden, Unauthorized
from ..extensions import db
from ..models import ApiToken, DashboardSession, ServedModel, utcnow
from .validation import safe_name

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "inf_"
CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Principal:
    """The caller: an admin sees every model; a user sees only models with their user_id."""

    name: str
    user_id: str | None
    is_admin: bool
    token_id: int | None = None

    def can_see(self, model: ServedModel) -> bool:
        return sees_everything(self) or model.user_id == self.user_id

    def require_owner(self, user_id: str) -> None:
        if not self.is_admin and user_id != self.user_id:
            raise Forbidden(f"this token may only manage models of user_id {self.user_id!r}")


ANONYMOUS_ADMIN = Principal(name="auth disabled", user_id=None, is_admin=True)


def sees_everything(caller: Principal | None) -> bool:
    """The owner-scoping rule: admins and the service itself (no caller) see every model, every
    model's events and the Kafka ingestion log; a user sees only models with their user_id."""
    return caller is None or caller.is_admin


def visible(query: Select, caller: Principal | None) -> Select:
    """A query over models (or joined to them) limited to the models the caller may see."""
    return query if sees_everything(caller) else query.where(ServedModel.user_id == caller.user_id)


class _RecentCache:
    """Digest -> (checked at, principal), at most `size` entries, the least recently checked dropped first."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()

    def get(self, digest: str, now: float) -> tuple[bool, Principal | None]:
        hit = self._entries.get(digest)
        if hit is None or now - hit[0] >= CACHE_SECONDS:
            return False, None
        self._entries.move_to_end(digest)
        return True, hit[1]

    def put(self, digest: str, now: float, principal: Principal | None) -> None:
        self._entries[digest] = (now, principal)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def pop(self, digest: str) -> None:
        self._entries.pop(digest, None)

    def clear(self) -> None:
        self._entries.clear()

    def __contains__(self, digest: str) -> bool:
        return digest in self._entries


VALID_CACHE_SIZE = 10_000
UNKNOWN_CACHE_SIZE = 2_000
_valid = _RecentCache(VALID_CACHE_SIZE)
_unknown = _RecentCache(UNKNOWN_CACHE_SIZE)
_cache_lock = threading.Lock()
clock = time.monotonic  # the cache's notion of now (tests hold it still)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(name: str, user_id: str | None, is_admin: bool) -> tuple[ApiToken, str]:
    """A new token; the plain text is returned once and never stored."""
    if not is_admin:
        user_id = safe_name("user_id", user_id)
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name[:128], user_id=user_id, is_admin=is_admin, token_hash=hash_token(plain), prefix=plain[:12]
    )
    db.session.add(token)
    db.session.commit()
    logger.info("created %s token %s (%s)", "admin" if is_admin else f"user {user_id}", token.prefix, name)
    return token, plain


def revoke_token(token_id: int) -> ApiToken | None:
    token = db.session.get(ApiToken, token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = utcnow()
        db.session.commit()
        logger.info("revoked token %s", token.prefix)
    return token


def ensure_admin_token() -> str | None:
    """On first start with no usable token: make an admin token and return it (to print once)."""
    exists = db.session.scalar(select(ApiToken.id).where(ApiToken.revoked_at.is_(None)).limit(1))
    if exists is not None:
        return None
    _token, plain = create_token("first admin (generated at first start)", None, True)
    return plain


def authenticate(header: str | None) -> Principal:
    """The principal for an Authorization header; Unauthorized if missing, malformed or unknown."""
    if not header:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    principal = principal_for_token(token.strip())
    if principal is None:
        raise Unauthorized("unknown or revoked token")
    return principal


def principal_for_token(token: str) -> Principal | None:
    return principal_for_hash(hash_token(token))


def principal_for_hash(digest: str) -> Principal | None:
    """The principal of an active token by its hash (what a dashboard session keeps)."""
    now = clock()
    with _cache_lock:
        for cache in (_valid, _unknown):
            found, principal = cache.get(digest, now)
            if found:
                return principal
    row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    principal = None
    if row is not None and row.revoked_at is None:
        principal = Principal(name=row.name, user_id=row.user_id, is_admin=row.is_admin, token_id=row.id)
    with _cache_lock:
        if principal is not None:
            _unknown.pop(digest)
            _valid.put(digest, now, principal)
        else:
            _valid.pop(digest)
            _unknown.put(digest, now, None)
    return principal


def forget_cached_tokens() -> None:
    with _cache_lock:
        _valid.clear()
        _unknown.clear()


def open_session(token_hash: str, lifetime_seconds: int) -> str:
    """A new dashboard session for a verified token; its id goes in the (signed) cookie."""
    now = utcnow()
    db.session.execute(delete(DashboardSession).where(DashboardSession.expires_at < now))  # sweep the ended
    session_id = secrets.token_urlsafe(32)
    db.session.add(
        DashboardSession(
            id_hash=hash_token(session_id),
            token_hash=token_hash,
            created_at=now,
            expires_at=now + timedelta(seconds=lifetime_seconds),
        )
    )
    db.session.commit()
    return session_id


def session_principal(session_id: str) -> Principal | None:
    """The principal of a live dashboard session: not signed out, not expired, its token not revoked."""
    row = db.session.get(DashboardSession, hash_token(session_id))
    if row is None or row.expires_at <= utcnow():
        return None
    return principal_for_hash(row.token_hash)


def end_session(session_id: str) -> None:
    """Sign out on the server: the session's cookie, wherever a copy of it is, no longer works."""
    db.session.execute(delete(DashboardSession).where(DashboardSession.id_hash == hash_token(session_id)))
    db.session.commit()
