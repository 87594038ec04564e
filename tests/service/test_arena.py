"""The arena over real HTTP and real Redis: battles, votes, reviewers, export/import
(judges: test_judging.py).

Candidates answer through a scripted OpenAI-compatible server on loopback (the service's
remote generation backend), so every test is real HTTP end to end yet fast.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import msgspec
import pytest

from tests.redis_fixtures import LiveServer, fresh_board, settings_env, with_csrf
from tests.scripted_openai import ScriptedOpenAI, answers_in

ANSWERS = {
    "alpha": lambda prompt: "The answer is 4.\n\n- checked twice",
    "beta": lambda prompt: "The answer is 5.",
    "gamma": lambda prompt: "I do not know.",
}


def fair_judge(messages):
    a, b = answers_in(messages)
    good_a, good_b = "is 4" in a, "is 4" in b
    return "A is right. [[A]]" if good_a and not good_b else "B is right. [[B]]" if good_b and not good_a else "Same. [[C]]"


JUDGES = {
    "judge-fair": fair_judge,
    "judge-biased": lambda messages: "The first answer is better. [[A]]",
    "judge-garbage": lambda messages: "Both have merit; I will not choose.",
    "judge-graded": lambda messages: {"[[A]]": "[[A>>B]]", "[[B]]": "[[B>>A]]", "[[C]]": "[[A=B]]"}[fair_judge(messages)[-5:]],
}
PROMPTS = [
    {"prompt": "What is 2 + 2?", "reference": "The answer is 4.", "category": "math"},
    {"prompt": "Add two and two.", "reference": "The answer is 4.", "category": "math"},
    {"prompt": "Say hello politely.", "category": "chat"},
]


@pytest.fixture(scope="module")
def scripted():
    server = ScriptedOpenAI(ANSWERS, JUDGES).start()
    yield server
    server.stop()


def start(settings, scripted, *, worker=False, **overrides) -> LiveServer:
    """The service generating through `scripted`. These tests vote at once, so the minimum
    time to vote is off unless asked for; tests/security tests the default."""
    overrides.setdefault("min_vote_s", 0.0)
    s = msgspec.structs.replace(settings, generation_url=scripted.url, **overrides)
    return LiveServer(s, worker=worker).start()


def setup_arena(server: LiveServer, models=("alpha", "beta")) -> None:
    admin = server.client(admin=True)
    r = admin.post("/api/arena/active", json={"models": list(models)})
    assert r.status_code == 200, r.text
    r = admin.post("/api/arena/prompts", json={"prompts": PROMPTS, "source": "unit"})
    assert r.status_code == 201 and r.json() == {"added": 3, "total": 3}, r.text


def play(client, choice="a", prompt=None, reason=None) -> tuple[dict, dict]:
    r = client.post("/api/battles", json={"prompt": prompt} if prompt else None)
    assert r.status_code == 201, r.text
    battle = r.json()
    v = client.post(f"/api/battles/{battle['id']}/vote", json={"choice": choice, "reason": reason})
    assert v.status_code == 200, v.text
    return battle, v.json()


def answered(client, battle_id: str, timeout: float = 20) -> None:
    """Wait until both answers of a battle dealt by the page are written (it takes no vote before)."""
    deadline = time.monotonic() + timeout
    while not client.get(f"/api/battles/{battle_id}").json().get("complete", True):
        assert time.monotonic() < deadline, f"battle {battle_id} still being answered after {timeout}s"
        time.sleep(0.02)


@pytest.fixture
def server(settings, scripted):
    srv = start(settings, scripted)
    setup_arena(srv)
    yield srv
    srv.stop()


def test_identities_hidden_until_the_vote_then_revealed_once(server):
    client = server.client()
    r = client.post("/api/battles")
    assert r.status_code == 201, r.text
    battle = r.json()
    assert "arena_reviewer" in r.cookies  # open mode: a signed anonymous id
    assert len(battle["id"]) >= 22  # 128 random bits
    for name in ("alpha", "beta", "model_a", "model_b"):
        assert name not in r.text
    assert {battle["answer_a"], battle["answer_b"]} == {ANSWERS["alpha"](""), ANSWERS["beta"]("")}
    assert "<ul><li>checked twice</li></ul>" in battle["answer_a_html"] + battle["answer_b_html"]
    seen = client.get(f"/api/battles/{battle['id']}").json()
    assert seen["reveal"] is None and "alpha" not in json.dumps(seen)

    time.sleep(0.05)
    v = client.post(f"/api/battles/{battle['id']}/vote", json={"choice": "a", "reason": "correct"})
    assert v.status_code == 200, v.text
    reveal = v.json()
    assert {reveal["model_a"], reveal["model_b"]} == {"alpha", "beta"} and reveal["winner"] == "model_a"
    assert ANSWERS[reveal["model_a"]]("") == battle["answer_a"]  # the names match the sides shown
    assert client.get(f"/api/battles/{battle['id']}").json()["reveal"]["model_a"] == reveal["model_a"]

    again = client.post(f"/api/battles/{battle['id']}/vote", json={"choice": "b"})
    assert again.status_code == 409 and "first vote counts" in again.json()["detail"]
    assert client.post("/api/battles/no-such-battle/vote", json={"choice": "a"}).status_code == 404
    bad = client.post(f"/api/battles/{battle['id']}/vote", json={"choice": "left"})
    assert bad.status_code == 422

    exported = server.client(admin=True).get("/api/battles/export").json()
    assert len(exported) == 1
    record = exported[0]
    meta = record["conv_metadata"]["arena"]
    assert record["judge"] == meta["reviewer"] and meta["reviewer"].startswith("anon-")
    assert meta["reason"] == "correct" and meta["time_to_vote_s"] > 0 and meta["board"] == "human"
    assert record["tstamp"] > battle["created_at"] and record["conversation_a"][1]["content"] == battle["answer_a"]
    board = fresh_board(client)
    assert board["votes"]["human"] == 1 and {r["model"] for r in board["rows"]} == {"alpha", "beta"}


def test_typed_prompt_pool_and_activation_errors(settings, scripted):
    srv = start(settings, scripted)
    try:
        client, admin = srv.client(), srv.client(admin=True)
        r = client.post("/api/battles")
        assert r.status_code == 409 and "at least two active candidates" in r.json()["detail"]
        assert admin.post("/api/arena/active", json={"models": ["alpha", "nope"]}).status_code == 404
        assert client.post("/api/arena/active", json={"models": ["alpha"]}).status_code == 401
        assert admin.post("/api/arena/active", json={"models": ["alpha", "beta"]}).json() == {"active": ["alpha", "beta"]}
        assert admin.get("/api/arena/active").json() == {"active": ["alpha", "beta"]}
        assert client.get("/api/arena").json()["active_count"] == 2  # reviewers get a count, never the names
        r = client.post("/api/battles")
        assert r.status_code == 409 and "prompt pool is empty" in r.json()["detail"]
        battle, reveal = play(client, "tie", prompt="My own question?")
        assert battle["prompt"] == "My own question?" and battle["category"] == "typed"
        assert client.post("/api/battles", json={"prompt": "   "}).status_code == 422
        assert client.post("/api/battles", json={"prompt": "x" * 9000}).status_code == 422
        page = client.get("/arena")
        assert page.status_code == 200 and "the prompt pool is empty" in page.text
    finally:
        srv.stop()


def test_rate_limit_per_reviewer(settings, scripted):
    srv = start(settings, scripted, votes_per_minute=2)
    try:
        setup_arena(srv)
        one, two = srv.client(), srv.client()
        play(one)
        play(one)
        battle = one.post("/api/battles").json()
        r = one.post(f"/api/battles/{battle['id']}/vote", json={"choice": "a"})
        assert r.status_code == 429 and "limit is 2 per 60 s" in r.json()["detail"]
        play(two)  # another reviewer is not limited by the first
        r = two.post(f"/api/battles/{battle['id']}/vote", json={"choice": "b"})  # ... but cannot vote on its battle
        assert r.status_code == 403 and "dealt to another reviewer" in r.json()["detail"]
        assert one.get(f"/api/battles/{battle['id']}").json()["reveal"] is None
    finally:
        srv.stop()


def test_invite_mode_needs_a_token(settings, scripted):
    srv = start(settings, scripted, reviewer_mode="invite")
    try:
        setup_arena(srv)
        anonymous, admin = srv.client(), srv.client(admin=True)
        r = anonymous.post("/api/battles")
        assert r.status_code == 401 and "invite-only" in r.json()["detail"]
        assert anonymous.get("/arena").status_code == 401
        assert anonymous.post("/api/battles", headers={"X-Reviewer-Token": "forged"}).status_code == 401
        assert anonymous.post("/api/reviewers/invites", json={"reviewer": "ann"}).status_code == 401
        invite = admin.post("/api/reviewers/invites", json={"reviewer": "ann"}).json()
        assert invite["link"].endswith(f"/arena?token={invite['token']}")
        assert admin.post("/api/reviewers/invites", json={"reviewer": "anon-1"}).status_code == 422
        ann = srv.client()
        ann.headers["X-Reviewer-Token"] = invite["token"]
        play(ann, "b")
        # The link asks first: opening it (a mail scanner, a page on another site sending the
        # browser there) signs nothing in and uses nothing up.
        browser = srv.client()
        for _ in range(2):
            r = browser.get(f"/arena?token={invite['token']}", follow_redirects=False)
            assert r.status_code == 200 and "arena_token" not in r.cookies and 'id="join-form"' in r.text
            assert 'id="invite-reviewer">ann<' in r.text and 'action="/arena/join"' in r.text
        assert browser.get("/arena").status_code == 401  # not signed in by the visit
        assert "invite-only" in browser.get("/arena?token=%20").text  # an empty token is no invite
        forged = srv.client().post("/arena/join", data={"token": invite["token"]}, follow_redirects=False)
        assert forged.status_code == 403 and "arena_token" not in forged.cookies  # another site's form
        # The button: the token becomes a session kept in a cookie and leaves the address.
        r = browser.post("/arena/join", data=with_csrf(browser, {"token": invite["token"]}), follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/arena" and "arena_token" in r.cookies
        assert r.cookies["arena_token"] != invite["token"]  # a session of its own, not the link's token
        page = browser.get("/arena")
        assert page.status_code == 200 and "Model A" in page.text and "alpha" not in page.text
        # Single-use: the link (from a history, a log, a referrer) opens nothing a second time.
        again = srv.client().get(f"/arena?token={invite['token']}", follow_redirects=False)
        assert again.status_code == 401 and "already used" in again.text
        late = srv.client()
        late = late.post("/arena/join", data=with_csrf(late, {"token": invite["token"]}), follow_redirects=False)
        assert late.status_code == 401 and "already used" in late.text
        empty = srv.client()
        assert empty.post("/arena/join", data=with_csrf(empty, {"token": " "})).status_code == 401
        # A second invite opened in a signed-in browser says whom it replaces.
        other = admin.post("/api/reviewers/invites", json={"reviewer": "bob"}).json()
        switch = browser.get(f"/arena?token={other['token']}")
        assert 'id="invite-switch"' in switch.text and "<strong>ann</strong>" in switch.text
        reviewers = {r["reviewer"]: r for r in admin.get("/api/reviewers").json()}
        assert reviewers["ann"]["votes"] == 1
    finally:
        srv.stop()


def test_excluding_a_reviewer_recounts_the_board(server):
    spammer, honest, admin = server.client(), server.client(), server.client(admin=True)
    for _ in range(6):
        battle, reveal = play(spammer, "a")  # A, whoever that is
    for _ in range(3):
        battle = honest.post("/api/battles").json()
        choice = "a" if honest.get(f"/api/battles/{battle['id']}").json()["answer_a"].startswith("The answer is 4") else "b"
        assert honest.post(f"/api/battles/{battle['id']}/vote", json={"choice": choice}).status_code == 200
    before = {r["model"]: r for r in fresh_board(admin)["rows"]}
    assert sum(r["votes"] for r in before.values()) == 2 * 9
    spam_id = next(r["reviewer"] for r in admin.get("/api/reviewers").json() if r["votes"] == 6)
    r = admin.post(f"/api/reviewers/{spam_id}/exclude")
    assert r.status_code == 200 and r.json()["counted"]["human"] == 3
    after = fresh_board(admin)
    assert {row["model"]: row["votes"] for row in after["rows"]} == {"alpha": 3, "beta": 3}
    # Their later votes are refused, so the counts and the log (Elo, matchmaking) agree.
    battle = spammer.post("/api/battles").json()
    refused = spammer.post(f"/api/battles/{battle['id']}/vote", json={"choice": "a"})
    assert refused.status_code == 403 and "excluded" in refused.json()["detail"]
    assert admin.get("/api/leaderboard").json()["rows"] == after["rows"]
    assert after["rows"][0]["model"] == "alpha" and after["rows"][0]["win_rate"] == 1.0
    assert after["votes"]["excluded_reviewers"] == 1
    # The log is untouched; the CLI rebuild gives the same counts; re-including restores them.
    env = settings_env(server.settings)
    out = subprocess.run([sys.executable, "-m", "service.cli", "ratings", "rebuild"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "3 human votes" in out.stdout
    assert admin.delete(f"/api/reviewers/{spam_id}/exclude").json()["counted"]["human"] == 9


def test_export_import_round_trip_through_the_cli(server, settings, tmp_path, redis_url):
    client = server.client()
    play(client, "a", reason="first")
    play(client, "both_bad")
    play(client, "tie", prompt="Typed prompt")
    env = settings_env(server.settings)
    exported = tmp_path / "battles.json"
    out = subprocess.run([sys.executable, "-m", "service.cli", "battles", "export", str(exported)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "wrote 3 battles" in out.stdout, out.stderr
    records = json.loads(exported.read_text())
    assert [r["winner"] for r in records][1:] == ["tie (bothbad)", "tie"]

    other = {**env, "ARENA_KEY_PREFIX": settings.key_prefix + "-copy"}
    out = subprocess.run([sys.executable, "-m", "service.cli", "battles", "import", str(exported)], env=other, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "imported 3 battles (3 human)" in out.stdout, out.stderr
    again = tmp_path / "again.jsonl"
    out = subprocess.run([sys.executable, "-m", "service.cli", "battles", "export", str(again)], env=other, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line) for line in again.read_text().splitlines()] == records

    from service.store import SyncStore

    original, copy = SyncStore(redis_url, settings.key_prefix), SyncStore(redis_url, settings.key_prefix + "-copy")
    try:
        assert copy.pair_counts("human") == original.pair_counts("human")
    finally:
        original.close()
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{settings.key_prefix}-copy:*"))
        if keys:
            client.delete(*keys)
        copy.close()
    bad = tmp_path / "bad.json"
    bad.write_text('[{"model_a": "x", "model_b": "x", "winner": "model_a"}]')
    out = subprocess.run([sys.executable, "-m", "service.cli", "battles", "import", str(bad)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "record 0: field `model_b`" in out.stderr


def test_category_filter_and_pages(server):
    client = server.client()
    play(client, "a")
    play(client, "a", prompt="typed one")
    everything = fresh_board(client)
    typed = fresh_board(client, "/api/leaderboard?category=typed")
    assert everything["n_battles"] == 2 and typed["n_battles"] == 1
    # How fragile each rank is: votes whose removal swaps a row with the next (None when no
    # removal can, e.g. two votes that are the whole record); none on the last row.
    first = everything["rows"][0]["flip_votes"]
    assert (first is None or first >= 0) and everything["rows"][-1]["flip_votes"] is None
    assert 'class="num flip"' in client.get("/leaderboard").text
    assert "typed" in everything["categories"] and "unit" in everything["sources"]
    page = client.get("/arena")
    assert page.status_code == 200 and "Model A" in page.text and "Model B" in page.text
    assert "alpha" not in page.text and "beta" not in page.text
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    board = client.get("/leaderboard?category=typed")
    assert board.status_code == 200 and "<svg" in board.text and "category typed" in board.text
    # The no-JS vote: a plain form POST reveals the names.
    battle_id = page.text.split('data-battle="', 1)[1].split('"', 1)[0]
    answered(client, battle_id)  # the page comes before its answers; a vote waits for them
    r = client.post("/arena/vote", data=with_csrf(client, {"battle_id": battle_id, "choice": "b"}))
    assert r.status_code == 200 and ("alpha" in r.text and "beta" in r.text)
    assert client.post("/arena/vote", data=with_csrf(client, {"battle_id": battle_id, "choice": "a"})).status_code == 409
    # A reload shows the reviewer's unvoted battle again instead of generating another.
    fresh = client.get("/arena").text.split('data-battle="', 1)[1].split('"', 1)[0]
    assert fresh != battle_id  # the last one was voted on
    assert client.get("/arena").text.split('data-battle="', 1)[1].split('"', 1)[0] == fresh
    other = server.client().get("/arena").text.split('data-battle="', 1)[1].split('"', 1)[0]
    assert other != fresh  # another reviewer gets their own
    answered(client, fresh)
    client.post("/arena/vote", data=with_csrf(client, {"battle_id": fresh, "choice": "tie"}))
    assert client.get("/arena").text.split('data-battle="', 1)[1].split('"', 1)[0] != fresh


def test_rebuild_while_votes_arrive_loses_nothing(settings):
    from service.store import Store

    async def main():
        store = Store.from_url(settings.redis_url, settings.key_prefix)
        vote = {"model_a": "m1", "model_b": "m2", "winner": "model_a", "reviewer": "r"}
        for i in range(1200):
            await store.put_battle(f"battle-{i:010d}", {}, ttl_s=60)
        await store.record_observations([vote] * 2000, board="human")

        async def voter(start):
            for i in range(start, 1200, 4):
                await store.record_vote(f"battle-{i:010d}", vote, reviewer="r")

        await asyncio.gather(store.rebuild_aggregates(), *(voter(k) for k in range(4)), store.rebuild_aggregates())
        counts = await store.pair_counts("human")
        logged = await store.vote_count()
        await store.close()
        return counts, logged

    counts, logged = asyncio.run(main())
    assert logged == 3200 and counts == {("m1", "m2"): [3200, 0, 0, 0]}


def test_chat_prompts_keep_their_system_turn_and_history(settings, scripted):
    """A pool prompt from a chat record is answered in its whole conversation (system turn,
    earlier exchanges), reviewers see that conversation, and the vote log keeps it."""
    srv = start(settings, scripted)
    try:
        admin, client = srv.client(admin=True), srv.client()
        admin.post("/api/arena/active", json={"models": ["alpha", "beta"]})
        chat = {"messages": [{"role": "system", "content": "Answer in French."},
                             {"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "Deux."},
                             {"role": "user", "content": "And 2 + 2?"}, {"role": "assistant", "content": "Quatre."}]}
        assert admin.post("/api/arena/prompts", json={"prompts": [chat]}).status_code == 201
        scripted.calls.clear()
        battle = client.post("/api/battles").json()
        assert battle["prompt"] == "And 2 + 2?"
        assert [t["role"] for t in battle["context"]] == ["system", "user", "assistant"]
        sent = [c["body"]["messages"] for c in scripted.calls if c["path"] == "/v1/chat/completions"]
        assert len(sent) == 2 and all(m == chat["messages"][:-1] for m in sent)
        assert "Answer in French." in client.get("/arena").text  # the reviewer sees the conversation
        assert client.post(f"/api/battles/{battle['id']}/vote", json={"choice": "a"}).status_code == 200
        logged = admin.get("/api/battles/export").json()[0]
        assert logged["conversation_a"][:4] == chat["messages"][:-1]
        assert logged["conversation_a"][4] == {"role": "assistant", "content": battle["answer_a"]}
        bad = {"messages": [{"role": "robot", "content": "x"}, {"role": "user", "content": "q"}]}
        r = admin.post("/api/arena/prompts", json={"prompts": [bad]})
        assert r.status_code == 422 and "turn 0" in r.json()["detail"]
    finally:
        srv.stop()


def test_dealt_pairs_follow_the_board(settings, scripted):
    """Matchmaking reads the human board's fit and its battles per pair: with alpha far
    ahead after many battles, beta and gamma close and barely compared, most battles are
    beta against gamma, and the dealt pairs follow `arena.matchmaking.plan` of that board."""
    from collections import Counter

    from arena.matchmaking import ModelState, plan
    from service.store import SyncStore

    def votes(a, b, wins_a, wins_b):
        return [{"model_a": a, "model_b": b, "winner": "model_a", "reviewer": "r"}] * wins_a + \
               [{"model_a": a, "model_b": b, "winner": "model_b", "reviewer": "r"}] * wins_b

    history = votes("alpha", "beta", 540, 60) + votes("alpha", "gamma", 7, 1) + votes("beta", "gamma", 4, 4)
    store = SyncStore(settings.redis_url, settings.key_prefix)
    try:
        store.record_observations(history, board="human")
        srv = start(msgspec.structs.replace(settings, battles_per_minute_per_address=0), scripted)  # 60 dealt below
        try:
            setup_arena(srv, models=("alpha", "beta", "gamma"))
            admin, client = srv.client(admin=True), srv.client()
            board = fresh_board(admin)
            fought = {frozenset((a, b)): board["battles"][i][j] for i, a in enumerate(board["models"])
                      for j, b in enumerate(board["models"]) if i < j}
            assert fought == {frozenset(("alpha", "beta")): 600, frozenset(("alpha", "gamma")): 8, frozenset(("beta", "gamma")): 8}
            states = [ModelState(r["model"], r["rating"], r["ci_low"], r["ci_high"], r["votes"]) for r in board["rows"]]
            expected = {frozenset((p.first, p.second)): p.probability
                        for p in plan(states, {tuple(pair): n for pair, n in fought.items()})}
            assert expected[frozenset(("beta", "gamma"))] > 0.5
            dealt = Counter()
            for _ in range(60):
                r = client.post("/api/battles")
                assert r.status_code == 201, r.text
                battle = store.get_battle(r.json()["id"])
                dealt[frozenset((battle["model_a"], battle["model_b"]))] += 1
            for pair, share in expected.items():
                assert abs(dealt[pair] / 60 - share) < 4 * (share * (1 - share) / 60) ** 0.5 + 0.02, (pair, dealt, expected)
        finally:
            srv.stop()
    finally:
        store.close()
