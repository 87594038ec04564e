"""Dataset checks find each planted defect, by the right record, and stay silent on clean data."""

from __future__ import annotations

import json

import pytest

from evaluators.datachecks import CHECKS, CheckConfig, check_dataset
from evaluators.records import Conversation, Message, user_turn
from evaluators.synthetic import REFUSAL, make_synthetic_dataset


def conv(prompt: str, answer: str, system: str | None = None) -> Conversation:
    turns = ([Message("system", system)] if system else []) + [Message("user", prompt), Message("assistant", answer)]
    return Conversation(messages=tuple(turns))


# 20 varied, clean question/answer records; every test plants its defect into a copy.
CLEAN = [
    conv("How do I boil an egg so the yolk stays soft?",
         "Lower the egg into boiling water, cook it for six minutes, then cool it under cold water."),
    conv("Why is the sky blue during the day?",
         "Air molecules scatter short blue wavelengths of sunlight more strongly than red ones."),
    conv("Give one tip for writing a clear commit message.",
         "Start with a short summary line in the imperative mood, then explain why in the body."),
    conv("What does a thermostat do in a home heating system?",
         "It measures the room temperature and switches the heating on or off to hold a set point."),
    conv("Suggest a name for a small bakery that sells sourdough.",
         "Crumb and Crust would be a friendly name that hints at the bread."),
    conv("How can I keep basil fresh for longer?",
         "Trim the stems and keep the bunch in a glass of water on the counter, loosely covered."),
    conv("What is the difference between weather and climate?",
         "Weather is the state of the atmosphere today; climate is its average over decades."),
    conv("Explain what a hash function is in one sentence.",
         "A hash function maps data of any size to a fixed-size value, the same input always giving the same output."),
    conv("Why does bread go stale?",
         "The starch in it slowly recrystallises and pushes water out, so the crumb turns firm and dry."),
    conv("How should I store a cast iron pan?",
         "Dry it completely, rub in a thin layer of oil and keep it somewhere dry."),
    conv("What is a good way to start learning to draw?",
         "Sketch simple objects around you every day and focus on shapes before details."),
    conv("Write a short thank-you note to a neighbour who watered my plants.",
         "Thank you so much for looking after my plants while I was away; they have never looked better."),
    conv("Why do onions make people cry?",
         "Cutting an onion releases a gas that irritates the eyes and makes them water."),
    conv("How often should I water a cactus?",
         "Water it deeply about once every two to three weeks and let the soil dry out in between."),
    conv("What is compound interest?",
         "Interest earned on both the original amount and on the interest already added to it."),
    conv("Describe the smell of rain in a short phrase.",
         "An earthy, fresh scent rising from warm ground after the first drops."),
    conv("How can I fall asleep faster?",
         "Keep a regular bedtime, avoid screens for an hour before bed and keep the room cool and dark."),
    conv("What makes a good password?",
         "A long passphrase of several unrelated words is both strong and easy to remember."),
    conv("Why do leaves change colour in autumn?",
         "Trees stop making chlorophyll, so the yellow and orange pigments underneath become visible."),
    conv("How do I remove a coffee stain from a cotton shirt?",
         "Rinse it with cold water from the back, rub in a little washing-up liquid and wash as usual."),
]

# The examples in /work/shared/data, converted by hand as service.datasets does
# (Alpaca: instruction, blank line, input; seed format: the User/Assistant turns).
SHARED_EXAMPLES = [
    conv("Convert the temperature to Fahrenheit.\n\n25 °C", "77 °F"),
    conv("Name the largest tributary of the Orvell river.\n\n"
         "The Orvell river rises in the Kessin hills. Its largest tributary is the Mira.", "The Mira."),
    conv("Write a polite reply declining a meeting on Thursday.",
         "Thank you for the invitation. Unfortunately I am not available on Thursday; "
         "could we find another day next week?"),
    conv("How do I reset my password?",
         "Open Settings → Account → Reset password, then follow the link sent to your e-mail.",
         system="You are a concise help-desk assistant."),
    Conversation(messages=(Message("user", "What is 12 × 12?"), Message("assistant", "144"),
                           Message("user", "And half of that?"), Message("assistant", "72"))),
    conv("Translate to French: good morning", "bonjour"),
    conv("Is 91 prime? Answer yes or no.", "no"),
    conv("The Orvell river rises in the Kessin hills and flows 212 km north to the Bay of Tarn. "
         "Its largest tributary is the Mira.How long is the Orvell river?", "The Orvell river is 212 km long."),
    conv("Which of these is a prime number? 21 or 23", "23"),
    conv("Why do cyclists tuck their elbows in on a descent?",
         "Tucking in reduces the frontal area exposed to the wind, which lowers aerodynamic drag and lets the "
         "rider go faster with the same effort."),
    conv("Summarise in one sentence: The library will close early on Friday because the heating system is "
         "being replaced. Normal hours resume on Monday.",
         "The library closes early on Friday for heating work and reopens with normal hours on Monday."),
]


def only(report, check):
    """The findings of `check`, after asserting no other check found anything."""
    others = [f for f in report.findings if f.check != check]
    assert not others, [f"{f.check}: {f.message}" for f in others]
    return report.by_check(check)


# --------------------------------------------------------------------- no false alarms


def test_clean_dataset_has_no_findings():
    report = check_dataset(CLEAN)
    assert report.findings == [], [f.message for f in report.findings]
    assert set(report.summary) == set(CHECKS) - {"train_eval_overlap"}
    assert all(s.records == 0 and s.rate == 0.0 for s in report.summary.values())


def test_shared_data_examples_have_no_findings():
    report = check_dataset(SHARED_EXAMPLES)
    assert report.findings == [], [f.message for f in report.findings]
    # The extractive check did look at the context-bearing examples, and found them supported.
    assert report.summary["unsupported_facts"].stats["extractive_records"] == 3


def test_clean_and_shared_examples_together_have_no_findings():
    report = check_dataset(CLEAN + SHARED_EXAMPLES, eval_records=[user_turn("What is the capital of Peru?")])
    assert report.findings == [], [f.message for f in report.findings]


# --------------------------------------------------------------------- planted defects


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


# --------------------------------------------------------------------- the report


def test_all_defects_at_once_are_each_attributed_to_their_records():
    records = list(CLEAN)
    records[2] = conv(records[2].prompt, "")
    records.append(records[0])  # 20: exact duplicate of 0
    records.append(conv("What is the capital of Australia?", "Canberra is the capital."))  # 21
    records.append(conv("What is the capital of Australia?", "Sydney is the capital."))  # 22
    report = check_dataset(records, eval_records=[user_turn("Why do onions make people cry?")])
    flagged = report.flagged_indices()
    assert sorted(flagged) == [0, 2, 12, 20, 21, 22]
    assert [r.split(":")[0] for r in flagged[20]] == ["exact_duplicate"]
    assert [r.split(":")[0] for r in flagged[12]] == ["train_eval_overlap"]
    assert [r.split(":")[0] for r in flagged[2]] == ["empty_or_garbled"]
    assert report.summary["conflicting_answers"].records == 2
    assert report.summary["exact_duplicate"].rate == pytest.approx(2 / 23)
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["n_records"] == 23
    assert {f["check"] for f in as_json["findings"]} == {
        "exact_duplicate", "conflicting_answers", "empty_or_garbled", "train_eval_overlap"}


def test_only_the_configured_checks_run():
    records = CLEAN + [CLEAN[0]]
    report = check_dataset(records, config=CheckConfig(checks=("length_outlier",)))
    assert list(report.summary) == ["length_outlier"] and report.findings == []


def test_bad_input_gets_a_specific_error():
    with pytest.raises(ValueError, match="unknown check"):
        CheckConfig(checks=("duplicates",))
    with pytest.raises(ValueError, match="not a valid regular expression"):
        CheckConfig(refusal_patterns=("(unclosed",))
    with pytest.raises(ValueError, match="line_numbers has 1 entries for 20 records"):
        check_dataset(CLEAN, line_numbers=[1])


@pytest.mark.parametrize("preset", ["fast", "chats"])
def test_synthetic_dataset_defects_are_found(preset):
    ds = make_synthetic_dataset(preset, seed=0)
    # 10 refusals in 86 records (chats) sit just short of significance at the default 1%.
    report = check_dataset(ds.records, config=CheckConfig(refusal_alpha=0.05))
    dup_groups = [set(f.record_indices) for f in report.by_check("exact_duplicate")]
    for extra in ds.duplicates:  # every planted extra copy sits in a duplicate group
        assert any(extra in g for g in dup_groups)
    conflict_groups = [set(f.record_indices) for f in report.by_check("conflicting_answers")]
    for pair in ds.contradictions:
        assert set(pair) in conflict_groups
    for wrong in ds.planted_wrong:  # a planted wrong answer conflicts with its correct record
        assert any(wrong in g for g in conflict_groups)
    [refusal] = report.by_check("refusal_rate")
    assert list(refusal.record_indices) == ds.refusals
    assert not report.by_check("near_duplicate") and not report.by_check("format_consistency")
    assert not report.by_check("unsupported_facts")
    # Refusal sentences are ~7x the one-word answers: the only length outliers allowed.
    outliers = {i for f in report.by_check("length_outlier") for i in f.record_indices}
    assert outliers <= set(ds.refusals)


def test_balance_reports_metadata_and_languages_and_names_sources():
    from evaluators.records import Conversation, Message

    def rec(q, a, **meta):
        return Conversation(messages=(Message("user", q), Message("assistant", a)), meta=tuple(sorted(meta.items())))

    records = [rec(f"What is {i} plus {i}?", str(2 * i), source="web", task_type="math") for i in range(18)]
    records += [rec("天空是什么颜色？", "蓝色。", source="vendor", task_type="qa"), rec("草是什么颜色？", "绿色。", task_type="qa")]
    records += [rec("What is 3 plus 3?", "6", source="vendor", task_type="math")]  # a duplicate across sources
    report = check_dataset(records)
    stats = report.summary["balance"].stats
    assert stats["source"]["values"] == {"web": 18, "vendor": 2} and stats["source"]["missing"] == 1
    assert stats["language"]["values"] == {"latin": 19, "zh": 2}
    messages = [f.message for f in report.by_check("balance")]
    assert any(m.startswith("source 'web' holds 86%") for m in messages)
    assert any(m.startswith("task_type 'math' holds 90%") for m in messages)
    assert any(m.startswith("language 'latin' holds 90%") for m in messages)
    assert any("1 of 21 records carry no 'source'" in m for m in messages)
    [dup] = report.by_check("exact_duplicate")
    assert dup.details["sources"] == ["vendor", "web"] and dup.message.endswith("(sources: vendor, web)")
    balanced = [rec(f"q{i}", "a", source=("a", "b")[i % 2]) for i in range(10)]
    assert not check_dataset(balanced).by_check("balance")


# ------------------------------------------------------------------- blocks and workers


def _defective_records() -> list[Conversation]:
    """Every kind of finding at once, multi-turn records and metadata included."""
    records = [r.with_meta(source="web" if i % 3 else "books") for i, r in enumerate(CLEAN + SHARED_EXAMPLES)]
    records[2] = conv(records[2].prompt, "")
    records.append(records[0])  # an exact duplicate of 0
    records.append(conv("How do I boil an egg so the yolk stays really soft?", CLEAN[0].answer))  # near-duplicate of 0
    records.append(conv("What is the capital of Australia?", "Canberra is the capital."))
    records.append(Conversation(messages=(Message("user", "What is the capital of Australia?"),
                                          Message("assistant", "Sydney is the capital."),
                                          Message("user", "Thanks"), Message("assistant", "You are welcome."))))
    records.append(conv("Why is the sky blue?", "Because " + "very " * 12 + "much air scatters blue light."))
    return records


@pytest.mark.parametrize("block_size, workers", [(3, 1), (7, 2)])
def test_checking_in_blocks_gives_the_same_report_as_one_pass(block_size, workers):
    from evaluators.datachecks import check_source

    records = _defective_records()
    lines = [10 + 2 * i for i in range(len(records))]
    evals = [user_turn("Why do onions make people cry?")]
    whole = check_dataset(records, line_numbers=lines, eval_records=evals, block_size=len(records))
    reads = []

    def read(start, stop):
        reads.append((start, stop))
        return records[start:stop], lines[start:stop]

    blocks = check_source(read, len(records), eval_records=evals, block_size=block_size, workers=workers)
    assert blocks.to_dict() == whole.to_dict()
    assert {f.check for f in whole.findings} >= {"exact_duplicate", "near_duplicate", "conflicting_answers",
                                                 "empty_or_garbled", "train_eval_overlap"}
    if workers == 1:  # the scan read the records block by block, never all at once
        n = len(records)
        assert reads[: -(-n // block_size)] == [(s, min(s + block_size, n)) for s in range(0, n, block_size)]


def test_a_block_boundary_does_not_hide_a_duplicate_pair():
    records = list(CLEAN)
    near = conv("How do I boil an egg so the yolk stays really soft?", CLEAN[0].answer)
    records[3:3] = [CLEAN[19]]  # exact copy of 19, in the first block; the original is in the last
    records.append(near)  # near copy of 0, ten blocks later
    report = check_dataset(records, block_size=2)
    assert [f.record_indices for f in report.by_check("exact_duplicate")] == [(3, 20)]
    assert [f.record_indices for f in report.by_check("near_duplicate")] == [(0, 21)]
    assert report.by_check("near_duplicate")[0].details["keep"] == 0


def test_block_size_must_be_positive():
    with pytest.raises(ValueError, match="block_size must be at least 1, got 0"):
        check_dataset(CLEAN, block_size=0)
