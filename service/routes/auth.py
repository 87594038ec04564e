"""Admin authentication: writes need `Authorization: Bearer $ARENA_ADMIN_TOKEN`."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.errors import Unauthorized


def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Reject a request without the admin bearer token (401)."""
    header = connection.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    expected = connection.app.state.admin_token
    if scheme.lower() != "bearer" or not given or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized("this action needs the admin token: send 'Authorization: Bearer <ARENA_ADMIN_TOKEN>'")


ADMIN = {"guards": [admin_guard], "security": [{"admin": []}]}
