"""The per-record checks: refusal rate, format, length outliers, empty or garbled records,
unsupported facts."""

from __future__ import annotations

import json

import pytest

from evaluators.datachecks import CheckConfig, check_dataset
from evaluators.records import user_turn
from evaluators.synthetic import REFUSAL
from tests.evaluators.datachecks_data import CLEAN, conv, only


def test_refusal_rate_above_expected_lists_the_refusals():
    records = list(CLEAN)
    planted = [1, 4, 7, 11, 15, 18]  # 30% of 20
    refusals = ["I'm sorry, but I can't help with that.", "As an AI, I cannot share personal opinions.",
                "I cannot provide that information.", "I’m unable to assist with this request.",
                "I'm sorry, but that is not something I can do.", "I can't help with that request."]
    for i, text in zip(planted, refusals):
        records[i] = conv(records[i].prompt, text)
    [finding] = only(check_dataset(records), "refusal_rate")
    assert finding.record_indices == tuple(planted)
    assert finding.details["refusals"] == 6 and finding.details["rate"] == pytest.approx(0.3)
    assert "expected 5.0%" in finding.message


def test_refusal_rate_within_expected_is_not_flagged():
    records = list(CLEAN)
    records[3] = conv(records[3].prompt, REFUSAL)
    report = check_dataset(records)
    assert report.findings == []
    assert report.summary["refusal_rate"].stats["refusals"] == 1


def test_refusal_patterns_are_configurable():
    records = list(CLEAN)
    for i in range(6):
        records[i] = conv(records[i].prompt, "Computer says no.")
    assert check_dataset(records).findings == []
    config = CheckConfig(refusal_patterns=(r"^computer says no",))
    [finding] = only(check_dataset(records, config=config), "refusal_rate")
    assert finding.record_indices == tuple(range(6))


def test_one_prose_answer_among_json_answers():
    people = ["Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun",
              "Kofi", "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma"]
    records = [conv(f"Extract the name and age as JSON: {name} is {20 + k} years old.",
                    json.dumps({"name": name, "age": 20 + k})) for k, name in enumerate(people)]
    records[13] = conv(records[13].prompt, "Her name is Nia and she is 33 years old.")
    [finding] = only(check_dataset(records), "format_consistency")
    assert finding.record_indices == (13,)
    assert finding.details["majority"] == "json"
    assert "prose" in finding.message


def test_markdown_list_among_prose_answers():
    records = list(CLEAN)
    records[5] = conv(records[5].prompt, "- Trim the stems\n- Keep them in water\n- Cover loosely")
    [finding] = only(check_dataset(records), "format_consistency")
    assert finding.record_indices == (5,)
    assert finding.details["formats"] == [[5, "markdown_list"]]


def test_a_fifty_times_longer_answer_is_a_length_outlier():
    records = list(CLEAN)
    steps = " ".join(f"Step {k}: stir the {w} gently and wait a little before moving on."
                     for k, w in enumerate(["sauce", "soup", "batter", "dough", "stock", "glaze"] * 70))
    records[9] = conv(records[9].prompt, steps)
    [finding] = only(check_dataset(records), "length_outlier")
    assert finding.record_indices == (9,)
    assert finding.details["field"] == "answer"
    assert finding.details["chars"] > 40 * finding.details["median_chars"]


def test_empty_and_garbled_records():
    records = list(CLEAN)
    records[2] = conv(records[2].prompt, "   ")
    records[6] = conv(records[6].prompt, "Weather is what you get; the cafÃ© owner said itâ€™s climate.")
    records[12] = conv(records[12].prompt, "Cutting an onion releases a gas \ufffd\ufffd that irritates the eyes.")
    records[16] = conv(records[16].prompt, "Keep a regular bedtime zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.")
    records.append(user_turn("A prompt that never got an answer?"))
    report = check_dataset(records)
    findings = report.by_check("empty_or_garbled")
    assert [f.record_indices for f in findings] == [(2,), (6,), (12,), (16,), (20,)]
    messages = [f.message for f in findings]
    assert "empty answer" in messages[0]
    assert "mojibake" in messages[1]
    assert "U+FFFD" in messages[2]
    assert "repeated" in messages[3]
    assert "no assistant answer" in messages[4]


def test_hallucinated_number_and_name_in_an_extractive_answer():
    context = ("The Orvell river rises in the Kessin hills and flows 212 km north to the Bay of Tarn. "
               "Its largest tributary is the Mira. ")
    records = CLEAN + [
        conv(context + "How long is the Orvell river?", "The Orvell river is 312 km long."),
        conv(context + "Where does the Orvell river rise?", "It rises in the Kessin hills near Dunmore."),
        conv(context + "Where does the Orvell river end?", "It flows into the Bay of Tarn."),
    ]
    findings = only(check_dataset(records), "unsupported_facts")
    assert [(f.record_indices, f.details["numbers"], f.details["names"]) for f in findings] == [
        ((20,), ["312"], []),
        ((21,), [], ["Dunmore"]),
    ]


def test_numbers_absent_from_a_short_prompt_are_not_flagged():
    # "What is 12 × 12?" → "144" is computation, not extraction: no context, no finding.
    records = CLEAN + [conv("What is 12 × 12?", "The answer is 144.")]
    assert check_dataset(records).findings == []
