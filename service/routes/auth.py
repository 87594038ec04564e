"""Authentication by bearer token.

- Writes need `Authorization: Bearer $ARENA_ADMIN_TOKEN` (`ADMIN`).
- Generation endpoints (`/v1/*`, `/api/compare`) need an API key (`API_KEY`): the admin
  token or one of `ARENA_API_KEYS`, as vLLM's `--api-key` does. They answer with a named
  model's output, and a reviewer who could ask for that could unmask a battle.
"""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.errors import Unauthorized
from service.openai_compat import openai_error


def _bearer(connection: ASGIConnection) -> str | None:
    scheme, _, given = connection.headers.get("authorization", "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def _matches(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Reject a request without the admin bearer token (401)."""
    given = _bearer(connection)
    if given is None or not _matches(given, connection.app.state.admin_token):
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


ADMIN = {"guards": [admin_guard], "security": [{"admin": []}]}
API_KEY = {"guards": [api_key_guard], "security": [{"api_key": []}]}
