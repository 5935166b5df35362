"""Who is calling: API tokens (Bearer), their owners, and what each may see.

Tokens are random (256 bits), so a SHA-256 of the token is a safe thing to store and to look
up by. Verified tokens are remembered per process for CACHE_SECONDS, so a revocation takes
effect within that time without a database read on every request.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import Select, select

from ..errors import Forbidden, Unauthorized
from ..extensions import db
from ..models import ApiToken, ServedModel, utcnow
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


_cache: dict[str, tuple[float, Principal | None]] = {}
_cache_lock = threading.Lock()


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
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(digest)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
    row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    principal = None
    if row is not None and row.revoked_at is None:
        principal = Principal(name=row.name, user_id=row.user_id, is_admin=row.is_admin, token_id=row.id)
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[digest] = (now, principal)
    return principal


def forget_cached_tokens() -> None:
    with _cache_lock:
        _cache.clear()
