"""Corrections over real HTTP and real Redis: a reviewer writes a better answer after voting
(page form and API), the admin accepts one (API) and rejects another (CLI), and `arena
curate --add-corrections` adds the accepted one as a training record with its provenance.
Candidates answer through the scripted OpenAI-compatible server, as in test_arena.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.redis_fixtures import settings_env, with_csrf
from tests.scripted_openai import ScriptedOpenAI
from tests.service.test_arena import ANSWERS, JUDGES, setup_arena, start


@pytest.fixture(scope="module")
def scripted():
    server = ScriptedOpenAI(ANSWERS, JUDGES).start()
    yield server
    server.stop()


@pytest.fixture
def server(settings, scripted):
    srv = start(settings, scripted, viewer_tokens="viewer-token-1")
    setup_arena(srv)
    yield srv
    srv.stop()


def arena(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli.__main__", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=300)


def deal(client) -> dict:
    r = client.post("/api/battles")
    assert r.status_code == 201, r.text
    return r.json()


def test_correction_rules_over_the_api_and_the_page(server):
    me, other = server.client(), server.client()
    battle = deal(me)
    deal(other)  # the other reviewer has an identity of their own
    url = f"/api/battles/{battle['id']}/corrections"

    early = me.post(url, json={"text": "The answer is 4."})
    assert early.status_code == 409 and "vote on this battle first" in early.json()["detail"]
    page = me.post("/arena/vote", data=with_csrf(me, {"battle_id": battle["id"], "choice": "both_bad"}))
    assert page.status_code == 200, page.text
    assert 'id="correction" open' in page.text and 'action="/arena/correction"' in page.text  # always offered on both-bad

    theirs = other.post(url, json={"text": "mine now"})
    assert theirs.status_code == 403 and "another reviewer" in theirs.json()["detail"]
    assert server.client().post(url, json={"text": "x"}).status_code == 401  # no identity at all
    assert me.post(url, json={"text": "   "}).status_code == 422
    too_long = me.post(url, json={"text": "x" * 8001})
    assert too_long.status_code == 422 and "8000" in too_long.json()["detail"]
    assert me.post(url, json={"text": "x" * (1024 * 1024 + 10)}).status_code == 413  # the body limit
    assert me.post(url, json={"text": "ok", "based_on": "c"}).status_code == 422
    assert me.post("/api/battles/no-such-battle/corrections", json={"text": "x"}).status_code == 404
    assert me.post("/api/battles/..%2F..%2Fx/corrections", json={"text": "x"}).status_code == 404

    no_csrf = me.post("/arena/correction", data={"battle_id": battle["id"], "text": "The answer is 4."})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    form = me.post("/arena/correction", data=with_csrf(me, {"battle_id": battle["id"], "text": "The answer is 4.", "based_on": ""}))
    assert form.status_code == 201 and "waits for review" in form.text

    # A second one replaces the pending one (same id); the API edits the better answer.
    first = server.client(admin=True).get("/api/corrections", params={"status": "pending"}).json()
    assert [c["text"] for c in first] == ["The answer is 4."] and first[0]["choice"] == "both_bad"
    again = me.post(url, json={"text": "The answer is 4, <script>alert(1)</script>", "based_on": "a"})
    assert again.status_code == 201 and again.json()["id"] == first[0]["id"], again.text
    stored = server.client(admin=True).get("/api/corrections").json()
    assert len(stored) == 1 and stored[0]["based_on"] == "a" and stored[0]["original"] == battle["answer_a"]
    assert stored[0]["reviewer"].startswith("anon-") and stored[0]["updated_at"] >= stored[0]["created_at"]

    # Admin reads need the admin token; ids are checked.
    assert me.get("/api/corrections").status_code == 401
    admin = server.client(admin=True)
    assert admin.get("/api/corrections", params={"status": "maybe"}).status_code in (400, 422)
    assert admin.post("/api/corrections/corr_0000000000000000/accept").status_code == 404
    assert admin.post("/api/corrections/..%2Fbattle/accept").status_code == 404
    assert me.post(f"/api/corrections/{stored[0]['id']}/accept").status_code == 401

    # The admin page escapes what reviewers wrote; its buttons need the admin's session and CSRF.
    viewer = server.client()
    viewer.post("/login", data=with_csrf(viewer, {"token": server.settings.admin_token, "next": "/corrections"}))
    shown = viewer.get("/corrections")
    assert shown.status_code == 200 and "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
    assert "<script>alert(1)" not in shown.text and f'action="/corrections/{stored[0]["id"]}/accept"' in shown.text
    assert viewer.post(f"/corrections/{stored[0]['id']}/accept", data={"status": "pending"}).status_code == 403
    zh = viewer.get("/corrections?status=all", headers={"Accept-Language": "zh-CN"})
    assert "修正" in zh.text and "待审核" in zh.text
    reader = server.client()  # a viewer's session reads the page but decides nothing, even with the CSRF token
    reader.post("/login", data=with_csrf(reader, {"token": "viewer-token-1", "next": "/corrections"}))
    assert reader.get("/corrections").status_code == 200 and "/accept" not in reader.get("/corrections").text
    refused = reader.post(f"/corrections/{stored[0]['id']}/accept", data=with_csrf(reader, {"status": "pending"}))
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    decided = viewer.post(f"/corrections/{stored[0]['id']}/reject", data=with_csrf(viewer, {"note": "unsafe", "status": "pending"}),
                          follow_redirects=False)
    assert decided.status_code == 303 and decided.headers["location"] == "/corrections?status=pending"
    assert admin.get("/api/corrections", params={"status": "rejected"}).json()[0]["note"] == "unsafe"


def test_accept_reject_and_curate_with_provenance(server, settings, tmp_path):
    me = server.client()
    admin = server.client(admin=True)
    corrected = {}
    for choice, text in (("both_bad", "The answer is 4, as 2 + 2 = 4."), ("a", "Hello there, politely.")):
        battle = deal(me)
        assert me.post(f"/api/battles/{battle['id']}/vote", json={"choice": choice}).status_code == 200
        r = me.post(f"/api/battles/{battle['id']}/corrections", json={"text": text, "based_on": None if choice == "both_bad" else "a"})
        assert r.status_code == 201, r.text
        corrected[choice] = (battle, r.json())

    good, bad = corrected["both_bad"][1]["id"], corrected["a"][1]["id"]
    ok = admin.post(f"/api/corrections/{good}/accept", json={"note": "clear and right"})
    assert ok.status_code == 200 and ok.json()["status"] == "accepted" and ok.json()["decided_by"] == "admin"
    twice = admin.post(f"/api/corrections/{good}/reject")
    assert twice.status_code == 409 and "already accepted" in twice.json()["detail"]
    # Decided: the reviewer's next correction on that battle is a new one, not an edit of the accepted text.
    battle = corrected["both_bad"][0]
    new = me.post(f"/api/battles/{battle['id']}/corrections", json={"text": "Four."})
    assert new.status_code == 201 and new.json()["id"] != good

    rejected = arena(settings, "corrections", "reject", bad, "--note", "off topic")
    assert rejected.returncode == 0 and f"{bad} rejected" in rejected.stdout, rejected.stderr
    repeat = arena(settings, "corrections", "reject", bad)
    assert repeat.returncode == 1 and "already rejected" in repeat.stderr and repeat.stderr.count("\n") == 1
    unknown = arena(settings, "corrections", "accept", "corr_0123456789abcdef")
    assert unknown.returncode == 1 and "no correction" in unknown.stderr
    listed = json.loads(arena(settings, "corrections", "list", "--status", "accepted", "--json").stdout)
    assert [c["id"] for c in listed] == [good] and listed[0]["note"] == "clear and right"

    # A dataset and a report over it (every record traced), to curate from.
    records = "".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                      for i in range(4))
    up = admin.post("/api/datasets", files={"file": ("words.jsonl", records.encode())}, data={"name": "words"})
    assert up.status_code == 201, up.text
    dsv = up.json()["dataset"]
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text(json.dumps({
        "id": "rep_00000000000000aa", "dataset": {"id": dsv["id"], "name": "words", "ref": "words@1"},
        "examples": [{"index": i, "score": 0.0, "reference_conflict": False} for i in range(4)], "checks": {"findings": []},
    }))
    out = tmp_path / "next.jsonl"
    cur = arena(settings, "curate", "--report", str(report), "--out", str(out), "--add-corrections", "--add-as", "words", "--json")
    assert cur.returncode == 0, cur.stderr
    summary = json.loads(cur.stdout)
    assert summary["kept"] == 4 and summary["added_corrections"] == 1 and summary["dataset"] == "words@2"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5
    added = rows[-1]
    assert added["messages"] == [{"role": "user", "content": corrected["both_bad"][0]["prompt"]},
                                 {"role": "assistant", "content": "The answer is 4, as 2 + 2 = 4."}]
    assert added["meta"]["source"] == "correction" and added["meta"]["battle"] == corrected["both_bad"][0]["id"]
    assert added["meta"]["correction"] == good and added["meta"]["reviewer"].startswith("anon-")
    diff = [json.loads(line) for line in out.with_suffix(".added.jsonl").read_text().splitlines()]
    assert [(d["correction"], d["battle"]) for d in diff] == [(good, corrected["both_bad"][0]["id"])]

    # Used in words@2: the next curation does not add it again, and says so.
    again = arena(settings, "curate", "--report", str(report), "--out", str(tmp_path / "again.jsonl"), "--add-corrections")
    assert again.returncode == 0 and "added 0 corrections" in again.stdout, again.stderr
    assert json.loads(arena(settings, "corrections", "list", "--status", "accepted", "--json").stdout)[0]["used_in"] == "words@2"
