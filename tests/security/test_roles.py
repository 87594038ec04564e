"""Who may read what, tried over real HTTP: nobody, a viewer token, a browser session.

Reads of datasets, runs, candidates, evals (with samples: named candidates' outputs),
reports and jobs need the viewer role; writes need the admin token, and a viewer token
gets 403 there; pages send a browser to /login; ARENA_PUBLIC_READS opens reads only.
"""

from __future__ import annotations

import msgspec
import pytest

from tests.redis_fixtures import LiveServer, with_csrf

VIEWER = "viewer-token-for-tests"
READS = ["/api/datasets", "/api/datasets/x", "/api/datasets/x/records", "/api/jobs", "/api/jobs/job_x",
         "/api/jobs/job_x/events", "/api/runs", "/api/runs/run_x", "/api/runs/run_x/events", "/api/candidates",
         "/api/candidates/x", "/api/bases", "/api/evals", "/api/evals/eval_0000000000000000",
         "/api/candidates/x/evals", "/api/reports", "/api/reports/rep_x", "/api/judge"]
PAGES = ["/runs", "/runs/run_x", "/evals/eval_0000000000000000", "/reports/rep_x", "/corrections"]
PUBLIC = ["/health", "/schema", "/api/leaderboard", "/api/leaderboard/status", "/api/judges/calibration", "/api/arena", "/arena", "/leaderboard"]


@pytest.fixture
def server(settings):
    s = msgspec.structs.replace(settings, viewer_tokens=f"{VIEWER}, another")
    srv = LiveServer(s).start()
    yield srv
    srv.stop()


def test_reads_need_the_viewer_role_and_writes_the_admin(server):
    anon = server.client()
    viewer = server.client()
    viewer.headers["Authorization"] = f"Bearer {VIEWER}"
    admin = server.client(admin=True)
    for path in READS:
        r = anon.get(path)
        assert r.status_code == 401 and "viewer token" in r.json()["detail"], (path, r.status_code)
        assert viewer.get(path).status_code in (200, 404), path
        assert admin.get(path).status_code in (200, 404), path
    for path in PUBLIC:
        assert anon.get(path).status_code == 200, path
    # A viewer token reads only: writes are 403 with the reason, and nothing is stored.
    r = viewer.post("/api/datasets", files={"file": ("d.jsonl", b'{"prompt": "q", "completion": "a"}\n')},
                    data={"name": "d"})
    assert r.status_code == 403 and "reads only" in r.json()["detail"]
    assert admin.get("/api/datasets").json() == []
    wrong = server.client()
    wrong.headers["Authorization"] = "Bearer not-a-token"
    assert wrong.get("/api/runs").status_code == 401


def test_pages_send_a_browser_to_sign_in_and_back(server):
    anon = server.client()
    for page in PAGES:
        r = anon.get(page, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), page
    assert "Sign in" in anon.get("/login?next=/runs").text
    bad = anon.post("/login", data=with_csrf(anon, {"token": "nope", "next": "/runs"}), follow_redirects=False)
    assert bad.status_code == 401 and "arena_read" not in bad.headers.get("set-cookie", "")
    ok = anon.post("/login", data=with_csrf(anon, {"token": VIEWER, "next": "/runs"}), follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/runs"
    cookie = ok.headers["set-cookie"]
    assert "arena_read=" in cookie and "HttpOnly" in cookie and VIEWER not in cookie
    assert anon.get("/runs", follow_redirects=False).status_code == 200
    assert anon.get("/api/runs").status_code == 200
    # The session reads only: a write with the cookie alone is refused.
    assert anon.post("/api/runs", json={"base": "b", "data": "d", "name": "n"}).status_code == 401
    # A forged or tampered session is nothing.
    forged = server.client()
    forged.cookies.set("arena_read", cookie.split("arena_read=")[1].split(";")[0][:-2] + "00")
    assert forged.get("/api/runs").status_code == 401
    # The redirect stays on this site.
    elsewhere = server.client()
    away = elsewhere.post("/login", data=with_csrf(elsewhere, {"token": VIEWER, "next": "//evil.example/x"}), follow_redirects=False)
    assert away.headers["location"] == "/runs"


def test_public_reads_open_reads_only(settings):
    srv = LiveServer(msgspec.structs.replace(settings, public_reads=True)).start()
    try:
        anon = srv.client()
        assert anon.get("/api/runs").status_code == 200 and anon.get("/runs").status_code == 200
        assert anon.post("/api/datasets", files={"file": ("d.jsonl", b"{}\n")}, data={"name": "d"}).status_code == 401
    finally:
        srv.stop()
