"""CSRF protection for the HTML forms (`/arena`, `/arena/vote`, `/login`): a double-submit
token. A page with a form sets the random `arena_csrf` cookie (SameSite=Strict, HttpOnly)
once and writes the same value into a hidden `csrf_token` field; a form post is accepted
only when the two match. Another site can make a browser post a form here, but it can
neither read the cookie nor set it, so it cannot write the matching field.

The JSON API's reviewer writes (deal a battle, vote, correct) may be identified by the
reviewer's cookie, and a browser sends a "simple" cross-origin POST (a `text/plain` body,
no preflight) with the cookies of the same site: another port on the host, or a sibling
subdomain, could deal battles or vote as the reviewer. `check_same_origin` refuses such a
request by what the browser says of its origin: `Sec-Fetch-Site` (every current browser;
the page's own `fetch` is "same-origin"), else an `Origin` naming another host. Requests
with the `X-Reviewer-Token` header (no page can send it to another origin: CORS allows
none) and non-browser clients, which send neither header, are not affected.
"""

from __future__ import annotations

import hmac
import re
import secrets
from urllib.parse import urlsplit

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


#: What `Sec-Fetch-Site` says of a request a reviewer's own page (or the address bar) made.
_OWN_SITE = ("same-origin", "none")


def check_same_origin(connection: ASGIConnection) -> None:
    """`Forbidden` for a reviewer write a browser sent from another origin (see above)."""
    from service.reviewers import TOKEN_HEADER

    if connection.headers.get(TOKEN_HEADER):
        return
    fetched_from = connection.headers.get("sec-fetch-site", "").strip().lower()
    origin = connection.headers.get("origin", "").strip()
    if origin == "null":  # a sandboxed frame, a data: URL
        foreign = True
    elif fetched_from:
        foreign = fetched_from not in _OWN_SITE
    else:  # an older browser: its Origin against the host it asked for
        foreign = bool(origin) and urlsplit(origin).netloc.lower() != connection.headers.get("host", "").lower()
    if foreign:
        raise Forbidden(f"this request came from another site ({origin or fetched_from}); a reviewer's vote, battle or "
                        "correction is accepted only from this arena's own page, or with the X-Reviewer-Token header")


def check_form(connection: ASGIConnection, data: dict[str, str]) -> None:
    """`Forbidden` unless the form's `csrf_token` equals the browser's `arena_csrf` cookie."""
    cookie, field = connection.cookies.get(CSRF_COOKIE, ""), str(data.get(CSRF_FIELD, ""))
    if not (_FORMAT.fullmatch(cookie) and hmac.compare_digest(cookie.encode(), field.encode())):  # str: ASCII only
        raise Forbidden("this form did not come from this site's page (its CSRF token is missing or does not match); "
                        "reload the page and submit it again")
