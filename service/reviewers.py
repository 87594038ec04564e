"""Who is voting: invited reviewers (a token) or, in open mode, a cookie-bound anonymous id.

- An admin creates an invite for a reviewer name; the token is shown once and stored only
  as its SHA-256. The reviewer opens `/arena?token=…` (the page keeps it in an HttpOnly
  cookie) or sends `X-Reviewer-Token: …` to the API.
- `ARENA_REVIEWER_MODE=invite`: no valid token, no battle and no vote (401).
  `open` (the default): without a token a reviewer gets an anonymous id `anon-…` in a
  signed cookie (HMAC with a key kept in Redis), so ids cannot be forged to act as someone
  else; clearing cookies gives a new id, which is why `invite` exists.
- Votes carry the reviewer id; the rate limit is per reviewer; an admin can exclude a
  reviewer, which recomputes the pair counts without their votes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import weakref
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie

from service.config import Settings
from service.domain import check_name
from service.errors import InvalidInput, Unauthorized
from service.store import Store

TOKEN_HEADER = "x-reviewer-token"
TOKEN_COOKIE = "arena_token"
ANON_COOKIE = "arena_reviewer"
ANON_PREFIX = "anon-"
_COOKIE_AGE_S = 365 * 86400

_secrets: weakref.WeakKeyDictionary[Store, bytes] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Reviewer:
    """The voter behind a request. `cookies` must be set on the response (a new anonymous
    id, or an invite token given in the URL)."""

    id: str
    invited: bool
    cookies: tuple[Cookie, ...] = ()


def hash_token(token: str) -> str:
    """What the store keeps of an invite token."""
    return hashlib.sha256(token.encode()).hexdigest()


async def create_invite(store: Store, reviewer: str) -> str:
    """A new invite token for `reviewer` (a name: letters, digits, . _ -). Returned once."""
    check_name(reviewer, "reviewer name")
    if reviewer.startswith(ANON_PREFIX):
        raise InvalidInput(f"reviewer name {reviewer!r}: names starting with {ANON_PREFIX!r} are kept for anonymous reviewers")
    token = secrets.token_urlsafe(24)
    await store.create_invite(hash_token(token), reviewer)
    return token


async def identify(connection: ASGIConnection, store: Store, settings: Settings, *, url_token: str | None = None) -> Reviewer:
    """The reviewer of a request: by invite token (query `token` on pages, the
    `X-Reviewer-Token` header or the token cookie), else by the signed anonymous cookie in
    open mode, else a new anonymous id in open mode. Raises `Unauthorized` for an unknown
    token, and for no token in invite mode."""
    token = url_token or connection.headers.get(TOKEN_HEADER) or connection.cookies.get(TOKEN_COOKIE)
    if token:
        name = await store.reviewer_for_token(hash_token(token.strip()))
        if name is None:
            raise Unauthorized("unknown or revoked reviewer token; ask the admin for a new invite link")
        cookies = (_cookie(TOKEN_COOKIE, token.strip()),) if url_token else ()
        return Reviewer(name, True, cookies)
    if settings.reviewer_mode == "invite":
        raise Unauthorized(
            "this arena is invite-only: open your invite link (/arena?token=...) or send the X-Reviewer-Token header"
        )
    secret = await _secret(store)
    anon = _verify(connection.cookies.get(ANON_COOKIE, ""), secret)
    if anon is not None:
        return Reviewer(anon, False)
    anon = f"{ANON_PREFIX}{secrets.token_hex(8)}"
    return Reviewer(anon, False, (_cookie(ANON_COOKIE, _sign(anon, secret)),))


async def _secret(store: Store) -> bytes:
    secret = _secrets.get(store)
    if secret is None:
        secret = _secrets[store] = await store.reviewer_secret()
    return secret


def _sign(reviewer: str, secret: bytes) -> str:
    mac = hmac.new(secret, reviewer.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{reviewer}.{mac}"


def _verify(value: str, secret: bytes) -> str | None:
    reviewer, _, mac = value.rpartition(".")
    if not reviewer.startswith(ANON_PREFIX) or not mac:
        return None
    expected = _sign(reviewer, secret).rpartition(".")[2]
    return reviewer if hmac.compare_digest(mac, expected) else None


def _cookie(key: str, value: str) -> Cookie:
    return Cookie(key=key, value=value, httponly=True, samesite="lax", max_age=_COOKIE_AGE_S, path="/")
