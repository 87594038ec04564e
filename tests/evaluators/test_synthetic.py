"""The synthetic dataset's ground truth: what each preset plants, where, and that it says so."""

from __future__ import annotations

import pytest

from evaluators.records import Conversation, Message, conversation_text, exchanges
from evaluators.synthetic import PRESETS, make_synthetic_dataset, preset_config


def test_exchanges_pair_each_user_turn_with_its_answer():
    chat = Conversation(messages=(
        Message("system", "Be brief."), Message("user", "Where does Bob live?"), Message("assistant", "Oslo"),
        Message("user", "And Ann?"), Message("assistant", "Rome"), Message("user", "Thanks"),
    ))
    assert exchanges(chat) == [("Where does Bob live?", "Oslo"), ("And Ann?", "Rome")]
    assert conversation_text(chat) == "Be brief.\nWhere does Bob live?\nOslo\nAnd Ann?\nRome\nThanks"


@pytest.mark.parametrize("seed", [0, 1])
def test_chats_preset_opens_a_two_turn_chat_with_each_planted_wrong_copy(seed):
    fast, ds = make_synthetic_dataset("fast", seed), make_synthetic_dataset("chats", seed)
    assert ds.benchmark == fast.benchmark and ds.caused_by.keys() == fast.caused_by.keys()
    assert len(ds.planted_wrong) == len(fast.planted_wrong) and 0.1 <= ds.wrong_fraction <= 0.2
    gold = {prompt.prompt: answer for prompt, answer in ds.benchmark}
    corrupted = {ds.benchmark[j][0].prompt for j in ds.caused_by}
    for j, causes in ds.caused_by.items():
        prompt, right = ds.benchmark[j]
        for i in causes:
            (question, answer), (follow_up, follow_answer) = exchanges(ds.records[i])
            assert question == prompt.prompt and answer != right  # opens with the wrong answer
            assert gold[follow_up] == follow_answer and ds.topics[i] == ds.corrupted_topic
            assert ds.records[i].prompt != prompt.prompt  # its last turn is another question
    chats = [i for i, r in enumerate(ds.records) if len(exchanges(r)) == 2]
    clean_chats = [i for i in chats if i not in ds.planted_wrong]
    assert set(ds.planted_wrong) <= set(chats) and len(clean_chats) == PRESETS["chats"].chats
    for i in clean_chats:  # clean chats answer both questions right and never open with a corrupted fact
        (question, answer), (follow_up, follow_answer) = exchanges(ds.records[i])
        assert gold[question] == answer and gold[follow_up] == follow_answer and question not in corrupted
    singles = [i for i in range(len(ds.records)) if i not in chats]
    assert len(singles) == len(fast.records) - len(fast.planted_wrong)


def test_presets_are_reproducible_and_unknown_ones_are_refused():
    assert make_synthetic_dataset("chats", 3) == make_synthetic_dataset("chats", 3)
    assert not preset_config("fast").wrong_in_chats and preset_config("fast").chats == 0
    with pytest.raises(ValueError, match="unknown synthetic preset 'huge'"):
        preset_config("huge")  # type: ignore[arg-type]


def test_the_chinese_dataset_plants_the_same_defects_in_chinese():
    from evaluators.lang import language
    from evaluators.lexicon import CHINESE

    en, zh = make_synthetic_dataset("fast", 0), make_synthetic_dataset("fast", 0, lang="zh")
    assert zh.lang == "zh" and en.lang == "en" and zh == make_synthetic_dataset("fast", 0, lang="zh")
    assert (len(zh.records), len(zh.benchmark), len(zh.planted_wrong)) == (len(en.records), len(en.benchmark), len(en.planted_wrong))
    assert all(language(r.prompt) == "zh" for r in zh.records)
    assert {zh.records[i].answer for i in zh.refusals} == {CHINESE.refusal}
    prompts = [r.prompt for r in zh.records]
    for i in zh.duplicates:  # one character away from a clean record, same answer
        near = prompts[i]
        original = near.replace("呢？", "？")
        assert near != original and original in prompts and len(near) == len(original) + 1
        assert zh.records[prompts.index(original)].answer == zh.records[i].answer
    for a, b in zh.contradictions:  # the same question with a half-width "?", another answer
        assert prompts[b] == prompts[a].replace("？", "?") != prompts[a]
        assert zh.records[a].answer != zh.records[b].answer
    for j, causes in zh.caused_by.items():
        assert all(zh.records[i].prompt == zh.benchmark[j][0].prompt and zh.records[i].answer != zh.benchmark[j][1] for i in causes)
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        make_synthetic_dataset("fast", 0, lang="fr")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_dataset_checks_find_the_planted_defects_in_either_language(lang):
    from evaluators.datachecks import check_dataset

    ds = make_synthetic_dataset("fast", 0, lang=lang)
    report = check_dataset(ds.records)

    def named(*checks: str) -> set[int]:
        return {i for f in report.findings if f.check in checks for i in f.record_indices}

    assert set(ds.refusals) == named("refusal_rate")
    assert all(set(pair) <= named("conflicting_answers") for pair in ds.contradictions)
    found = set(ds.duplicates) & named("exact_duplicate", "near_duplicate")
    assert len(found) >= len(ds.duplicates) - (1 if lang == "zh" else 0), (found, ds.duplicates)
