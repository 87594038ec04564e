"""Ids from URLs never reach a Redis key or a file path unchecked: a malformed id is a 404
(or 422 for a body field), never a 500, never a read outside the data directory."""

from __future__ import annotations

import pytest

from service.errors import NotFound
from service.ids import check_id, under
from tests.redis_fixtures import LiveServer

ATTACKS = ["..%2F..%2F..%2Fetc%2Fpasswd", "x:voted", "rep_0123:events", "%00", "a" * 5000, "run_..", "eval_*"]
ROUTES = ["/api/battles/{}", "/api/evals/{}", "/api/jobs/{}", "/api/runs/{}", "/api/reports/{}", "/api/datasets/{}",
          "/api/datasets/{}/records", "/api/candidates/{}", "/api/candidates/{}/evals", "/api/jobs/{}/events",
          "/evals/{}", "/reports/{}", "/runs/{}"]


@pytest.fixture
def server(settings):
    srv = LiveServer(settings).start()
    yield srv
    srv.stop()


def test_malformed_ids_are_not_found_everywhere(server):
    admin = server.client(admin=True)
    for route in ROUTES:
        for attack in ATTACKS:
            r = admin.get(route.format(attack))
            assert r.status_code in (404, 422), (route, attack, r.status_code, r.text[:200])
            assert "passwd" not in r.text or r.status_code == 404
    # The key-injection of the issue: a battle id that names another key of the store.
    r = server.client().post("/api/battles/AAAAAAAAAAAAAAAAAAAAAA:voted/vote", json={"choice": "a"})
    assert r.status_code in (401, 404), r.text
    r = admin.delete("/api/jobs/run_..%2F..%2Fx")
    assert r.status_code == 404, r.text
    r = admin.post("/api/reports", json={"candidate": "nobody", "evals": ["../../../etc"]})
    assert r.status_code == 404, r.text


def test_ids_and_paths_are_checked_at_the_source(tmp_path):
    assert check_id("eval", "eval_0123456789abcdef") == "eval_0123456789abcdef"
    for bad in ("eval_../../x", "eval_0123456789abcdef\n", 7, None):
        with pytest.raises(NotFound):
            check_id("eval", bad)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path)  # a symlink that leads out
    assert under(tmp_path / "data", "reports", "rep_x") == (tmp_path / "data" / "reports" / "rep_x").resolve()
    with pytest.raises(NotFound):
        under(tmp_path / "data", "link", "secret")
    with pytest.raises(NotFound):
        under(tmp_path / "data", "..", "secret")


def test_bodies_are_bounded_per_route(settings):
    import msgspec

    srv = LiveServer(msgspec.structs.replace(settings, max_upload_bytes=4096)).start()
    try:
        admin, anon = srv.client(admin=True), srv.client()
        big = b'{"prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        # A vote, a battle, a run request: small routes refuse 2 MiB before reading it all.
        for client, path in ((anon, "/api/battles"), (admin, "/api/runs"), (anon, "/v1/chat/completions")):
            r = client.post(path, content=big, headers={"Content-Type": "application/json"})
            assert r.status_code in (401, 413), (path, r.status_code)
        assert admin.post("/api/runs", content=big, headers={"Content-Type": "application/json"}).status_code == 413
        # Bulk routes follow ARENA_MAX_UPLOAD_BYTES, on the declared length.
        r = admin.post("/api/battles/import", content=b"[" + b"{}," * 2_000_000 + b"{}]")
        assert r.status_code == 413 and "ARENA_MAX_UPLOAD_BYTES" in r.json()["detail"]

        def chunks():
            yield b"[]"

        r = admin.post("/api/battles/import", content=chunks())  # chunked: no declared length
        assert r.status_code == 422 and "Content-Length" in r.json()["detail"]
        assert admin.post("/api/battles/import", content=b"[]").status_code == 201
    finally:
        srv.stop()
