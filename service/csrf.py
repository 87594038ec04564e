"""CSRF protection for the HTML forms (`/arena`, `/arena/vote`, `/login`): a double-submit
token. A page with a form sets the random `arena_csrf` cookie (SameSite=Strict, HttpOnly)
once and writes the same value into a hidden `csrf_token` field; a form post is accepted
only when the two match. Another site can make a browser post a form here, but it can
neither read the cookie nor set it, so it cannot write the matching field. The JSON API
needs none of this: its writes carry a bearer token or a reviewer header, which a
cross-site form cannot send, and CORS allows no other origin.
"""

from __future__ import annotations

import hmac
import re
import secrets

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie

from service.config import Settings
from service.errors import Forbidden

CSRF_COOKIE = "arena_csrf"
CSRF_FIELD = "csrf_token"
_FORMAT = re.compile(r"[A-Za-z0-9_-]{32,64}")


def form_token(connection: ASGIConnection, settings: Settings) -> tuple[str, tuple[Cookie, ...]]:
    """The token to write into this page's forms, and the cookie to set when the browser
    has none yet."""
    from service.reviewers import came_over_https

    current = connection.cookies.get(CSRF_COOKIE, "")
    if _FORMAT.fullmatch(current):
        return current, ()
    token = secrets.token_urlsafe(32)
    cookie = Cookie(key=CSRF_COOKIE, value=token, httponly=True, samesite="strict", path="/",
                    secure=came_over_https(connection, settings))
    return token, (cookie,)


def check_form(connection: ASGIConnection, data: dict[str, str]) -> None:
    """`Forbidden` unless the form's `csrf_token` equals the browser's `arena_csrf` cookie."""
    cookie, field = connection.cookies.get(CSRF_COOKIE, ""), str(data.get(CSRF_FIELD, ""))
    if not (_FORMAT.fullmatch(cookie) and hmac.compare_digest(cookie.encode(), field.encode())):  # str: ASCII only
        raise Forbidden("this form did not come from this site's page (its CSRF token is missing or does not match); "
                        "reload the page and submit it again")
