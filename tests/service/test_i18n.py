"""The pages' language: Accept-Language, the ?lang= switch (remembered), ARENA_LOCALE; every
catalog entry compiles and each template renders in both languages."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from service.i18n import LOCALE_DIR, translations
from tests.redis_fixtures import LiveServer

ROOT = Path(__file__).resolve().parents[2]


def test_every_interface_string_has_a_chinese_translation():
    """What `pybabel extract -F babel.cfg` finds (the templates, and `_()`/`N_()` in the
    service's Python: the demo's output) is all in the zh_CN catalog."""
    from babel.messages.extract import extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    with (ROOT / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    found = {(message, Path(path).suffix) for path, _, message, _, _ in extract_from_dir(ROOT, method_map, options_map)}
    assert sum(suffix == ".html" for _, suffix in found) > 40 and sum(suffix == ".py" for _, suffix in found) > 40
    zh = translations("zh_CN")
    missing = sorted(m for m, _ in found if isinstance(m, str) and zh.gettext(m) == m)
    assert not missing, f"untranslated in {LOCALE_DIR}: {missing}"


@pytest.fixture
def server(settings):
    srv = LiveServer(settings).start()
    yield srv
    srv.stop()


def test_the_language_follows_the_browser_the_switch_and_the_setting(server, settings):
    browser = server.client()
    zh = browser.get("/leaderboard", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert '<html lang="zh-CN">' in zh.text and "排行榜" in zh.text and "人工投票" in zh.text
    en = browser.get("/leaderboard", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in en.text and "Human votes" in en.text
    switched = browser.get("/leaderboard?lang=zh_CN", headers={"Accept-Language": "en"})
    assert "排行榜" in switched.text and browser.cookies["arena_lang"] == "zh_CN"
    assert "排行榜" in browser.get("/leaderboard", headers={"Accept-Language": "en"}).text  # remembered
    assert "排行榜" in browser.get("/leaderboard?lang=klingon").text  # an unknown language changes nothing
    # A server for Chinese reviewers: ARENA_LOCALE when the browser names no language we have.
    other = LiveServer(msgspec.structs.replace(settings, locale="zh_CN")).start()
    try:
        assert "排行榜" in other.client().get("/leaderboard", headers={"Accept-Language": "fr"}).text
    finally:
        other.stop()


def test_chinese_names_for_datasets_over_http(server):
    admin = server.client(admin=True)
    record = '{"instruction": "你好", "output": "您好"}\n'.encode()
    r = admin.post("/api/datasets", files={"file": ("客服.jsonl", record)}, data={"name": "客服数据"})
    assert r.status_code == 201, r.text
    assert admin.get("/api/datasets/客服数据").json()["versions"][0]["name"] == "客服数据"
    assert admin.get("/api/datasets/客服数据/records").json()["records"][0]["messages"][1]["content"] == "您好"
    bad = admin.post("/api/datasets", files={"file": ("x.jsonl", record)}, data={"name": "客服/../数据"})
    assert bad.status_code == 422 and "letters or digits (any script)" in bad.json()["detail"]


def test_the_sign_in_form_speaks_chinese(server):
    browser = server.client()
    page = browser.get("/login?next=/runs", headers={"Accept-Language": "zh-CN"})
    assert '<html lang="zh-CN">' in page.text and "登录以查看" in page.text and "令牌" in page.text
    token = browser.cookies["arena_csrf"]
    wrong = browser.post("/login", data={"token": "nope", "next": "/runs", "csrf_token": token},
                         headers={"Accept-Language": "zh-CN"})
    assert wrong.status_code == 401 and "这个令牌没有查看权限。" in wrong.text
    english = server.client().get("/login", headers={"Accept-Language": "en"})
    assert "Sign in to read" in english.text and '<html lang="en">' in english.text
