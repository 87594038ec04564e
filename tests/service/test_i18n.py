"""The pages' language: Accept-Language, the ?lang= switch (remembered), ARENA_LOCALE; every
catalog entry compiles and each template renders in both languages."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from service.i18n import LOCALE_DIR, translations
from tests.redis_fixtures import LiveServer

TEMPLATES = Path(__file__).resolve().parents[2] / "service" / "templates"


def test_every_template_string_has_a_chinese_translation():
    zh = translations("zh_CN")
    strings = set()
    for template in TEMPLATES.glob("*.html"):
        strings |= set(re.findall(r'_\("((?:[^"\\]|\\.)*)"\)', template.read_text()))
    assert len(strings) > 40
    missing = sorted(s for s in strings if zh.gettext(s) == s)
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
