"""Authentication by bearer token, and three roles.

- **admin**: every write needs `Authorization: Bearer $ARENA_ADMIN_TOKEN` (`ADMIN`).
- **viewer**: reads of datasets and their records, runs, candidates, evals with samples,
  reports and jobs need the admin token or one of `ARENA_VIEWER_TOKENS` (`VIEWER`), as a
  bearer header or, for the pages, the signed read session `/login` sets. They name
  candidates beside their outputs, which a reviewer must not see before voting.
  `ARENA_PUBLIC_READS=1` opens them to everyone (a single-user local install).
- **public**: the arena page, the leaderboard, `/api/leaderboard*`, `/api/judges/calibration`, `/api/arena`,
  battles (a reviewer's own), `/health` and `/schema` need nothing.
- Generation endpoints (`/v1/*`, `/api/compare`) need an API key (`API_KEY`): the admin
  token or one of `ARENA_API_KEYS`, as vLLM's `--api-key` does. They answer with a named
  model's output, and a reviewer who could ask for that could unmask a battle.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.errors import ArenaError, Forbidden, Unauthorized
from service.openai_compat import openai_error


def _bearer(connection: ASGIConnection) -> str | None:
    scheme, _, given = connection.headers.get("authorization", "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def _matches(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Reject a request without the admin bearer token: 401, or 403 for a viewer token."""
    given = _bearer(connection)
    if given is not None and _matches(given, connection.app.state.admin_token):
        return
    if given is not None and any([_matches(given, t) for t in connection.app.state.settings.viewer_token_list]):
        raise Forbidden("a viewer token reads only; this action needs the admin token")
    raise Unauthorized("this action needs the admin token: send 'Authorization: Bearer <ARENA_ADMIN_TOKEN>'")


def api_key_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Reject a request without an API key (401): the admin token or one of `ARENA_API_KEYS`.
    Every key is compared in constant time, so timing does not tell which one nearly matched."""
    given = _bearer(connection)
    keys = [connection.app.state.admin_token, *connection.app.state.settings.api_key_list]
    if given is None or not any([_matches(given, key) for key in keys]):
        message = ("generation endpoints need an API key: send 'Authorization: Bearer <key>' "
                   "(the admin token or one of ARENA_API_KEYS)")
        raise Unauthorized(message, error=openai_error(401, message))


#: The cookie of a read session (see `read_session`), and how long one lasts.
READ_COOKIE = "arena_read"
READ_SESSION_S = 12 * 3600


class LoginRequired(ArenaError):
    """A page read without a viewer session: the app answers with a redirect to /login."""

    status = 401


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _read_tokens(connection: ASGIConnection) -> list[str]:
    settings = connection.app.state.settings
    return [t for t in (connection.app.state.admin_token, *settings.viewer_token_list) if t]


def read_session(token: str, secret: bytes, now: float | None = None) -> str:
    """The signed cookie value of a read session opened with `token` (valid for
    `READ_SESSION_S`, and only while that token is still configured)."""
    expires = int((now or time.time()) + READ_SESSION_S)
    body = f"{_fingerprint(token)}.{expires}"
    return f"{body}.{hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32]}"


def _session_valid(value: str, secret: bytes, tokens: list[str]) -> bool:
    fingerprint, _, rest = value.partition(".")
    expires, _, mac = rest.partition(".")
    body = f"{fingerprint}.{expires}"
    good = hmac.compare_digest(mac.encode(), hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32].encode())
    return (good and expires.isdigit() and int(expires) > time.time()
            and any(hmac.compare_digest(fingerprint.encode(), _fingerprint(t).encode()) for t in tokens))


def is_read_token(connection: ASGIConnection, token: str) -> bool:
    """True when `token` is the admin token or a viewer token (compared in constant time)."""
    return any([_matches(token, t) for t in _read_tokens(connection)])


async def may_read(connection: ASGIConnection) -> bool:
    """Whether this request may read viewer resources: public reads, a read token in the
    bearer header, or a valid read session cookie."""
    if connection.app.state.settings.public_reads:
        return True
    given = _bearer(connection)
    if given is not None:
        return is_read_token(connection, given)
    cookie = connection.cookies.get(READ_COOKIE)
    if not cookie:
        return False
    secret = await connection.app.state.store.reviewer_secret()
    return _session_valid(cookie, secret, _read_tokens(connection))


async def is_admin(connection: ASGIConnection) -> bool:
    """Whether this request acts as the admin: the admin bearer token, or a read session
    opened with the admin token (for the admin's page forms, which also check CSRF)."""
    admin = connection.app.state.admin_token
    given = _bearer(connection)
    if given is not None:
        return _matches(given, admin)
    cookie = connection.cookies.get(READ_COOKIE)
    if not cookie or not admin:
        return False
    return _session_valid(cookie, await connection.app.state.store.reviewer_secret(), [admin])


async def viewer_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Reject a read without the viewer role (401)."""
    if not await may_read(connection):
        raise Unauthorized("reading this needs a viewer token: send 'Authorization: Bearer <token>' (the admin "
                           "token or one of ARENA_VIEWER_TOKENS), or set ARENA_PUBLIC_READS=1 on a private install")


async def page_viewer_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Like `viewer_guard`, for pages: without the role the browser is sent to /login."""
    if not await may_read(connection):
        raise LoginRequired("sign in to read this page", next=connection.url.path)


#: The body limit of every route but the bulk ones: a vote, a prompt, a run request.
SMALL_BODY_BYTES = 1024 * 1024


def bulk_body_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """The body limit of the bulk routes (uploads, imports, inline documents), checked on
    the declared length before a byte is read: `ARENA_MAX_UPLOAD_BYTES` (+1 MiB for the
    multipart framing). A body without a length is refused rather than read unbounded."""
    from service.errors import InvalidInput, TooLarge

    limit = connection.app.state.settings.max_upload_bytes + 1024 * 1024
    length = connection.headers.get("content-length")
    if length is None or not length.strip().isdigit():
        raise InvalidInput("send the body with a Content-Length header (uploads are not read unbounded)")
    if int(length) > limit:
        raise TooLarge(f"the body is {int(length)} bytes, over this server's limit of {limit} bytes (ARENA_MAX_UPLOAD_BYTES)")


def json_body_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """A JSON route takes a JSON body: `Content-Type: application/json` (or `+json`, or none
    said). Litestar decodes the body whatever it is labelled; a `text/plain` or form body is
    a client mistake, or a page on another site sending a "simple" request, and gets a 415
    as vLLM's server refuses it."""
    from service.errors import UnsupportedMediaType

    said = connection.headers.get("content-type", "").split(";")[0].strip().lower()
    if said and said != "application/json" and not said.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type {said!r}: this route takes a JSON body; send "
                                   "'Content-Type: application/json'")


ADMIN = {"guards": [admin_guard], "security": [{"admin": []}]}
#: Admin routes that take whole files (see `bulk_body_guard`); every other route takes at most SMALL_BODY_BYTES.
ADMIN_BULK = {"guards": [admin_guard, bulk_body_guard], "security": [{"admin": []}], "request_max_body_size": None}
VIEWER = {"guards": [viewer_guard], "security": [{"viewer": []}]}
PAGE_VIEWER = {"guards": [page_viewer_guard]}
API_KEY = {"guards": [api_key_guard], "security": [{"api_key": []}]}
#: Generation routes that take a JSON body (`/v1/chat/completions`, `/v1/completions`).
API_KEY_JSON = {"guards": [api_key_guard, json_body_guard], "security": [{"api_key": []}]}
