"""Abuse of the answer streams and other cheap requests, over real HTTP and a real Redis:
idle or hung-up readers must not take the connections votes need nor the reader slots
other reviewers need; hostile headers, cookies and bodies get a 4xx, never a 500; a revoke
racing an invite link's exchange leaves no session behind (found by an attack audit)."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx

from service.reviewers import hash_token
from service.store import Store
from tests.service.test_battle_streams import events_of, scripted, start  # noqa: F401  (fixture)


def test_blocking_answer_reads_never_take_the_connections_votes_need(redis_url):
    """150 readers waiting on answer logs (more than a redis-py pool's 100 connections): the
    store's other commands still run at once, since readers wait on a pool of their own."""

    async def attack() -> float:
        store = Store.from_url(redis_url, "abuse-pool")
        try:
            waiting = [asyncio.create_task(store.read_answer_events(f"nobody{i}", "a", 1, block_ms=3000)) for i in range(150)]
            await asyncio.sleep(0.5)  # every read is now blocked in Redis
            started = time.monotonic()
            for _ in range(20):
                assert await store.ping()
                await store.redis.incr("abuse-pool:votes")
            took = time.monotonic() - started
            assert await asyncio.gather(*waiting) == [[]] * 150
            return took
        finally:
            await store.redis.delete("abuse-pool:votes")
            await store.close()

    assert asyncio.run(attack()) < 2.0  # not waiting out the readers' 3 s


def test_a_reader_past_the_last_event_ends_at_once_and_a_huge_id_is_422(settings, scripted):
    scripted.stream_delay_s = 0.0
    server = start(settings, scripted, ["lora-left", "lora-right"])
    try:
        reviewer = server.client()
        battle = reviewer.post("/api/battles").json()  # complete: its logs end in `done`
        path = f"/api/battles/{battle['id']}/answers/a"
        events, _ = events_of(reviewer, path)
        last = events[-1][1]
        for after in (last, last + 1, 99):  # a reconnect after `done`, or an id past it: nothing to wait for
            started = time.monotonic()
            assert events_of(reviewer, path, headers={"Last-Event-ID": str(after)})[0] == []
            assert time.monotonic() - started < 5  # it used to sit idle for 120 s, holding a connection
        for bad in ("99999999999999999999", "-x", "1e9"):
            r = reviewer.get(path, headers={"Last-Event-ID": bad})
            assert r.status_code == 422 and "Last-Event-ID" in r.json()["detail"], (bad, r.text)
    finally:
        server.stop()


def test_readers_that_hang_up_at_once_give_their_slots_back(settings, scripted):
    """A client that sends the request and closes the socket at once: Litestar may drop the
    stream before it starts, and its reader slot used to stay taken until a restart."""
    scripted.stream_delay_s = 0.0
    server = start(settings, scripted, ["lora-left", "lora-right"])
    try:
        reviewer = server.client()
        battle = reviewer.post("/api/battles").json()
        cookie = "; ".join(f"{k}={v}" for k, v in reviewer.cookies.items())
        host, port = server.url.removeprefix("http://").split(":")
        for after in ("", "2") * 10:  # more than the per-battle cap
            with socket.create_connection((host, int(port))) as raw:
                raw.sendall(f"GET /api/battles/{battle['id']}/answers/a HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
                            f"Last-Event-ID: {after}\r\n\r\n".encode())
        deadline = time.monotonic() + 15
        while True:  # the server notices the hang-ups as it serves them: soon, every slot is back
            statuses = [reviewer.get(f"/api/battles/{battle['id']}/answers/{side}").status_code for side in "ab"]
            if statuses == [200, 200]:
                break
            assert set(statuses) <= {200, 429} and time.monotonic() < deadline, statuses
            time.sleep(0.3)
    finally:
        server.stop()


def test_hostile_bodies_cookies_and_form_fields_are_4xx(live_server):
    deep = "[" * 5000
    anyone = httpx.Client(base_url=live_server.url, timeout=30)
    for path in (f"/api/battles/{'A' * 22}/vote", "/api/battles"):
        r = anyone.post(path, content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.json()["detail"], (path, r.status_code, r.text)
    # A reviewer cookie or CSRF field that is not ASCII: refused or ignored, never a 500.
    odd = httpx.Client(base_url=live_server.url, timeout=30, cookies={"arena_reviewer": "anon-1.%C3%A9"})
    for method, path in (("GET", "/arena"), ("POST", "/api/battles"), ("POST", f"/api/battles/{'A' * 22}/vote")):
        r = odd.request(method, path, json={"choice": "a"} if path.endswith("vote") else None)
        assert r.status_code < 500, (path, r.status_code, r.text)
    browser = httpx.Client(base_url=live_server.url, timeout=30)
    browser.get("/login")
    for path in ("/login", "/arena/vote"):
        r = browser.post(path, data={"csrf_token": "é" * 43, "token": "x", "battle_id": "A" * 22, "choice": "a"},
                         follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text, (path, r.status_code, r.text)
    # Exclusion names a reviewer: a name none can have is refused, as for an invite.
    admin = live_server.client(admin=True)
    for name in ("x:voted", "a" * 300, "bad%0D%0Aname", "nul%00"):  # as sent: percent-encoded in the path
        for method in ("POST", "DELETE"):
            r = admin.request(method, f"/api/reviewers/{name}/exclude")
            assert r.status_code == 422 and "reviewer" in r.json()["detail"], (name, r.status_code, r.text)
    assert admin.get("/api/reviewers").json() == []


def test_a_revoke_racing_the_invite_links_exchange_leaves_no_session(redis_url):
    async def race() -> list[str]:
        store = Store.from_url(redis_url, "abuse-revoke")
        survived = []
        try:
            for trial in range(150):
                invite, session = hash_token(f"invite-{trial}"), hash_token(f"session-{trial}")
                await store.create_invite(invite, "alice")
                racing = [store.exchange_invite(invite, session), store.revoke_invites("alice")]
                await asyncio.gather(*(racing if trial % 2 else racing[::-1]))  # either one sent first
                if await store.reviewer_for_token(session) is not None:
                    survived.append(session)
                await store.revoke_invites("alice")
        finally:
            await store.redis.delete(store.keys.reviewer_tokens)
            await store.close()
        return survived

    assert asyncio.run(race()) == []


def test_one_address_cannot_deal_battles_in_a_loop(settings, scripted):
    """Every battle costs two generations: past `ARENA_BATTLES_PER_MINUTE_PER_ADDRESS` a
    minute, one client address (here with a new cookie-less identity every time) gets 429."""
    import msgspec

    scripted.stream_delay_s = 0.0
    server = start(msgspec.structs.replace(settings, battles_per_minute_per_address=4), scripted, ["lora-left", "lora-right"])
    try:
        while time.localtime().tm_sec > 45:  # the window is the clock's minute: stay inside one
            time.sleep(1)
        dealt = [httpx.post(f"{server.url}/api/battles", timeout=30).status_code for _ in range(6)]
        assert dealt == [201] * 4 + [429] * 2, dealt
        r = httpx.post(f"{server.url}/api/battles", timeout=30)
        assert r.status_code == 429 and "4 a minute" in r.json()["detail"]
        page = httpx.get(f"{server.url}/arena", timeout=30)  # the page deals no battle either, and says why
        assert "too many new battles from this address" in page.text and "data-battle=" not in page.text
    finally:
        server.stop()
