"""Attacks on the arena's integrity, tried as a reviewer would: a browser or curl, no token.

Each test runs the real app on a loopback port with real candidates (the tiny base and a
LoRA candidate trained on it, generating in process), with the default integrity settings
unless it says otherwise (answers sampled at 0.7 / 1.0, `ARENA_MIN_VOTE_S` 2 s). Each
attack must fail with a 401 / 403 / 429 that says why, and move no board: the boards'
rows (Bradley–Terry and Elo, which matchmaking reads too), their battle counts, the vote
log and the reviewers' vote counts are compared before and after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest
import redis

from service.domain import Candidate
from service.store.keys import Keys
from tests.redis_fixtures import LiveServer, fresh_board, with_csrf

# Names no answer would contain by chance: a page or response naming one has unmasked it.
MODELS = ("base-q9zv", "lora-x4kw")
PROMPT = "Second word of: amber birch cedar"
LONG_PROMPT = " ".join(f"{i:x}q" for i in range(1200))  # under the 8000 characters, over the models' context
MIN_VOTE_S = 2.0  # the default; asserted below, never lowered here


def start_arena(settings, tiny_base, trained_adapter, **overrides) -> LiveServer:
    """The service with two real candidates active and a one-prompt pool."""
    from service.bases import make_base
    from service.store import SyncStore

    s = msgspec.structs.replace(settings, max_new_tokens_cap=24, **overrides)
    store = SyncStore(s.redis_url, s.key_prefix)
    store.put_base(make_base(MODELS[0], tiny_base, "tiny"))
    store.add_candidate(Candidate(name=MODELS[1], base=MODELS[0], dataset="words@1", dataset_id="0" * 16, run_id="run_attacks",
                                  adapter_dir=str(trained_adapter.adapter_dir), config={}, metrics={}, created_at=time.time()))
    store.close()
    server = LiveServer(s).start()
    admin = server.client(admin=True)
    assert admin.post("/api/arena/active", json={"models": list(MODELS)}).status_code == 200
    assert admin.post("/api/arena/prompts", json={"prompts": [{"prompt": PROMPT}]}).status_code == 201
    return server


@pytest.fixture
def arena(settings, tiny_base, trained_adapter) -> Iterator:
    """`arena(**settings_overrides)` starts the service; every one started is stopped after."""
    started: list[LiveServer] = []

    def start(**overrides) -> LiveServer:
        started.append(start_arena(settings, tiny_base, trained_adapter, **overrides))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def boards(server: LiveServer) -> dict:
    """Everything a vote could move, as an admin reads it."""
    admin = server.client(admin=True)
    state = {}
    for board in ("human", "judge"):
        view = fresh_board(admin, f"/api/leaderboard?board={board}")
        state[board] = {"n_battles": view["n_battles"], "rows": view["rows"], "votes": view["votes"]}
    state["logged"] = admin.get("/api/leaderboard/status").json()["votes"]
    state["reviewers"] = admin.get("/api/reviewers").json()
    return state


def deal(client: httpx.Client) -> dict:
    r = client.post("/api/battles")
    assert r.status_code == 201, r.text
    return r.json()


def vote(client: httpx.Client, battle: dict, choice: str = "a", **kwargs) -> httpx.Response:
    return client.post(f"/api/battles/{battle['id']}/vote", json={"choice": choice}, **kwargs)


def refused(response: httpx.Response, status: int, says: str) -> None:
    """`response` is a refusal with `status` that says why (the API's problem details, or the page)."""
    assert response.status_code == status, response.text
    page = response.headers["content-type"].startswith("text/html")
    assert says in (response.text if page else response.json()["detail"]), response.text


def wait_out_min_vote_time() -> None:
    time.sleep(MIN_VOTE_S + 0.2)


def test_no_public_endpoint_unmasks_a_battle(arena):
    server = arena()
    before = boards(server)
    reviewer = server.client()
    state = reviewer.get("/api/arena").json()
    assert state["active_count"] == 2 and "active" not in state and state["min_vote_s"] == MIN_VOTE_S
    assert not any(name in reviewer.get("/api/arena").text for name in MODELS)
    refused(reviewer.get("/api/arena/active"), 401, "admin token")

    battles = [deal(reviewer) for _ in range(2)]
    battles.append(reviewer.post("/api/battles", json={"prompt": PROMPT}).json())  # the same prompt, typed
    for battle in battles:
        for seen in (battle, reviewer.get(f"/api/battles/{battle['id']}").json()):
            assert seen.keys().isdisjoint({"model_a", "model_b", "seed", "reviewer"}) and seen.get("reveal") is None
    page = reviewer.get("/arena").text
    assert "Model A" in page and not any(name in page for name in MODELS)

    # Every endpoint that returns a named candidate's output needs an API key: with the
    # reviewer's cookie, with no credentials, with a made-up key, it answers 401 and nothing else.
    chat = {"model": MODELS[1], "messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": 24}
    attempts = [("GET", "/v1/models", None), ("GET", "/v1/models/words", None), ("POST", "/v1/chat/completions", chat),
                ("POST", "/v1/completions", {"model": MODELS[1], "prompt": PROMPT, "max_tokens": 24}),
                ("POST", "/api/compare", {"prompt": PROMPT, "candidates": list(MODELS)})]
    for client in (reviewer, httpx.Client(base_url=server.url, headers={"Authorization": "Bearer guessed"})):
        for method, path, body in attempts:
            r = client.request(method, path, json=body)
            refused(r, 401, "need an API key")
            # (a sampled answer may be empty, and "" is in every text: only real answers count)
            assert not any(name in r.text for name in MODELS) and not any(b["answer_a"] and b["answer_a"] in r.text
                                                                         for b in battles)

    # Battle answers are sampled with a secret seed, never through the answer cache the
    # generation endpoints read: nothing was cached, and one prompt got different answers.
    cached = redis.Redis.from_url(server.settings.redis_url)
    assert list(cached.scan_iter(match=Keys(server.settings.key_prefix).generation_cache("*"))) == []
    answers = [b[side] for b in battles if b["prompt"] == PROMPT for side in ("answer_a", "answer_b")]
    assert len(answers) == 6 and len(set(answers)) > 2, answers  # greedy would give two answers, one per model
    # A key holder's greedy answers are cached, and the next battle still does not read them.
    api = server.client(admin=True)
    assert api.post("/v1/chat/completions", json=chat).status_code == 200
    assert len(list(cached.scan_iter(match=Keys(server.settings.key_prefix).generation_cache("*")))) == 1
    deal(reviewer)
    assert len(list(cached.scan_iter(match=Keys(server.settings.key_prefix).generation_cache("*")))) == 1
    cached.close()
    # A prompt too long for the drawn candidates: the error says so without naming them.
    for r in (reviewer.post("/api/battles", json={"prompt": LONG_PROMPT}),
              reviewer.post("/arena", data=with_csrf(reviewer, {"prompt": LONG_PROMPT}))):
        refused(r, 422, "too long for the candidates drawn for this battle")
        assert not any(name in r.text for name in MODELS)
    assert boards(server) == before


def test_vote_without_an_identity_is_401(arena):
    server = arena()
    owner = server.client()
    battle = deal(owner)
    wait_out_min_vote_time()
    before = boards(server)
    bare = httpx.Client(base_url=server.url)  # curl: no cookie
    refused(vote(bare, battle), 401, "no reviewer identity")
    forged = httpx.Client(base_url=server.url, cookies={"arena_reviewer": "anon-0123456789abcdef.00000000000000000000000000000000"})
    refused(vote(forged, battle), 401, "no reviewer identity")
    refused(vote(bare, battle, headers={"X-Reviewer-Token": "guessed"}), 401, "unknown or revoked reviewer token")
    refused(bare.post("/arena/vote", data=with_csrf(bare, {"battle_id": battle["id"], "choice": "a"})), 401, "no reviewer identity")
    assert boards(server) == before
    assert vote(owner, battle).status_code == 200  # the battle was open all along
    assert boards(server)["human"]["n_battles"] == 1


def test_a_page_of_another_origin_cannot_deal_vote_or_correct_with_the_reviewers_cookie(arena):
    """A browser sends a "simple" cross-origin POST (text/plain, no preflight) with the
    cookies of the same site: a page on another port of the host, or a sibling subdomain.
    What the browser says of the request's origin decides; the page's own fetch, the
    X-Reviewer-Token header and non-browser clients are unaffected."""
    server = arena()
    owner = server.client()
    battle = deal(owner)
    wait_out_min_vote_time()
    before = boards(server)
    plain = {"content-type": "text/plain"}
    for foreign in ({"sec-fetch-site": "same-site", "origin": "http://127.0.0.1:1"},
                    {"sec-fetch-site": "cross-site", "origin": "http://evil.example"},
                    {"origin": "http://evil.example"},  # a browser without Fetch Metadata
                    {"origin": "null"}):  # a sandboxed frame
        headers = {**plain, **foreign}
        refused(owner.post("/api/battles", headers=headers), 403, "came from another site")
        refused(owner.post(f"/api/battles/{battle['id']}/vote", content=b'{"choice": "b"}', headers=headers), 403,
                "came from another site")
        refused(owner.post(f"/api/battles/{battle['id']}/corrections", content=b'{"text": "x"}', headers=headers), 403,
                "came from another site")
    assert boards(server) == before
    own = {"sec-fetch-site": "same-origin", "origin": server.url}
    r = vote(owner, battle, headers=own)  # the arena page's own fetch
    assert r.status_code == 200 and r.json()["choice"] == "a", r.text
    assert deal(owner)  # curl: neither header


def test_vote_on_another_reviewers_battle_is_403(arena):
    server = arena()
    owner, other = server.client(), server.client()
    battle = deal(owner)
    deal(other)  # the other reviewer has a valid identity of their own
    wait_out_min_vote_time()
    before = boards(server)
    refused(vote(other, battle), 403, "dealt to another reviewer")
    refused(other.post("/arena/vote", data=with_csrf(other, {"battle_id": battle["id"], "choice": "b"})), 403, "dealt to another reviewer")
    assert boards(server) == before
    assert other.get(f"/api/battles/{battle['id']}").json()["reveal"] is None
    assert vote(owner, battle).status_code == 200


def test_vote_too_fast_is_429_with_the_reason(arena):
    server = arena()
    reviewer = server.client()
    battle = deal(reviewer)
    before = boards(server)
    r = vote(reviewer, battle)
    refused(r, 429, f"too fast: a vote counts only {MIN_VOTE_S:g} s after the answers are shown")
    assert boards(server) == before
    wait_out_min_vote_time()
    assert vote(reviewer, battle).status_code == 200


def test_excluded_reviewer_never_counts_again(arena):
    server = arena()
    admin, spammer = server.client(admin=True), server.client()
    first, dealt_before = deal(spammer), deal(spammer)
    wait_out_min_vote_time()
    assert vote(spammer, first).status_code == 200
    spam_id = next(r["reviewer"] for r in admin.get("/api/reviewers").json() if r["votes"] == 1)
    r = admin.post(f"/api/reviewers/{spam_id}/exclude")
    assert r.status_code == 200 and r.json()["counted"]["human"] == 0
    before = boards(server)
    assert before["human"]["n_battles"] == 0 and before["human"]["rows"] == []

    dealt_after = deal(spammer)  # they can still get battles; their votes never count
    wait_out_min_vote_time()
    for battle in (dealt_before, dealt_after):
        refused(vote(spammer, battle), 403, "excluded")
    assert boards(server) == before  # no board, no Elo, no count in the log moved


def test_revoked_invite_cannot_vote(arena):
    server = arena(reviewer_mode="invite")
    admin = server.client(admin=True)
    invite = admin.post("/api/reviewers/invites", json={"reviewer": "ann"}).json()
    ann = server.client()
    ann.headers["X-Reviewer-Token"] = invite["token"]
    battle = deal(ann)
    assert admin.delete("/api/reviewers/ann/invites").json() == {"reviewer": "ann", "revoked": 1}
    wait_out_min_vote_time()
    before = boards(server)
    refused(vote(ann, battle), 401, "unknown or revoked reviewer token")
    refused(ann.post("/api/battles"), 401, "unknown or revoked reviewer token")
    assert boards(server) == before


def test_flood_from_one_address_is_limited(arena):
    # A client that drops its cookies gets a new identity with every battle, so the
    # per-reviewer limit never bites; the per-address limit (lowered here) does, and a
    # forged X-Forwarded-For does not help while no proxy is trusted.
    server = arena(votes_per_minute_per_address=3)
    dealt = []
    for _ in range(5):
        client = server.client()  # a fresh cookie jar: a new anonymous reviewer each time
        dealt.append((client, deal(client)))
    wait_out_min_vote_time()
    for client, battle in dealt[:3]:
        assert vote(client, battle).status_code == 200
    before = boards(server)
    assert before["human"]["n_battles"] == 3
    for n, (client, battle) in enumerate(dealt[3:]):
        refused(vote(client, battle, headers={"X-Forwarded-For": f"198.51.100.{n}"}), 429, "too many votes from this address")
    assert boards(server) == before


def test_the_proxy_header_counts_only_from_a_trusted_proxy(arena):
    server = arena(votes_per_minute_per_address=1, trusted_proxy_header="X-Forwarded-For", trusted_proxies="127.0.0.1")
    dealt = []
    for _ in range(4):
        client = server.client()
        dealt.append((client, deal(client)))
    wait_out_min_vote_time()
    behind = lambda address: {"X-Forwarded-For": address}  # noqa: E731 - what the proxy (127.0.0.1) sends
    assert vote(*dealt[0], headers=behind("203.0.113.1")).status_code == 200
    assert vote(*dealt[1], headers=behind("203.0.113.2")).status_code == 200  # another client behind the proxy
    before = boards(server)
    refused(vote(*dealt[2], headers=behind("203.0.113.1")), 429, "too many votes from this address")
    # A client prepending a made-up address: the proxy appends the real one, which counts.
    refused(vote(*dealt[3], headers=behind("192.0.2.77, 203.0.113.2")), 429, "too many votes from this address")
    assert boards(server) == before
