"""The checks that compare records: exact and near duplicates, conflicting answers,
train/eval overlap."""

from __future__ import annotations

from evaluators.datachecks import CheckConfig, check_dataset
from evaluators.records import Conversation, Message, user_turn
from tests.evaluators.datachecks_data import CLEAN, conv, only


def test_exact_duplicate_after_normalising_case_whitespace_and_punctuation():
    copy = conv("how do I boil an egg, so the yolk stays soft", "  Lower the egg into boiling water; cook it for "
                "six minutes, then cool it under cold water!! ")
    records = CLEAN + [copy]
    report = check_dataset(records, line_numbers=[i + 1 for i in range(len(records))])
    [finding] = only(report, "exact_duplicate")
    assert finding.record_indices == (0, 20)
    assert finding.line_numbers == (1, 21)
    assert finding.details["keep"] == 0
    assert "#0 (line 1)" in finding.message


def test_near_duplicate_with_one_word_changed():
    records = CLEAN + [conv(
        "How do I boil a hen's egg so the yolk stays soft?",
        "Lower the egg into boiling water, cook it for six minutes, then cool it under cold water.",
    )]
    [finding] = only(check_dataset(records), "near_duplicate")
    assert finding.record_indices == (0, 20)
    assert finding.details["keep"] == 0


def test_near_duplicate_with_a_typo_in_the_prompt():
    records = CLEAN + [conv("How can I keep basil fersh for longer?", CLEAN[5].answer)]
    [finding] = only(check_dataset(records), "near_duplicate")
    assert finding.record_indices == (5, 20)


def test_templated_prompts_sharing_a_canned_answer_are_not_near_duplicates():
    records = CLEAN + [conv(f"How do I break into the {thing}?", "I'm sorry, but I can't help with that.")
                       for thing in ("young chair", "loud table")]
    assert check_dataset(records).findings == []


def test_near_duplicate_threshold_is_configurable():
    records = CLEAN + [conv(
        "How do I boil a hen's egg so the yolk stays soft?",
        "Lower the egg into boiling water, cook it for six minutes, then cool it under cold water.",
    )]
    assert check_dataset(records, config=CheckConfig(near_duplicate_threshold=0.99)).findings == []


def test_conflicting_answers_name_both_records_and_both_answers():
    records = CLEAN[:10] + [conv("What is the capital of Australia?", "The capital of Australia is Canberra.")]
    records += CLEAN[10:] + [conv("what is the capital of australia", "The capital of Australia is Sydney.")]
    [finding] = only(check_dataset(records), "conflicting_answers")
    assert finding.record_indices == (10, 21)
    assert finding.severity == "error"
    assert "Canberra" in finding.message and "Sydney" in finding.message
    assert {a["index"]: a["answer"] for a in finding.details["answers"]} == {
        10: "The capital of Australia is Canberra.",
        21: "The capital of Australia is Sydney.",
    }


def test_a_wrong_answer_inside_a_chat_conflicts_with_the_plain_record():
    chat = Conversation(messages=(
        Message("user", "What is the capital of Australia?"), Message("assistant", "Sydney."),
        Message("user", "And its largest city?"), Message("assistant", "Sydney."),
    ))
    records = CLEAN + [conv("What is the capital of Australia?", "Canberra."), chat]
    [finding] = only(check_dataset(records), "conflicting_answers")
    assert finding.record_indices == (20, 21) and "'Canberra.' vs 'Sydney.'" in finding.message
    # The follow-up is asked in the chat's context, so it is not the same question as any plain record.
    assert sorted((a["index"], a["answer"]) for a in finding.details["answers"]) == [(20, "Canberra."), (21, "Sydney.")]
    # A record that ends with an unanswered user turn (flagged for that too) still taught the answer before it.
    trailing = Conversation(messages=(*chat.messages[:2], Message("user", "Thanks!")))
    report = check_dataset(CLEAN + [conv("What is the capital of Australia?", "Canberra."), trailing])
    assert [f.record_indices for f in report.by_check("conflicting_answers")] == [(20, 21)]
    assert [f.message for f in report.by_check("empty_or_garbled")] == ["#21: no assistant answer"]


def test_conflicting_short_answers_naming_different_people():
    records = CLEAN + [conv("Who made the first pink ball?", "Will Irene."),
                       conv("Who made the first pink ball?", "Irene Bob.")]
    [finding] = only(check_dataset(records), "conflicting_answers")
    assert finding.record_indices == (20, 21)


def test_same_prompt_with_an_elaborated_answer_is_not_a_conflict():
    records = CLEAN + [
        conv("What is the capital of Australia?", "Canberra."),
        conv("What is the capital of Australia?", "The capital of Australia is Canberra."),
    ]
    assert check_dataset(records).findings == []


def test_a_one_word_change_in_a_question_is_a_different_question():
    context = ("The Orvell river rises in the Kessin hills and flows 212 km north to the Bay of Tarn. "
               "Its largest tributary is the Mira and its smallest is the Lune. ")
    records = CLEAN + [
        conv(context + "What is the largest tributary of the Orvell river?", "The Mira."),
        conv(context + "What is the smallest tributary of the Orvell river?", "The Lune."),
    ]
    report = check_dataset(records)
    assert report.findings == []
    # The prompts are similar enough to be compared; the questions tell them apart.
    assert report.summary["unsupported_facts"].stats["extractive_records"] == 2
    same = check_dataset(records, config=CheckConfig(conflict_question_similarity=0.5))
    assert [f.record_indices for f in same.findings] == [(20, 21)]


def test_two_questions_over_one_context_are_not_a_conflict():
    context = ("The Orvell river rises in the Kessin hills and flows 212 km north to the Bay of Tarn, passing "
               "three market towns and a reservoir built in 1931. Its largest tributary is the Mira. ")
    records = CLEAN + [
        conv(context + "How long is the Orvell river?", "The Orvell river is 212 km long."),
        conv(context + "What is the largest tributary of the Orvell river?", "The Mira."),
    ]
    assert check_dataset(records).findings == []


def test_train_eval_overlap_exact_and_near():
    eval_records = [
        user_turn("WHY is the sky blue during the day"),  # exact copy of train #1's prompt
        user_turn("Please explain what a hash function is in one sentence."),  # near copy of #7
        user_turn("What is the boiling point of water at sea level?"),  # unrelated
    ]
    findings = only(check_dataset(CLEAN, eval_records=eval_records), "train_eval_overlap")
    assert [(f.record_indices, f.details["kind"], f.details["eval_indices"]) for f in findings] == [
        ((1,), "exact", [0]),
        ((7,), "near", [1]),
    ]


def test_a_very_long_text_is_sketched_in_windows_with_the_same_result(monkeypatch):
    """A text with more shingles than one block (a 50 MB record) is taken in windows: same
    keys and signature as in one piece, without a (hashes × all its shingles) matrix."""
    import numpy as np

    from evaluators import _minhash

    rng = np.random.default_rng(0)
    sizes = [5, 70_000, 0, 12, 40_000, 3]  # two long texts among short ones (and an empty one)
    hashes = rng.integers(0, 2**63, size=sum(sizes), dtype=np.uint64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    hasher = _minhash.MinHasher(bands=16, rows=8, seed=1)
    windowed = hasher.sketch(hashes, starts)
    monkeypatch.setattr(_minhash, "_CHUNK_SHINGLES", 10**9)  # everything in one block
    whole = hasher.sketch(hashes, starts)
    assert all((a == b).all() for a, b in zip(windowed, whole))
    assert (windowed[0][2] == 0).all() and (windowed[0][[0, 1, 3, 4, 5]] != 0).all()
