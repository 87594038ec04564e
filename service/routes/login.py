"""`/login`: a browser opens a read session for the viewer pages (runs, evals, reports).

The form takes the admin token or a viewer token; a right one sets the signed, HttpOnly
`arena_read` cookie (`auth.read_session`: it never holds the token, and it stops working
when that token is removed from the settings) and redirects to the page asked for. The
cookie authorises reads only: every write still needs the admin bearer header, so a
forged cross-site form cannot write with it.
"""

from __future__ import annotations

from html import escape
from typing import Annotated

from litestar import Request, get, post
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Response

from service.csrf import check_form, form_token
from service.errors import Forbidden
from service.i18n import for_request
from service.reviewers import came_over_https
from service.routes.auth import READ_COOKIE, READ_SESSION_S, is_read_token, read_session

_FORM = """<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{sign_in} · {arena}</title>
<style>body{{font-family:system-ui,"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input{{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.4rem 0}}.err{{color:#b91c1c}}</style></head>
<body><h1>{title}</h1><p>{why}</p>{error}
<form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<input type="hidden" name="csrf_token" value="{csrf}">
<label>{token} <input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button type="submit">{sign_in}</button></form></body></html>"""


def _local(next_path: str | None) -> str:
    """Only a path on this site (no scheme, no `//host`): the redirect cannot leave it."""
    path = next_path or "/runs"
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/runs"


def _form(request: Request, error: str, target: str, status: int = 200) -> Response:
    """The sign-in form in the request's language; `error` is an English message id."""
    token, cookies = form_token(request, request.app.state.settings)
    strings, lang_cookies = for_request(request)
    _ = strings["_"]
    shown = f'<p class="err">{escape(_(error))}</p>' if error else ""
    page = _FORM.format(error=shown, next=escape(target), csrf=escape(token), lang=strings["lang"],
                        sign_in=escape(_("Sign in")), arena=escape(_("Adapter Arena")), title=escape(_("Sign in to read")),
                        why=escape(_("Runs, evals and reports need the admin token or a viewer token.")),
                        token=escape(_("Token")))
    return Response(page, media_type="text/html", status_code=status, cookies=list(cookies) + list(lang_cookies))


@get("/login", include_in_schema=False)
async def login_page(request: Request, next: str | None = None) -> Response:
    return _form(request, "", _local(next))


@post("/login", include_in_schema=False, status_code=303)
async def login(request: Request, data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]) -> Response:
    target = _local(data.get("next"))
    try:
        check_form(request, data)
    except Forbidden as exc:
        return _form(request, exc.message, target, 403)
    token = data.get("token", "")
    if not token or not is_read_token(request, token):
        return _form(request, "That token does not open read access.", target, 401)
    secret = await request.app.state.store.reviewer_secret()
    secure = came_over_https(request, request.app.state.settings)
    cookie = Cookie(key=READ_COOKIE, value=read_session(token, secret), httponly=True, samesite="strict",
                    secure=secure, max_age=READ_SESSION_S, path="/")
    return Redirect(target, status_code=303, cookies=[cookie])
