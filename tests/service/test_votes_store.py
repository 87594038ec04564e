"""Votes: logged and counted atomically, first vote wins, the log rebuilds the counts."""

import asyncio

import pytest

from service.errors import Conflict, Forbidden, NotFound, RateLimited
from service.store import SyncStore, VoteRules


@pytest.fixture
def store(settings):
    s = SyncStore(settings.redis_url, settings.key_prefix)
    yield s
    s.close()


def vote(a="m1", b="m2", winner="model_a", reviewer="r1"):
    return {"model_a": a, "model_b": b, "winner": winner, "judge": reviewer, "reviewer": reviewer, "tstamp": 1.0}


def test_first_vote_wins_and_is_counted_once(store):
    store.put_battle("b1", {"model_a": "m1", "model_b": "m2"}, ttl_s=60)
    store.record_vote("b1", vote(), reviewer="r1")
    with pytest.raises(Conflict):
        store.record_vote("b1", vote(winner="model_b"), reviewer="r1")
    with pytest.raises(NotFound):
        store.record_vote("nope", vote(), reviewer="r1")
    assert store.vote_count() == 1
    assert store.pair_counts("human") == {("m1", "m2"): [1, 0, 0, 0]}


def test_counts_are_relative_to_sorted_pair(store):
    for i, (a, b, w) in enumerate([("zeta", "alpha", "model_a"), ("alpha", "zeta", "model_a"), ("zeta", "alpha", "tie (bothbad)"), ("alpha", "zeta", "tie")]):
        store.put_battle(f"b{i}", {}, ttl_s=60)
        store.record_vote(f"b{i}", vote(a, b, w), reviewer="r")
    assert store.pair_counts("human") == {("alpha", "zeta"): [1, 1, 1, 1]}


def test_rate_limit(store):
    for i in range(3):
        store.put_battle(f"b{i}", {}, ttl_s=60)
    store.record_vote("b0", vote(), reviewer="fast", rules=VoteRules(rate_limit=2))
    store.record_vote("b1", vote(), reviewer="fast", rules=VoteRules(rate_limit=2))
    with pytest.raises(RateLimited, match="limit is 2 per 60 s"):
        store.record_vote("b2", vote(), reviewer="fast", rules=VoteRules(rate_limit=2))
    assert store.vote_count() == 2


def test_concurrent_votes_on_one_battle_count_once(settings):
    from service.store import Store

    async def main():
        store = Store.from_url(settings.redis_url, settings.key_prefix)
        await store.put_battle("race", {}, ttl_s=60)

        async def try_vote(i):
            try:
                await store.record_vote("race", vote(reviewer=f"r{i}"), reviewer=f"r{i}")
                return True
            except Conflict:
                return False

        results = await asyncio.gather(*[try_vote(i) for i in range(50)])
        counts = await store.pair_counts("human")
        await store.close()
        return results, counts

    results, counts = asyncio.run(main())
    assert sum(results) == 1
    assert counts == {("m1", "m2"): [1, 0, 0, 0]}


def test_rebuild_from_the_log_and_exclude_a_reviewer(store):
    for i in range(6):
        store.put_battle(f"b{i}", {}, ttl_s=60)
        store.record_vote(f"b{i}", vote(reviewer="spammer" if i < 4 else "good", winner="model_b" if i < 4 else "model_a"), reviewer="x")
    store.record_observation(vote("m1", "m3", "model_a", reviewer="judge-1"), board="judge")
    before = store.pair_counts("human")
    assert store.rebuild_aggregates() == {"human": 6, "judge": 1}
    assert store.pair_counts("human") == before
    store.exclude_reviewer("spammer")
    assert store.rebuild_aggregates() == {"human": 2, "judge": 1}
    assert store.pair_counts("human") == {("m1", "m2"): [2, 0, 0, 0]}
    assert store.pair_counts("judge") == {("m1", "m3"): [1, 0, 0, 0]}


def _dealt(store, battle_id: str, reviewer: str, age_s: float = 60.0) -> None:
    import time

    battle = {"id": battle_id, "reviewer": reviewer, "created_at": time.time() - age_s}
    store.put_battle(battle_id, battle, ttl_s=60, vote_base={"model_a": "m1", "model_b": "m2"})


def _fields(reviewer: str) -> dict:
    import time

    return {"winner": "model_a", "choice": "a", "judge": reviewer, "reviewer": reviewer, "tstamp": time.time()}


def test_vote_rules_refuse_in_the_script_and_count_nothing(store):
    _dealt(store, "mine", "ann")
    with pytest.raises(Forbidden, match="dealt to another reviewer"):
        store.record_battle_vote("mine", "a", _fields("bob"), reviewer="bob")
    _dealt(store, "fresh", "ann", age_s=0.0)
    with pytest.raises(RateLimited, match=r"too fast: a vote counts only 2 s after"):
        store.record_battle_vote("fresh", "a", _fields("ann"), reviewer="ann", rules=VoteRules(min_vote_s=2))
    store.exclude_reviewer("ann")
    with pytest.raises(Forbidden, match="excluded"):
        store.record_battle_vote("mine", "a", _fields("ann"), reviewer="ann")
    assert store.vote_count() == 0 and store.pair_counts("human") == {}
    store.include_reviewer("ann")
    assert store.record_battle_vote("mine", "a", _fields("ann"), reviewer="ann")[1:] == ("m1", "m2")
    assert store.pair_counts("human") == {("m1", "m2"): [1, 0, 0, 0]}


def test_per_address_limit_across_reviewers(store):
    rules = VoteRules(address="10.0.0.7", address_limit=2)
    for i in range(3):
        _dealt(store, f"b{i}", f"anon-{i}")
    store.record_battle_vote("b0", "a", _fields("anon-0"), reviewer="anon-0", rules=rules)
    store.record_battle_vote("b1", "a", _fields("anon-1"), reviewer="anon-1", rules=rules)
    with pytest.raises(RateLimited, match="too many votes from this address: the limit is 2 per 60 s"):
        store.record_battle_vote("b2", "a", _fields("anon-2"), reviewer="anon-2", rules=rules)
    other = VoteRules(address="10.0.0.8", address_limit=2)
    store.record_battle_vote("b2", "a", _fields("anon-2"), reviewer="anon-2", rules=other)
    assert store.vote_count() == 2 + 1


def test_excluded_observations_are_logged_not_counted(store):
    store.exclude_reviewer("judge-bad")
    store.record_observation(vote("m1", "m3", "model_a", reviewer="judge-bad"), board="judge")
    store.record_observations([vote("m1", "m3", "model_b", reviewer="judge-ok")], board="judge")
    assert store.vote_count() == 2
    assert store.pair_counts("judge") == {("m1", "m3"): [0, 1, 0, 0]}
    assert store.rebuild_aggregates()["judge"] == 1 and store.pair_counts("judge") == {("m1", "m3"): [0, 1, 0, 0]}


def test_revoke_invites(store):
    store.create_invite("h1", "ann")
    store.create_invite("h2", "ann")
    store.create_invite("h3", "bob")
    assert store.revoke_invites("ann") == 2 and store.revoke_invites("ann") == 0
    assert store.reviewer_for_token("h1") is None and store.reviewer_for_token("h3") == "bob"


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_a_vote_counts_once_after_the_server_forgot_the_script(settings, fsync):
    """Under `always` the script's reply means fsynced; under `everysec` the vote goes as
    EVALSHA + WAITAOF in one round trip (no SCRIPT EXISTS first). Either way a server that
    lost its scripts (restart, SCRIPT FLUSH) answers NOSCRIPT and the vote is counted once."""
    from service.store import Store

    async def main():
        store = Store.from_url(settings.redis_url, settings.key_prefix)
        await store.redis.config_set("appendfsync", fsync)
        try:
            assert await store.votes_durable() and store._fsync_always == (fsync == "always")
            for i in range(2):
                await store.put_battle(f"f{fsync}{i}", {}, ttl_s=60)
            await store.record_vote(f"f{fsync}0", vote(), reviewer="r1")
            await store.redis.script_flush()
            await store.record_vote(f"f{fsync}1", vote(winner="model_b"), reviewer="r1")
            return await store.pair_counts("human"), await store.vote_count()
        finally:
            await store.redis.config_set("appendfsync", "always")
            await store.redis.aclose()

    assert asyncio.run(main()) == ({("m1", "m2"): [1, 1, 0, 0]}, 2)


def test_an_older_rebuild_finishing_last_never_counts_a_reviewer_excluded_meanwhile(settings):
    """Two recounts overlap (two exclusions in a row, from two admin requests or the CLI):
    the one started first counted part of the log before the second exclusion. When it
    finishes last, its counts must not replace the newer recount's."""
    from service.store import Store
    from service.store.aggregate_scripts import REBUILD_CHUNK_LUA

    async def main():
        first, second = (Store.from_url(settings.redis_url, settings.key_prefix) for _ in range(2))
        await first.record_observations([vote("m1", "m2", "model_a", reviewer="spam")] * 30, board="human")
        await first.record_observations([vote("m1", "m2", "model_b", reviewer="honest")] * 10, board="human")
        script, gate, calls = first._script("rebuild", REBUILD_CHUNK_LUA), asyncio.Event(), []

        async def paused(**kwargs):  # the first recount stops after its first chunk (spam's votes, counted)
            calls.append(1)
            if len(calls) == 2:
                await gate.wait()
            return await script(**kwargs)

        first._scripts["rebuild"] = paused
        older = asyncio.create_task(first.rebuild_aggregates(chunk=10))
        while len(calls) < 2:
            await asyncio.sleep(0.01)
        await second.exclude_reviewer("spam")
        assert await second.rebuild_aggregates() == {"human": 10, "judge": 0}
        gate.set()
        await older
        counts = await second.pair_counts("human")
        await first.close()
        await second.close()
        return counts

    assert asyncio.run(main()) == {("m1", "m2"): [0, 10, 0, 0]}
