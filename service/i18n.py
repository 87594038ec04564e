"""The pages in Chinese and English: gettext catalogs (Babel), and which one a request gets.

Interface strings in the templates are `{{ _("...") }}`; their translations live in
`service/locale/<locale>/LC_MESSAGES/messages.po`, compiled in memory with Babel when first
used (no build step; `pybabel extract -F babel.cfg` finds the strings). A request's locale
is, in order: `?lang=` (the switch on every page, remembered in the `arena_lang` cookie),
that cookie, the browser's `Accept-Language`, then `ARENA_LOCALE` (default `en`).
"""

from __future__ import annotations

import functools
import gettext
import io
from pathlib import Path

from babel import Locale, negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie

LOCALES = ("en", "zh_CN")
LOCALE_DIR = Path(__file__).parent / "locale"
COOKIE = "arena_lang"
#: The `lang` attribute of <html> per locale (BCP 47).
HTML_LANG = {"en": "en", "zh_CN": "zh-CN"}


@functools.lru_cache(maxsize=len(LOCALES))
def translations(locale: str) -> gettext.NullTranslations:
    """The compiled catalog of `locale` (English is the source language: no catalog)."""
    path = LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"
    if locale == "en" or not path.is_file():
        return gettext.NullTranslations()
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=locale)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def known_locale(value: str | None) -> str:
    """`value` as one of `LOCALES` (`zh-CN`, `zh` → zh_CN), English when it is none of them."""
    return _known(value) or "en"


def _known(value: str | None) -> str | None:
    if not value:
        return None
    value = value.replace("-", "_")
    for locale in LOCALES:
        if value.lower() == locale.lower() or value.lower().split("_")[0] == locale.lower().split("_")[0]:
            return locale
    return None


def choose_locale(connection: ASGIConnection, default: str = "en") -> tuple[str, tuple[Cookie, ...]]:
    """The request's locale (see the module doc) and the cookie to set when `?lang=` chose it."""
    asked = _known(connection.query_params.get("lang"))
    if asked:
        return asked, (Cookie(key=COOKIE, value=asked, max_age=365 * 86400, path="/", samesite="lax", httponly=True),)
    if remembered := _known(connection.cookies.get(COOKIE)):
        return remembered, ()
    header = connection.headers.get("accept-language", "")
    preferred = [part.split(";")[0].strip().replace("-", "_") for part in header.split(",") if part.strip()]
    if preferred:
        found = negotiate_locale(preferred, list(LOCALES), sep="_") or _known(next(iter(preferred), None))
        if found:
            return found, ()
    return known_locale(default), ()


def page_context(locale: str) -> dict[str, object]:
    """What every page template needs to speak `locale`."""
    t = translations(locale)
    other = "en" if locale != "en" else "zh_CN"
    return {"_": t.gettext, "ngettext": t.ngettext, "lang": HTML_LANG[locale], "locale": locale,
            "other_locale": other, "other_locale_name": Locale.parse(other).get_display_name(other)}


def for_request(connection: ASGIConnection) -> tuple[dict[str, object], tuple[Cookie, ...]]:
    """`page_context` in the request's locale (the server's `ARENA_LOCALE` as the default),
    and the cookie that remembers a `?lang=` choice: what every page handler needs."""
    locale, cookies = choose_locale(connection, connection.app.state.settings.locale)
    return page_context(locale), cookies
