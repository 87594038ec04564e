"""Judging sweeps over real HTTP: LLM judges (scripted OpenAI-compatible endpoints) in
both orders on their own board, the offline reference judge, and real tiny candidates with
the service's own `/v1` as the judge. The arena's fixtures and helpers are test_arena.py's."""

from __future__ import annotations

import time

import msgspec
import pytest

from tests.redis_fixtures import LiveServer, fresh_board, poll_done
from tests.service import test_arena
from tests.service.test_arena import play, setup_arena, start

scripted = test_arena.scripted  # the arena tests' scripted endpoint, as this module's fixture too


def wait_job(client, job_id: str, timeout: float = 120) -> dict:
    return poll_done(client, f"/api/jobs/{job_id}", timeout)


def judge(admin, **body) -> dict:
    r = admin.post("/api/judge", json=body)
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job["result"]


def test_llm_judges_both_orders_separate_board_and_agreement(settings, scripted):
    srv = start(settings, scripted, worker=True)
    try:
        setup_arena(srv)
        client, admin = srv.client(), srv.client(admin=True)
        for _ in range(4):  # humans vote for the correct answer
            battle = client.post("/api/battles").json()
            choice = "a" if battle["answer_a"].startswith("The answer is 4") else "b"
            assert client.post(f"/api/battles/{battle['id']}/vote", json={"choice": choice}).status_code == 200
        human_before = fresh_board(admin, "/api/leaderboard?board=human")

        # A fair judge on the battles humans voted: consistent, and agrees with them.
        fair = judge(admin, judge=scripted.url + "/v1", judge_model="judge-fair", candidates=["alpha", "beta"], prompts="human")
        matched = fair["agreement_with_humans"]["matched"]
        assert fair["judgements"] == matched >= 1 and fair["observations"] == 2 * matched
        assert fair["inconsistent"] == 0 and fair["errors"] == 0 and fair["agreement_with_humans"]["agreement"] == 1.0

        # A position-biased judge on the pool: every pair inconsistent, still logged (two observations each).
        biased = judge(admin, judge=scripted.url, judge_model="judge-biased", candidates=["alpha", "beta", "gamma"], prompts="pool", n=2)
        assert biased["judgements"] == 2 * 3 and biased["observations"] == 12 and biased["inconsistent"] == 6

        # Unparseable verdicts: retried once, then errors, never votes.
        calls = len(scripted.calls)
        garbage = judge(admin, judge=scripted.url, judge_model="judge-garbage", candidates=["alpha", "beta"], prompts="pool", n=1)
        assert garbage["observations"] == 0 and garbage["errors"] == 2 and "no parseable verdict" in garbage["error_samples"][0]["error"]
        judge_calls = [c for c in scripted.calls[calls:] if c["body"]["model"] == "judge-garbage"]
        assert len(judge_calls) == 4 and judge_calls[1]["body"]["messages"][-1]["role"] == "user"

        # Judge verdicts never touch the human board; the judge board has exactly the logged ones.
        human_after = fresh_board(admin, "/api/leaderboard?board=human")
        assert human_after["rows"] == human_before["rows"] and human_after["votes"]["human"] == 4
        judged = fresh_board(admin, "/api/leaderboard?board=judge")
        assert judged["n_battles"] == 2 * matched + 12 and judged["votes"]["judge"] == 2 * matched + 12
        assert judged["judge_consistency"] == {"judged_both_orders": matched + 6, "inconsistent": 6}
        # The two orders of a judgement are one observation in the bootstrap: the served board is
        # the paired fit of the logged verdicts, grouped by their judgement id.
        from arena.counts import PairCounts
        from arena.ratings import leaderboard
        from service.store import SyncStore

        logged = SyncStore(settings.redis_url, settings.key_prefix)
        async def read_log():
            return [v async for _, v in logged.store.iter_votes() if v.get("board") == "judge"]

        verdicts = logged._run(read_log())
        logged.close()
        units: dict[str, list] = {}
        for v in verdicts:
            units.setdefault(v["judgement"], []).append((v["model_a"], v["model_b"], v["winner"]))
        pairs: dict[tuple[str, str], list[int]] = {}
        for v in verdicts:  # models in name order, as the service's counts: the same bootstrap draws
            a, b = v["model_a"], v["model_b"]
            slot = {"model_a": 0, "model_b": 1, "tie": 2, "tie (bothbad)": 3}[v["winner"]]
            pairs.setdefault(tuple(sorted((a, b))), [0, 0, 0, 0])[1 - slot if a > b and slot < 2 else slot] += 1
        counts = PairCounts.from_pairs(dict(sorted(pairs.items())))
        paired = leaderboard(counts, bootstrap=500, seed=0, units=list(units.values()))
        assert [(r["model"], round(r["ci_low"], 6), round(r["ci_high"], 6)) for r in judged["rows"]] == \
            [(r.model, round(r.ci_low, 6), round(r.ci_high, 6)) for r in paired.rows]
        assert judged["agreement"]["matched"] >= matched
        page = client.get("/leaderboard").text
        assert "judge–human agreement" in page and "LLM / reference judges" in page and "llm:judge-garbage" in page

        bad = admin.post("/api/judge", json={"judge": scripted.url, "candidates": ["alpha", "beta"]})
        assert bad.status_code == 422 and "--judge-model" in bad.json()["detail"]
        bad = admin.post("/api/judge", json={"judge": "judge-fair-typo", "candidates": ["alpha", "beta"]})
        assert bad.status_code == 404
    finally:
        srv.stop()


def test_graded_judge_strong_verdicts_count_three_votes(settings, scripted):
    srv = start(settings, scripted, worker=True)
    try:
        setup_arena(srv)
        admin = srv.client(admin=True)
        graded = judge(admin, judge=scripted.url, judge_model="judge-graded", candidates=["alpha", "beta"], prompts="pool",
                       n=2, graded=True)
        # alpha is right on both prompts: two strong verdicts per judgement, each logged three times.
        assert graded["judgements"] == 2 and graded["observations"] == 4 and graded["votes"] == 12 and graded["inconsistent"] == 0
        board = fresh_board(admin, "/api/leaderboard?board=judge")
        assert board["n_battles"] == 12 and board["rows"][0]["model"] == "alpha"
        exported = admin.get("/api/battles/export?board=judge")
        assert exported.status_code == 200 and len(exported.json()) == 12
        # An imported battle with a weight counts as that many votes, as `arena ratings FILE` counts it.
        weighted = {"model_a": "beta", "model_b": "alpha", "winner": "model_a", "judge": "llm:other", "weight": 3}
        r = admin.post("/api/battles/import?board=judge", content=msgspec.json.encode([weighted]))
        assert r.status_code == 201 and r.json()["imported"] == 3
        assert fresh_board(admin, "/api/leaderboard?board=judge")["n_battles"] == 15
        bad = admin.post("/api/judge", json={"judge": "reference", "candidates": ["alpha", "beta"], "graded": True})
        assert bad.status_code == 422 and "graded" in bad.json()["detail"]
    finally:
        srv.stop()


def test_reference_judge_works_offline(settings, scripted):
    srv = start(settings, scripted, worker=True)
    try:
        admin = srv.client(admin=True)
        prompts = [{"prompt": "What is 2 + 2?", "reference": "The answer is 4.", "category": "math"},
                   {"prompt": "No reference here"}]
        result = judge(admin, judge="reference", candidates=["alpha", "beta", "gamma"], prompts=prompts)
        assert result["judge"] == "reference:token_f1"
        assert result["observations"] == 6 and result["errors"] == 6  # the prompt without a reference is an error, per order
        board = fresh_board(admin, "/api/leaderboard?board=judge&category=math")
        assert board["rows"][0]["model"] == "alpha" and board["rows"][0]["win_rate"] == 1.0
        assert fresh_board(admin, "/api/leaderboard?board=human")["n_battles"] == 0
    finally:
        srv.stop()


@pytest.mark.slow
def test_real_candidates_battle_and_the_services_own_v1_as_judge(settings, tiny_base, trained_adapter, monkeypatch):
    from service.bases import make_base
    from service.domain import Candidate
    from service.store import SyncStore

    # The server's judge key (settings, never the request) opens our own /v1.
    s = msgspec.structs.replace(settings, max_new_tokens_cap=24, min_vote_s=0.0, judge_api_key=settings.admin_token)
    store = SyncStore(s.redis_url, s.key_prefix)
    store.put_base(make_base("tiny", tiny_base, "tiny"))
    store.add_candidate(Candidate(name="words", base="tiny", dataset="words@1", dataset_id="0" * 16, run_id="run_test",
                                  adapter_dir=str(trained_adapter.adapter_dir), config={}, metrics={}, created_at=time.time()))
    store.close()
    srv = LiveServer(s, worker=True).start()
    try:
        admin, client = srv.client(admin=True), srv.client()
        assert admin.post("/api/arena/active", json={"models": ["tiny", "words"]}).status_code == 200
        battle, reveal = play(client, "a", prompt="Second word of: amber birch cedar")
        assert {reveal["model_a"], reveal["model_b"]} == {"tiny", "words"}
        assert isinstance(battle["answer_a"], str) and isinstance(battle["answer_b"], str)
        result = judge(admin, judge=srv.url + "/v1", judge_model="words", max_tokens=8, candidates=["tiny", "words"], prompts="human")
        # A tiny model rarely writes a verdict: each order is a verdict or an error, never both, never a human vote.
        assert result["judgements"] == 1 and result["observations"] + result["errors"] == 2
        assert fresh_board(admin, "/api/leaderboard?board=judge")["n_battles"] == result["observations"]
        assert fresh_board(admin, "/api/leaderboard?board=human")["n_battles"] == 1
    finally:
        srv.stop()
