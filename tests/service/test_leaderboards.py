"""Leaderboards served from aggregates (real Redis): the same boards as a fit of the votes
log, for every board and filter; exclusion still removes a reviewer's votes; a vote never
waits for a fit; and the API process keeps nothing that grows with the log."""

from __future__ import annotations

import gc
import random
import time
import tracemalloc

import msgspec
import pytest

from arena.battles import Battle, agreement
from arena.counts import PairCounts
from arena.elo import elo_update
from arena.ratings import leaderboard
from service.board_cache import board_cache
from service.leaderboards import arena_summary, fit_board, reviewer_stats
from service.reviewers import ANON_COOKIE, ANON_PREFIX, anonymous_cookie
from service.store import SyncStore
from tests.redis_fixtures import LiveServer, fresh_board

MODELS = ["m1", "m2", "m3", "m4"]
CATEGORIES = ["math", "chat", None]
SOURCES = ["pool", "typed", None]
ROUNDS = 200


@pytest.fixture
def store(settings):
    s = SyncStore(settings.redis_url, settings.key_prefix)
    yield s
    s.close()


def _votes(seed: int) -> tuple[list[dict], list[dict]]:
    """Human votes and judge verdicts over a few questions, so judge and human meet."""
    rng = random.Random(seed)
    human, judged = [], []
    for _ in range(150):
        a, b = rng.sample(MODELS, 2)
        category, source = rng.choice(CATEGORIES), rng.choice(SOURCES)
        vote = {"model_a": a, "model_b": b, "winner": rng.choice(["model_a", "model_a", "model_b", "tie", "tie (bothbad)"]),
                "reviewer": f"r{rng.randrange(4)}", "question_id": f"q{rng.randrange(25)}", "category": category, "source": source}
        human.append({k: v for k, v in vote.items() if v is not None})
    for j in range(40):
        a, b = rng.sample(MODELS, 2)
        category, source = rng.choice(CATEGORIES), rng.choice(SOURCES)
        first, second = rng.choice(["model_a", "model_b", "tie"]), rng.choice(["model_a", "model_b", "tie"])
        swapped = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}[second]
        orders = [(a, b, first), (b, a, second)] if j % 5 else [(a, b, first)]  # some judged in one order only
        consistent = None if len(orders) == 1 else first == swapped
        for order, (x, y, winner) in zip(("first", "second"), orders):
            vote = {"model_a": x, "model_b": y, "winner": winner, "reviewer": "judge-1", "judgement": f"j{j}", "order": order,
                    "consistent": consistent, "question_id": f"q{rng.randrange(25)}" if j % 3 else f"q{j}",
                    "category": category, "source": source}
            judged.append({k: v for k, v in vote.items() if v is not None})
    return human, judged


def _from_log(store, board: str, category: str | None, source: str | None):
    """The board and summary figures computed the old way: from the whole log."""
    excluded = store.excluded_reviewers()

    async def read():
        return [v async for _, v in store.store.iter_votes()]

    def selected(name: str) -> list[dict]:
        return [v for v in log if v.get("board", "human") == name and v.get("reviewer") not in excluded
                and (category is None or v.get("category") == category) and (source is None or v.get("source") == source)]

    log = store._run(read())
    mine = selected(board)
    pairs: dict[tuple[str, str], list[int]] = {}
    for v in mine:  # models in name order, as the service's counts: the same fit, the same bootstrap draws
        a, b = v["model_a"], v["model_b"]
        slot = {"model_a": 0, "model_b": 1, "tie": 2, "tie (bothbad)": 3}[v["winner"]]
        if a > b and slot < 2:
            slot = 1 - slot
        pairs.setdefault(tuple(sorted((a, b))), [0, 0, 0, 0])[slot] += 1
    counts = PairCounts.from_pairs(dict(sorted(pairs.items())))
    elo: dict[str, float] = {}
    for v in mine:
        score = 1.0 if v["winner"] == "model_a" else 0.0 if v["winner"] == "model_b" else 0.5
        elo[v["model_a"]], elo[v["model_b"]] = elo_update(elo.get(v["model_a"], 1000.0), elo.get(v["model_b"], 1000.0), score)
    units = None
    if board == "judge":
        grouped: dict[str, list] = {}
        for k, v in enumerate(mine):
            grouped.setdefault(v.get("judgement") or f"vote-{k}", []).append((v["model_a"], v["model_b"], v["winner"]))
        units = list(grouped.values())
    fit = leaderboard(counts, elo=elo, bootstrap=ROUNDS, seed=0, units=units)

    def battles(votes: list[dict]) -> list[Battle]:
        return [Battle(model_a=v["model_a"], model_b=v["model_b"], winner=v["winner"], question_id=v["question_id"])
                for v in votes if v.get("question_id")]

    judgements = {v["judgement"]: v.get("consistent") for v in selected("judge") if v.get("judgement")}
    complete = [c for c in judgements.values() if c is not None]
    summary = {
        "agreement": msgspec.structs.asdict(agreement(battles(selected("judge")), battles(selected("human")))),
        "judge_consistency": {"judged_both_orders": len(complete), "inconsistent": sum(not c for c in complete)},
        "votes": {"human": len(selected("human")), "judge": len(selected("judge"))},
    }
    return fit, summary


def _assert_same(store, board: str, category: str | None, source: str | None) -> None:
    _, view = store._run(fit_board(store.store, board, category=category, source=source, bootstrap=ROUNDS))
    expected, expected_summary = _from_log(store, board, category, source)
    where = f"{board} board, category={category}, source={source}"
    assert view.n_battles == expected.n_battles, where
    assert [r["model"] for r in view.rows] == [r.model for r in expected.rows], where
    for got, want in zip(view.rows, expected.rows):
        for name in ("rating", "ci_low", "ci_high", "elo"):
            assert got[name] == pytest.approx(getattr(want, name), abs=1e-6), (where, got["model"], name)
        assert (got["votes"], got["rank_ub"], got["win_rate"]) == (want.votes, want.rank_ub, want.win_rate), where
    summary = store._run(arena_summary(store.store, category=category, source=source))
    assert summary["agreement"] == expected_summary["agreement"], where
    assert summary["judge_consistency"] == expected_summary["judge_consistency"], where
    assert {b: summary["votes"][b] for b in ("human", "judge")} == expected_summary["votes"], where


SLICES = [(None, None), ("math", None), (None, "typed"), ("chat", "pool")]


def test_boards_from_aggregates_equal_a_fit_of_the_log_and_exclusion_recounts(store):
    human, judged = _votes(seed=3)
    # Human votes both ways the service records them: on a dealt battle (the vote template
    # path) and as observations (imports); judge verdicts as a judging job logs them.
    for i, v in enumerate(human[:20]):
        base = {k: v[k] for k in ("model_a", "model_b", "question_id", "category", "source") if k in v}
        store.put_battle(f"b{i}", {"id": f"b{i}", "created_at": time.time() - 60}, ttl_s=60, vote_base=base)
        choice = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "both_bad"}[v["winner"]]
        store.record_battle_vote(f"b{i}", choice, {"winner": v["winner"], "reviewer": v["reviewer"], "tstamp": time.time()},
                                 reviewer=v["reviewer"])
    store.record_observations(human[20:], board="human")
    store.record_observations(judged, board="judge")
    for board in ("human", "judge"):
        for category, source in SLICES:
            _assert_same(store, board, category, source)
    summary = store._run(arena_summary(store.store))
    assert summary["categories"] == ["chat", "math"] and summary["sources"] == ["pool", "typed"]

    # An exclusion rebuilds the aggregates from the log without the reviewer's votes.
    store.exclude_reviewer("r0")
    counted = store.rebuild_aggregates()
    assert counted == {"human": sum(v["reviewer"] != "r0" for v in human), "judge": len(judged)}
    for category, source in SLICES:
        _assert_same(store, "human", category, source)
    _assert_same(store, "judge", None, None)
    listed = {r["reviewer"]: r for r in store._run(reviewer_stats(store.store))}
    assert listed["r0"]["excluded"] and listed["r0"]["votes"] == sum(v["reviewer"] == "r0" for v in human)


def test_a_store_with_votes_but_no_aggregates_is_rebuilt_once(store):
    human, _ = _votes(seed=5)
    store.record_observations(human, board="human")
    store._run(store.redis.delete(store.keys.aggregates_current))  # as a store from before the aggregates
    assert store.ensure_aggregates() is True and store.ensure_aggregates() is False
    _assert_same(store, "human", "math", None)


def test_a_vote_never_waits_for_a_fit_and_the_board_follows_within_the_interval(settings):
    # A bootstrap this large makes each fit take seconds: a vote that waited for one would show.
    s = msgspec.structs.replace(settings, board_bootstrap=200_000, board_refresh_s=0.5, min_vote_s=0.0)
    seeded = SyncStore(s.redis_url, s.key_prefix)
    human, _ = _votes(seed=7)
    seeded.record_observations(human, board="human")
    seeded.put_battle("dealt", {"id": "dealt", "created_at": time.time(), "reviewer": f"{ANON_PREFIX}tester"}, ttl_s=60,
                      vote_base={"model_a": "m1", "model_b": "m2", "category": "math"})
    cookie = anonymous_cookie(f"{ANON_PREFIX}tester", seeded.reviewer_secret())
    seeded.close()
    srv = LiveServer(s).start()
    try:
        client = srv.client()
        client.cookies.set(ANON_COOKIE, cookie)
        started = time.monotonic()
        first = client.get("/api/leaderboard").json()  # no fit yet in this process: this request makes it
        fit_s = time.monotonic() - started
        assert first["n_battles"] == len(human) and fit_s > 0.5
        cache = board_cache(srv.app.state.store)
        fits = cache.fits
        vote = client.post("/api/battles/dealt/vote", json={"choice": "a"})
        # The vote was acknowledged, counted, and the board served right after is still the
        # last fit: the vote did not wait for the refit that includes it.
        assert vote.status_code == 200, vote.text
        stale = client.get("/api/leaderboard").json()
        assert stale["votes"]["human"] == len(human) + 1 and stale["n_battles"] == len(human)
        assert cache.fits == fits
        fresh = fresh_board(client, timeout=s.board_refresh_s + 10 * fit_s)
        assert fresh["n_battles"] == len(human) + 1 and cache.fits == fits + 1
    finally:
        srv.stop()


def test_the_api_keeps_nothing_that_grows_with_the_log(settings):
    """20,000 more votes must not leave the API process holding more memory once it has
    served every board again: the old per-process copy of the log kept a few hundred bytes
    per vote (megabytes here)."""
    human, judged = _votes(seed=11)
    paths = ("/api/leaderboard", "/api/leaderboard?board=judge", "/api/leaderboard?category=math",
             "/api/leaderboard?source=typed", "/api/reviewers", "/leaderboard")
    seeded = SyncStore(settings.redis_url, settings.key_prefix)
    seeded.record_observations(human * 8, board="human")  # over 1,000: the bootstrap's large-n path, warmed up too
    seeded.record_observations(judged, board="judge")
    srv = LiveServer(settings).start()
    try:
        client, admin = srv.client(), srv.client(admin=True)

        def serve_everything() -> None:
            for path in paths:
                if path.startswith("/api/leaderboard"):
                    fresh_board(client, path)
                else:
                    assert admin.get(path).status_code == 200

        serve_everything()  # the imports, the page's catalogs, the first fits and refits: before measuring
        seeded.record_observations(human, board="human")
        serve_everything()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        more = (human * 140)[:20_000]
        seeded.record_observations(more, board="human")
        serve_everything()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert fresh_board(client)["n_battles"] == 9 * len(human) + len(more)
        assert held < 1_000_000, f"{held} bytes more held after serving every board over {len(more)} more votes"
    finally:
        srv.stop()
        seeded.close()


def test_matchmaking_reads_the_boards_states_and_battles_per_pair(store):
    from service.leaderboards import model_states

    human, _ = _votes(seed=7)
    store.record_observations(human, board="human")
    states, battles = store._run(model_states(store.store, ["m1", "m2", "m3", "new"]))
    _, view = store._run(fit_board(store.store, "human", bootstrap=ROUNDS))
    rows = {r["model"]: r for r in view.rows}
    assert [s.name for s in states] == ["m1", "m2", "m3", "new"]
    assert all(s.rating == rows[s.name]["rating"] and s.votes == rows[s.name]["votes"] for s in states[:3])
    assert states[3].rating is None and states[3].votes == 0
    fought = {}
    for v in human:
        if {v["model_a"], v["model_b"]} <= {"m1", "m2", "m3"}:
            key = frozenset((v["model_a"], v["model_b"]))
            fought[key] = fought.get(key, 0) + 1
    assert {frozenset(pair): n for pair, n in battles.items()} == fought  # m4, not asked for, left out
