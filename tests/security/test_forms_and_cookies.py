"""Forms and cookies as a hostile site or a network observer would try them: a cross-site
form post without this site's CSRF token is refused and changes nothing; cookies are
Secure when the client came over HTTPS (directly or per a trusted proxy, never per a
client's own header)."""

from __future__ import annotations

import msgspec
import pytest

from tests.redis_fixtures import LiveServer, fresh_board, with_csrf
from tests.scripted_openai import ScriptedOpenAI

ANSWERS = {"alpha": lambda prompt: "4", "beta": lambda prompt: "5"}


@pytest.fixture(scope="module")
def endpoint():
    server = ScriptedOpenAI(ANSWERS).start()
    yield server
    server.stop()


@pytest.fixture
def server(settings, endpoint):
    s = msgspec.structs.replace(settings, generation_url=endpoint.url, min_vote_s=0.0, viewer_tokens="viewer-token-1",
                                trusted_proxies="127.0.0.1")
    srv = LiveServer(s).start()
    admin = srv.client(admin=True)
    admin.post("/api/arena/active", json={"models": ["alpha", "beta"]})
    admin.post("/api/arena/prompts", json={"prompts": [{"prompt": "2+2?"}]})
    yield srv
    srv.stop()


def _battle_of(page: str) -> str:
    return page.split('data-battle="', 1)[1].split('"', 1)[0]


def test_cross_site_form_posts_are_refused(server):
    reviewer = server.client()
    battle = _battle_of(reviewer.get("/arena").text)
    board = fresh_board(server.client())["n_battles"]
    # What an attacker's page can make the reviewer's browser send: the cookies, but no token.
    for form in ({"battle_id": battle, "choice": "a"}, {"battle_id": battle, "choice": "a", "csrf_token": "x" * 43}):
        r = reviewer.post("/arena/vote", data=form)
        assert r.status_code == 403 and "CSRF" in r.text
    r = reviewer.post("/arena", data={"prompt": "Say something rude."})
    assert r.status_code == 403
    r = reviewer.post("/login", data={"token": "viewer-token-1", "next": "/runs"}, follow_redirects=False)
    assert r.status_code == 403 and "arena_read" not in r.headers.get("set-cookie", "")
    assert fresh_board(server.client())["n_battles"] == board  # nothing counted
    # The page's own form works: the token is in it.
    token = reviewer.get("/arena").text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert token == reviewer.cookies["arena_csrf"]
    r = reviewer.post("/arena/vote", data={"battle_id": battle, "choice": "a", "csrf_token": token})
    assert r.status_code == 200 and "alpha" in r.text
    ok = reviewer.post("/login", data=with_csrf(reviewer, {"token": "viewer-token-1"}), follow_redirects=False)
    assert ok.status_code == 303


def test_cookies_are_secure_over_https_only_per_a_trusted_proxy(server, settings, endpoint):
    def cookies(client, headers=None) -> list[str]:
        return client.get("/arena", headers=headers or {}).headers.get_list("set-cookie")

    plain = cookies(server.client())
    assert plain and not any("Secure" in c for c in plain)
    proxied = cookies(server.client(), {"X-Forwarded-Proto": "https"})  # the peer 127.0.0.1 is the trusted proxy
    assert proxied and all("Secure" in c for c in proxied) and all("HttpOnly" in c for c in proxied)
    s = msgspec.structs.replace(settings, generation_url=endpoint.url, trusted_proxies="10.9.9.9")
    other = LiveServer(s).start()
    try:  # the same header from a peer that is not a trusted proxy is the client's word: ignored
        spoofed = cookies(other.client(), {"X-Forwarded-Proto": "https"})
        assert spoofed and not any("Secure" in c for c in spoofed)
    finally:
        other.stop()
