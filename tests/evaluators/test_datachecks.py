"""Dataset checks stay silent on clean data, attribute every planted defect at once, and
give the same report in blocks and in parallel."""

from __future__ import annotations

import json

import pytest

from evaluators.datachecks import CHECKS, CheckConfig, check_dataset
from evaluators.records import Conversation, Message, user_turn
from evaluators.synthetic import make_synthetic_dataset
from tests.evaluators.datachecks_data import CLEAN, SHARED_EXAMPLES, conv


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


def test_a_check_that_fails_leaves_no_near_duplicate_search_running(monkeypatch):
    """The near-duplicate search runs in a forked process beside the other checks; when one
    of them raises, that process is killed, not left running (a CLI would wait for it at
    exit, a worker would keep it for good)."""
    import multiprocessing
    import time

    from evaluators import datachecks

    searching = multiprocessing.get_context("fork").Event()

    def slow_search(ctx):
        searching.set()
        time.sleep(600)

    def broken(ctx):
        assert searching.wait(30)
        raise RuntimeError("a check failed")

    monkeypatch.setattr(datachecks, "_near_duplicates", slow_search)
    monkeypatch.setattr(datachecks, "_refusal_rate", broken)
    records = _defective_records()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="a check failed"):
        datachecks.check_source(lambda a, b: (records[a:b], None), len(records), block_size=3, workers=2)
    assert multiprocessing.active_children() == []
    assert time.monotonic() - started < 60
