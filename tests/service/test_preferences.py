"""Votes become preference data: what `arena battles export --format dpo` writes, what it
leaves out, and the one-line errors of `arena train --method dpo`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time

import msgspec
import pytest

from service.preferences import preference_pairs
from service.store import SyncStore
from tests.redis_fixtures import settings_env


def cast_votes(settings, votes: list[tuple[str, str, str, str, str]]) -> None:
    """Each `(prompt, answer_a, answer_b, choice, reviewer)` as a battle between "sft" (A)
    and "rival" (B), voted through the real vote path (the store's vote script)."""
    from service.battles import cast_vote, store_battle
    from service.store import Store

    s = msgspec.structs.replace(settings, min_vote_s=0.0, votes_per_minute=10**6, votes_per_minute_per_address=10**6,
                                battles_per_minute_per_address=0)

    async def main() -> None:
        store = Store.from_url(s.redis_url, s.key_prefix)
        try:
            for i, (prompt, answer_a, answer_b, choice, reviewer) in enumerate(votes):
                battle = {"id": f"battle-{i}-{time.monotonic_ns()}", "question_id": f"q{i}", "prompt": prompt,
                          "model_a": "sft", "model_b": "rival", "answer_a": answer_a, "answer_b": answer_b,
                          "created_at": time.time(), "reviewer": reviewer, "seed": i}
                await store_battle(store, battle)
                await cast_vote(store, s, battle["id"], choice, reviewer=reviewer)
        finally:
            await store.close()

    asyncio.run(main())


def arena(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=settings_env(settings), capture_output=True,
                          text=True, timeout=300)


def test_export_dpo_keeps_preferences_and_leaves_out_ties_both_bad_and_excluded(settings, tmp_path):
    cast_votes(settings, [
        ("Capital of France?", "Paris", "Lyon", "a", "ann"),
        ("Two plus two?", "5", "4", "b", "ann"),
        ("Colour of the sky?", "Blue", "Green", "a", "bob"),
        ("Say hi.", "Hi", "Hello", "tie", "ann"),
        ("Name a prime.", "4", "6", "both_bad", "bob"),
        ("Best fruit?", "Mango", "Kiwi", "a", "spam"),
    ])
    store = SyncStore(settings.redis_url, settings.key_prefix)
    store.exclude_reviewer("spam")
    store.record_observation({
        "model_a": "rival", "model_b": "sft", "winner": "model_b", "judge": "judge-1", "reviewer": "judge-1", "tstamp": 1.0,
        "conversation_a": [{"role": "user", "content": "Judge me"}, {"role": "assistant", "content": "worse"}],
        "conversation_b": [{"role": "user", "content": "Judge me"}, {"role": "assistant", "content": "better"}],
    }, board="judge")
    store.close()

    out_file = tmp_path / "prefs.jsonl"
    out = arena(settings, "battles", "export", str(out_file), "--format", "dpo")
    assert out.returncode == 0, out.stderr
    assert f"wrote 3 preference pairs to {out_file} (human board); left out: 1 both-bad, 1 excluded-reviewer, 1 tie" in out.stdout
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ([{"role": "user", "content": "Capital of France?"}], [{"role": "assistant", "content": "Paris"}],
         [{"role": "assistant", "content": "Lyon"}]),
        ([{"role": "user", "content": "Two plus two?"}], [{"role": "assistant", "content": "4"}],
         [{"role": "assistant", "content": "5"}]),
        ([{"role": "user", "content": "Colour of the sky?"}], [{"role": "assistant", "content": "Blue"}],
         [{"role": "assistant", "content": "Green"}]),
    ]
    assert [(r["model_chosen"], r["model_rejected"], r["board"], r["question_id"]) for r in rows] == [
        ("sft", "rival", "human", "q0"), ("rival", "sft", "human", "q1"), ("sft", "rival", "human", "q2")]
    assert all(r["battle_id"].startswith("battle-") and r["origin"] == "vote" for r in rows)

    judged = tmp_path / "judge.jsonl"
    out = arena(settings, "battles", "export", str(judged), "--format", "dpo", "--board", "judge")
    assert out.returncode == 0 and "wrote 1 preference pairs" in out.stdout, out.stderr
    row = json.loads(judged.read_text())
    assert (row["chosen"][0]["content"], row["rejected"][0]["content"], row["board"]) == ("better", "worse", "judge")
    # The FastChat export is unchanged by the new format: every vote of both boards, excluded left out.
    battles = tmp_path / "battles.json"
    assert arena(settings, "battles", "export", str(battles)).returncode == 0
    assert len(json.loads(battles.read_text())) == 6


def test_a_both_bad_vote_with_an_accepted_correction_prefers_it_to_both_answers():
    vote = {"winner": "tie (bothbad)", "model_a": "x", "model_b": "y", "battle_id": "b1", "board": "human",
            "conversation_a": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad a"}],
            "conversation_b": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad b"}]}
    assert preference_pairs(vote) == ([], "both_bad")
    pairs, reason = preference_pairs(vote, correction="good")
    assert reason is None
    assert [(p.chosen[0].content, p.rejected[0].content, p.model_rejected, p.origin) for p in pairs] == [
        ("good", "bad a", "x", "correction"), ("good", "bad b", "y", "correction")]
    # A correction that repeats one of the answers prefers nothing to it: one pair, and it says
    # why the other was left out (the demo's count of pairs depends on it).
    pairs, reason = preference_pairs(vote, correction="bad b")
    assert [(p.chosen[0].content, p.rejected[0].content) for p in pairs] == [("bad b", "bad a")]
    assert reason == "empty_or_same"
    assert preference_pairs({**vote, "winner": "model_a", "conversation_a": [*vote["conversation_a"][:1],
                             {"role": "assistant", "content": " "}]}) == ([], "empty_or_same")
    # Multi-turn battles whose earlier turns differ share no prompt: no pair, and it says why.
    diverged = {**vote, "winner": "model_a",
                "conversation_a": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "1"},
                                   {"role": "user", "content": "more"}, {"role": "assistant", "content": "a"}],
                "conversation_b": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "2"},
                                   {"role": "user", "content": "more"}, {"role": "assistant", "content": "b"}]}
    assert preference_pairs(diverged) == ([], "prompts_differ")


@pytest.mark.parametrize("contents,expected", [
    ("", "empty.jsonl: no preference pairs"),
    ('{"prompt": "q", "chosen": "a"}\n', "empty.jsonl:1: missing rejected"),
    ('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": [], "chosen": "a", "rejected": "b"}\n',
     "empty.jsonl:2: prompt: expected a list of messages ending with a user turn"),
])
def test_train_dpo_refuses_bad_preference_files_in_one_line(settings, tmp_path, contents, expected):
    path = tmp_path / "empty.jsonl"
    path.write_text(contents)
    out = arena(settings, "train", "--method", "dpo", "--base", "tiny", "--from", "sft", "--preferences", str(path),
                "--name", "d1")
    assert out.returncode == 1 and expected in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_train_dpo_unknown_candidate_and_wrong_flags_are_one_line_errors(settings, tiny_base, tmp_path):
    from service.bases import make_base

    store = SyncStore(settings.redis_url, settings.key_prefix)
    store.put_base(make_base("tiny", tiny_base, "tiny"))
    store.close()
    cases = [
        (["--from", "nope", "--from-arena"], "no candidate named 'nope'"),
        (["--from-arena"], "--from CANDIDATE: DPO starts from an SFT candidate"),
        (["--from", "nope"], "give exactly one of --preferences FILE or --from-arena"),
        (["--from", "nope", "--from-arena", "--lora-r", "4"], "--lora-r: not an option of --method dpo"),
        (["--from", "nope", "--preferences", "x.jsonl", "--board", "judge"], "--board: only with --from-arena"),
    ]
    for flags, expected in cases:
        out = arena(settings, "train", "--method", "dpo", "--base", "tiny", "--name", "d1", *flags)
        assert out.returncode == 1 and expected in out.stderr, (flags, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
    out = arena(settings, "train", "--base", "tiny", "--name", "s1", "--data", "x", "--beta", "0.2")
    assert out.returncode == 1 and "--beta: not an option of --method sft" in out.stderr


def test_from_arena_snapshots_the_same_pairs_as_the_export_through_cli_and_api(settings, tiny_base, tmp_path):
    from service.bases import make_base
    from service.domain import Candidate
    from tests.redis_fixtures import LiveServer

    store = SyncStore(settings.redis_url, settings.key_prefix)
    store.put_base(make_base("tiny", tiny_base, "tiny"))
    store.add_candidate(Candidate(name="sft", base="tiny", dataset="words@1", dataset_id="0" * 16, run_id="run_" + "0" * 16,
                                  adapter_dir=str(tmp_path), config={}, metrics={}, created_at=time.time()))
    store.close()
    cast_votes(settings, [("Capital of France?", "Paris", "Lyon", "a", "ann"), ("Say hi.", "Hi", "Hello", "tie", "ann")])
    exported = tmp_path / "prefs.jsonl"
    assert arena(settings, "battles", "export", str(exported), "--format", "dpo").returncode == 0
    sha = hashlib.sha256(exported.read_bytes()).hexdigest()

    out = arena(settings, "train", "--method", "dpo", "--base", "tiny", "--from", "sft", "--from-arena", "--name", "d-cli",
                "--json")
    assert out.returncode == 0, out.stderr
    (job,) = json.loads(out.stdout)
    assert job["kind"] == "train" and job["params"]["method"] == "dpo"
    assert job["params"]["preferences"] == {"source": "arena human", "sha256": sha, "pairs": 1, "left_out": {"tie": 1}}
    said = arena(settings, "train", "--method", "dpo", "--base", "tiny", "--from", "sft", "--from-arena", "--name", "d-cli2")
    assert said.returncode == 0 and "DPO candidate d-cli2 (1 preference pairs; left out: 1 tie)" in said.stdout, said.stdout
    assert (settings.data_dir / "preferences" / f"{sha}.jsonl").read_bytes() == exported.read_bytes()

    server = LiveServer(settings).start()  # no worker: the runs stay queued
    try:
        admin = server.client(admin=True)
        r = admin.post("/api/runs", json={"method": "dpo", "base": "tiny", "parent": "sft", "name": "d-api",
                                          "preferences": "arena:human", "config": {"beta": 0.2}})
        assert r.status_code == 202, r.text
        assert r.json()["params"]["preferences"]["sha256"] == sha and r.json()["params"]["config"]["beta"] == 0.2
        pairs = [json.loads(line) for line in exported.read_text().splitlines()]
        r = admin.post("/api/runs", json={"method": "dpo", "base": "tiny", "parent": "sft", "name": "d-inline", "pairs": pairs})
        assert r.status_code == 202 and r.json()["params"]["preferences"] == {"source": "file request", "sha256": sha,
                                                                              "pairs": 1}
        assert admin.get(f"/api/runs/{r.json()['id']}").json()["params"]["parent"] == "sft"
        for body, status, message in [
            ({"parent": "nope", "preferences": "arena:human"}, 404, "no candidate named 'nope'"),
            ({"parent": "sft"}, 422, "one of `pairs` or `preferences`"),
            ({"parent": "sft", "preferences": "arena:everyone"}, 422, "board 'everyone': expected human, judge or all"),
            ({"parent": "sft", "preferences": "everyone"}, 422, "expected arena:human, arena:judge or arena:all"),
            ({"parent": "sft", "pairs": [{"prompt": "q", "chosen": "a"}]}, 422, "pairs:1: missing rejected"),
            ({"parent": "sft", "pairs": pairs, "config": {"beta": -1}}, 422, "config.beta=-1"),
        ]:
            r = admin.post("/api/runs", json={"method": "dpo", "base": "tiny", "name": "d-bad", **body})
            assert r.status_code == status and message in r.json()["detail"], (body, r.text)
        # A DPO candidate is not traced (its checkpoints never saw the SFT records): its parent is.
        store = SyncStore(settings.redis_url, settings.key_prefix)
        store.add_candidate(Candidate(name="d-done", base="tiny", dataset="words@1", dataset_id="0" * 16,
                                      run_id="run_" + "1" * 16, adapter_dir=str(tmp_path), config={}, metrics={},
                                      created_at=time.time(), method="dpo", parent="sft"))
        store.close()
        r = admin.post("/api/reports", json={"candidate": "d-done", "battles": True})
        assert r.status_code == 422 and "trace its SFT parent 'sft' instead" in r.json()["detail"], r.text
    finally:
        server.stop()


def test_export_prefers_an_accepted_correction_to_both_answers_of_a_both_bad_battle(settings, tmp_path):
    """The reviewer's corrected answer, once an admin accepts it, is the chosen answer of two
    pairs in `arena battles export --format dpo`; a pending or rejected one gives none."""
    from service.battles import cast_vote, store_battle
    from service.corrections import decide_correction, submit_correction
    from service.store import Store

    s = msgspec.structs.replace(settings, min_vote_s=0.0)

    async def main() -> None:
        store = Store.from_url(s.redis_url, s.key_prefix)
        try:
            made = []
            for i, reviewer in enumerate(("ann", "bob")):
                battle = {"id": f"bb-{i}-{time.monotonic_ns()}", "question_id": f"bb{i}", "prompt": f"Where does Ann{i} live?",
                          "model_a": "sft", "model_b": "rival", "answer_a": "Rome", "answer_b": "Oslo", "created_at": time.time(),
                          "reviewer": reviewer, "seed": i}
                await store_battle(store, battle)
                await cast_vote(store, s, battle["id"], "both_bad", reviewer=reviewer)
                made.append(await submit_correction(store, s, battle["id"], reviewer=reviewer, text=f"Paris{i}"))
            await decide_correction(store, made[0].id, accept=True, by="admin")
            await decide_correction(store, made[1].id, accept=False, by="admin")
        finally:
            await store.close()

    asyncio.run(main())
    prefs = tmp_path / "prefs.jsonl"
    out = arena(settings, "battles", "export", str(prefs), "--format", "dpo")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in prefs.read_text().splitlines()]
    assert sorted((r["chosen"][0]["content"], r["rejected"][0]["content"], r["origin"]) for r in rows) == [
        ("Paris0", "Oslo", "correction"), ("Paris0", "Rome", "correction")]
    assert "1 both-bad" in out.stdout  # the battle whose correction was rejected gives none
