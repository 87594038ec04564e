"""Who is voting: invited reviewers (a token) or, in open mode, a cookie-bound anonymous id.

- An admin creates an invite for a reviewer name; the token is shown once and stored only
  as its SHA-256. The reviewer opens `/arena?token=…` (the page keeps it in an HttpOnly
  cookie) or sends `X-Reviewer-Token: …` to the API.
- `ARENA_REVIEWER_MODE=invite`: no valid token, no battle and no vote (401).
  `open` (the default): without a token a reviewer gets an anonymous id `anon-…` in a
  signed cookie (HMAC with a key kept in Redis), so ids cannot be forged to act as someone
  else; clearing cookies gives a new id, which is why `invite` exists.
- A battle is dealt to one reviewer id and takes only that id's vote; a vote with no
  identity is refused (401), so dropping cookies gets new battles but no extra votes on
  them beyond the per-address limit (`client_address`).
- Votes carry the reviewer id; the rate limit is per reviewer and per client address; an
  admin can exclude a reviewer (their later votes are refused, the pair counts recomputed
  without their earlier ones) or revoke their invite tokens.
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
USED_INVITE = ("this invite link is unknown, revoked or already used (a link opens one browser session); "
               "ask the admin for a new one")
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


async def identify(connection: ASGIConnection, store: Store, settings: Settings, *, url_token: str | None = None,
                   new: bool = True) -> Reviewer:
    """The reviewer of a request: by invite token (query `token` on pages, the
    `X-Reviewer-Token` header or the token cookie), else by the signed anonymous cookie in
    open mode, else (when `new`) a new anonymous id in open mode. Raises `Unauthorized` for
    an unknown or revoked token, for no token in invite mode, and for no identity at all
    when not `new` (a vote: the battle was dealt to the id its cookie carries)."""
    if url_token:  # an invite link: single-use, exchanged for a session kept in a cookie
        session = secrets.token_urlsafe(24)
        name = await store.exchange_invite(hash_token(url_token.strip()), hash_token(session))
        if name is None:
            raise Unauthorized(USED_INVITE)
        return Reviewer(name, True, (_cookie(TOKEN_COOKIE, session, connection, settings),))
    token = connection.headers.get(TOKEN_HEADER) or connection.cookies.get(TOKEN_COOKIE)
    if token:
        name = await store.reviewer_for_token(hash_token(token.strip()))
        if name is None:
            raise Unauthorized("unknown or revoked reviewer token; ask the admin for a new invite link")
        return Reviewer(name, True)
    if settings.reviewer_mode == "invite":
        raise Unauthorized(
            "this arena is invite-only: open your invite link (/arena?token=...) or send the X-Reviewer-Token header"
        )
    secret = await _secret(store)
    anon = _verify(connection.cookies.get(ANON_COOKIE, ""), secret)
    if anon is not None:
        return Reviewer(anon, False)
    if not new:
        raise Unauthorized(
            "no reviewer identity: a vote needs the cookie set when the battle was dealt "
            "(or an invite token); enable cookies and ask for a new battle"
        )
    anon = f"{ANON_PREFIX}{secrets.token_hex(8)}"
    return Reviewer(anon, False, (_cookie(ANON_COOKIE, _sign(anon, secret), connection, settings),))


async def _secret(store: Store) -> bytes:
    secret = _secrets.get(store)
    if secret is None:
        secret = _secrets[store] = await store.reviewer_secret()
    return secret


def anonymous_cookie(reviewer: str, secret: bytes) -> str:
    """The `arena_reviewer` cookie value that identifies anonymous `reviewer` (signed with
    the store's `reviewer_secret()`): for load generators that deal battles themselves."""
    return _sign(reviewer, secret)


def _sign(reviewer: str, secret: bytes) -> str:
    mac = hmac.new(secret, reviewer.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{reviewer}.{mac}"


def _verify(value: str, secret: bytes) -> str | None:
    reviewer, _, mac = value.rpartition(".")
    if not reviewer.startswith(ANON_PREFIX) or not mac:
        return None
    expected = _sign(reviewer, secret).rpartition(".")[2]
    return reviewer if hmac.compare_digest(mac.encode(), expected.encode()) else None  # str: ASCII only


def client_address(connection: ASGIConnection, settings: Settings) -> str:
    """The client's address, for the per-address vote limit: the socket peer, unless the
    peer is one of `ARENA_TRUSTED_PROXIES` and `ARENA_TRUSTED_PROXY_HEADER` is set; then the
    header's last address that is not a trusted proxy (for `X-Forwarded-For` chains).
    A header from any other peer is ignored: a client could write anything there."""
    peer = connection.client.host if connection.client else "unknown"
    header = settings.trusted_proxy_header
    trusted = settings.trusted_proxy_list
    if not header or peer not in trusted:
        return peer
    hops = [hop.strip() for hop in connection.headers.get(header, "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return peer


def came_over_https(connection: ASGIConnection, settings: Settings) -> bool:
    """True when the client reached us over HTTPS: directly, or through one of
    `ARENA_TRUSTED_PROXIES` that says so in `X-Forwarded-Proto` (from anyone else the
    header is ignored). Cookies are then `Secure`."""
    if connection.url.scheme == "https":
        return True
    peer = connection.client.host if connection.client else ""
    proto = connection.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return peer in settings.trusted_proxy_list and proto == "https"


def _cookie(key: str, value: str, connection: ASGIConnection, settings: Settings) -> Cookie:
    return Cookie(key=key, value=value, httponly=True, samesite="lax", max_age=_COOKIE_AGE_S, path="/",
                  secure=came_over_https(connection, settings))


async def suspicious_reviewers(store: Store, *, min_votes: int = 20) -> list[dict]:
    """`arena.screening.screen_reviewers` over the human board's logged votes: the flagged
    reviewers with their reasons (figure, crowd figure, Holm-corrected p-value), and
    whether each is already excluded. The screening is numpy work: off the event loop."""
    import asyncio

    import msgspec

    from arena.screening import ScreenVote, screen_reviewers

    votes = []
    async for _, vote in store.iter_votes():
        if vote.get("board", "human") != "human" or not vote.get("reviewer"):
            continue
        chars = sum(len(str(t.get("content", ""))) for side in ("conversation_a", "conversation_b")
                    for t in vote.get(side) or [] if isinstance(t, dict) and t.get("role") == "assistant")
        ttv = vote.get("time_to_vote_s")
        votes.append(ScreenVote(reviewer=str(vote["reviewer"]), model_a=str(vote["model_a"]), model_b=str(vote["model_b"]),
                                winner=str(vote["winner"]), answer_chars=chars or None,
                                time_to_vote_s=float(ttv) if isinstance(ttv, (int, float)) else None))
    flagged = await asyncio.to_thread(screen_reviewers, votes, min_votes=min_votes)
    excluded = await store.excluded_reviewers()
    return [{**msgspec.to_builtins(f), "excluded": f.reviewer in excluded} for f in flagged]
