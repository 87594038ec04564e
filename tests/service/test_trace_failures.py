"""Failures read from an eval's samples keep the conversation the model answered in."""

import json

from evaluators.chat_format import prompt_parser
from evaluators.records import Message
from service.config import Settings
from service.checkpoints import spread
from service.traces import _side, battle_failures, eval_failures


class PlainTokenizer:
    chat_template = None  # the plain User:…</s> format


def _samples(tmp_path, rows):
    settings = Settings(data_dir=tmp_path, redis_url=None)
    folder = tmp_path / "evals" / "eval_0123456789abcdef" / "cand"
    folder.mkdir(parents=True)
    (folder / "samples_t_2026.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return settings


def test_failures_come_from_messages_else_the_template_else_say_so(tmp_path):
    rows = [
        {"doc_id": 0, "candidate": "cand", "prompt": "ignored rendering", "response": "Lima", "target": "Oslo",
         "exact_match": 0.0, "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Where does Bob live?"}]},
        {"doc_id": 1, "candidate": "cand", "prompt": "User:Where does Kira live?</s>\n Assistant:", "response": "Rome",
         "target": "Lima", "exact_match": 0.0},
        {"doc_id": 2, "candidate": "cand", "prompt": "Where does Quinn live?", "response": "x", "target": "Tokyo",
         "exact_match": 0.0},
        {"doc_id": 3, "candidate": "cand", "prompt": "User:Hi</s>\n Assistant:", "response": "Hello", "target": "Hello",
         "exact_match": 1.0},
    ]
    settings = _samples(tmp_path, rows)
    found = eval_failures(settings, "eval_0123456789abcdef", "cand", parse=prompt_parser(PlainTokenizer()))
    assert (found.from_messages, found.parsed, found.as_text) == (1, 1, 1) and len(found.passes) == 1
    first, second, third = found.failures
    assert first.prompt.messages == (Message("system", "Be brief."), Message("user", "Where does Bob live?"))
    assert second.prompt.messages == (Message("user", "Where does Kira live?"),)  # not User:User:…
    assert third.prompt.messages == (Message("user", "Where does Quinn live?"),) and third.gold == "Tokyo"
    assert found.passes[0].prompt.messages == (Message("user", "Hi"),)
    without = eval_failures(settings, "eval_0123456789abcdef", "cand", gold=False)
    assert all(f.gold is None for f in without.failures)


def test_battle_failures_keep_the_conversation():
    vote = {"conversation_a": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"},
                               {"role": "assistant", "content": "A."}], "prompt": "Q?"}
    prompt, answer, how = _side(vote, "a")
    assert prompt.messages == (Message("system", "S"), Message("user", "Q?")) and answer == "A."
    assert how == "from_messages" and _side({"prompt": "Q?", "answer_a": "A."}, "a")[2] == "as_text"


def test_battle_failures_without_gold_drop_the_pool_reference(settings):
    import asyncio

    from service.store import Store

    lost = {"model_a": "cand", "model_b": "other", "winner": "model_b", "prompt": "Capital of Peru?",
            "answer_a": "Rome", "answer_b": "Lima", "reference": "Lima", "reviewer": "r"}

    async def main():
        store = Store.from_url(settings.redis_url, settings.key_prefix)
        await store.record_observation(lost, board="human")
        try:
            return await battle_failures(store, "cand"), await battle_failures(store, "cand", gold=False)
        finally:
            await store.close()

    with_gold, without = asyncio.run(main())
    assert [f.gold for f in with_gold.failures] == ["Lima"] and with_gold.as_text == 1
    assert [f.gold for f in without.failures] == [None] and without.failures[0].output == "Rome"


def test_checkpoints_are_spread_and_end_with_the_last():
    assert spread(list(range(1, 221)), 5) == [44, 88, 132, 176, 220]
    assert spread([10, 20], 5) == [10, 20]
