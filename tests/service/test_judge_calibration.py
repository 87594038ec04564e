"""The judge board's calibration on /leaderboard and /api/judges/calibration (real Redis, a
real worker): a planted bad judge — one that agrees with people less than people agree with
each other — is marked "below human agreement", a good one is not; a request never computes
it (before the job has run the page says so), and new votes bring a new one."""

from __future__ import annotations

import random
import re
import time

import msgspec

from service.store import SyncStore
from tests.redis_fixtures import LiveServer

MODELS = ["m1", "m2", "m3", "m4"]
OTHER = {"model_a": "model_b", "model_b": "model_a"}


def _conversation(question: str, words: int) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": " ".join(["word"] * words)}]


def _planted(rng: random.Random, items: int = 80) -> tuple[list[dict], list[dict]]:
    """Two people vote on every item and agree on 90% of them; judge `llm:m1` (a candidate
    too) agrees with the first person 90% of the time, judge `llm:contrarian` 25%."""
    human, judged = [], []
    for i in range(items):
        a, b = rng.sample(MODELS, 2)
        truth = rng.choice(["model_a", "model_b"])
        base = {"model_a": a, "model_b": b, "question_id": f"q{i}",
                "conversation_a": _conversation(f"q{i}", rng.randrange(5, 60)),
                "conversation_b": _conversation(f"q{i}", rng.randrange(5, 60))}
        second = truth if rng.random() < 0.9 else OTHER[truth]
        human += [{**base, "winner": truth, "reviewer": "alice"}, {**base, "winner": second, "reviewer": "bob"}]
        for judge, agree in (("llm:m1", 0.9), ("llm:contrarian", 0.25)):
            winner = truth if rng.random() < agree else OTHER[truth]
            swapped = {**base, "model_a": b, "model_b": a, "conversation_a": base["conversation_b"],
                       "conversation_b": base["conversation_a"], "winner": OTHER[winner]}
            for order, vote in (("first", {**base, "winner": winner}), ("second", swapped)):
                judged.append({**vote, "reviewer": judge, "judgement": f"{judge}-{i}", "order": order, "consistent": True})
    return human, judged


def _wait_ready(client, after: float = 0.0, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get("/api/judges/calibration").json()
        if view["status"] == "ready" and view["computed_at"] > after:
            return view
        time.sleep(0.2)
    raise AssertionError(f"no calibration within {timeout} s: {view}")


def _row(page: str, judge: str) -> str:
    match = re.search(rf'<tr class="judge-row" data-judge="{re.escape(judge)}">.*?</tr>', page, re.S)
    assert match, f"no row for {judge}"
    return match.group(0)


def test_bad_judge_is_marked_below_human_agreement_from_the_background_job(settings):
    s = msgspec.structs.replace(settings, calibration_refresh_s=0.2, calibration_min_votes=10,
                                calibration_min_interval_s=0.0, board_bootstrap=200)
    store = SyncStore(s.redis_url, s.key_prefix)
    human, judged = _planted(random.Random(3))
    store.record_observations(human, board="human")
    store.record_observations(judged, board="judge")
    try:
        # No worker: the API queues the job but never computes in a request.
        api = LiveServer(s).start()
        try:
            client = api.client()
            deadline = time.monotonic() + 20
            while not store.list_jobs(kind="judge-calibration") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert [j.status for j in store.list_jobs(kind="judge-calibration")] == ["queued"]
            view = client.get("/api/judges/calibration").json()
            assert view["status"] == "not_computed" and "not computed yet" in view["message"]
            page = client.get("/leaderboard").text
            assert "Not computed yet" in page and "below human agreement" not in page
        finally:
            api.stop()

        # A worker runs the queued job; the page and the API serve what it stored.
        srv = LiveServer(s, worker=True).start()
        try:
            client = srv.client()
            view = _wait_ready(client)
            assert view["votes"] == {"human": len(human), "judge": len(judged)}
            judges = {j["judge"]: j for j in view["judges"]}
            human_rate = view["human_agreement"]["agreement_decisive"]
            assert 0.8 < human_rate < 1.0
            bad, good = judges["llm:contrarian"], judges["llm:m1"]
            assert bad["below_human"] is True and bad["agreement"]["ci_decisive"][1] < human_rate
            assert good["below_human"] is False and good["agreement"]["ci_decisive"][1] >= human_rate
            assert good["self_preference"]["model"] == "m1" and good["length_coefficient"] is not None
            assert bad["flips"]["judged_both_orders"] == 80 and bad["flips"]["flipped"] == 0
            page = client.get("/leaderboard").text
            assert "below human agreement" in _row(page, "llm:contrarian")
            assert "below human agreement" not in _row(page, "llm:m1")
            zh = srv.client().get("/leaderboard?lang=zh_CN").text
            assert "低于人与人一致率" in _row(zh, "llm:contrarian") and "低于人与人一致率" not in _row(zh, "llm:m1")

            # Enough new votes: the job runs again and the board shows the new counts.
            more = [{**v, "question_id": f"new{k}"} for k, v in enumerate(human[:12])]
            store.record_observations(more, board="human")
            again = _wait_ready(client, after=view["computed_at"])
            assert again["votes"]["human"] == len(human) + len(more)
        finally:
            srv.stop()
    finally:
        store.close()


def _queue_attempts(settings, stores: int) -> list[str | None]:
    """`queue_if_stale` from `stores` store clients at once, each with its own queue, as
    that many API processes' refreshers would."""
    import asyncio

    from service import jobs
    from service.judge_calibration import queue_if_stale
    from service.store import Store

    async def go():
        clients = [(Store.from_url(settings.redis_url, settings.key_prefix), jobs.make_queue(settings.redis_url, settings))
                   for _ in range(stores)]
        try:
            return await asyncio.gather(*(queue_if_stale(st, q, settings) for st, q in clients))
        finally:
            for st, q in clients:
                await q.disconnect()
                await st.close()

    return asyncio.run(go())


def test_api_processes_queue_one_calibration_and_wait_the_interval_after_it(settings):
    s = msgspec.structs.replace(settings, calibration_min_votes=10, calibration_min_interval_s=600.0)
    store = SyncStore(s.redis_url, s.key_prefix)
    human, judged = _planted(random.Random(5), items=10)
    store.record_observations(human, board="human")
    store.record_observations(judged, board="judge")
    try:
        queued = _queue_attempts(s, stores=4)
        assert sum(q is not None for q in queued) == 1, queued
        [job] = store.list_jobs(kind="judge-calibration")
        assert job.status == "queued" and job.id in queued
        assert _queue_attempts(s, stores=2) == [None, None]  # still queued: nobody queues another

        # The job ends (as a worker would end it) and more votes than the threshold arrive
        # at once: due by the votes, but not until the interval since its end has passed.
        store.update_job(job.id, status="succeeded", finished_at=time.time())
        store.save_judge_calibration(msgspec.json.encode({"computed_at": time.time(), "votes": job.params["votes"],
                                                          "bootstrap_rounds": 0, "report": {}}))
        store.record_observations([{**v, "question_id": f"new{k}"} for k, v in enumerate(human[:12])], board="human")
        assert _queue_attempts(s, stores=2) == [None, None]
        assert len(store.list_jobs(kind="judge-calibration")) == 1
        store.update_job(job.id, finished_at=time.time() - 601)
        again = _queue_attempts(s, stores=3)
        assert sum(q is not None for q in again) == 1, again
        assert [j.status for j in store.list_jobs(kind="judge-calibration")] == ["queued", "succeeded"]
    finally:
        store.close()
