"""Battle files: FastChat's schema in, the same schema out, and bad records named precisely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arena.battles import (
    Battle,
    BattleFormatError,
    Turn,
    agreement,
    encode_battles,
    parse_battles,
    read_battles,
    validate_battles,
    write_battles,
)

SAMPLE = Path("/work/shared/data/battles_fastchat.json")


def _record(**overrides: object) -> dict:
    record = {"model_a": "a", "model_b": "b", "winner": "model_a"}
    record.update(overrides)
    return record


def test_reads_fastchat_sample_file() -> None:
    loaded = read_battles(SAMPLE)
    assert [b.winner for b in loaded.battles] == ["model_b", "model_a", "tie", "tie (bothbad)"]
    first = loaded.battles[0]
    assert (first.model_a, first.model_b, first.judge, first.anony) == ("lora-r8", "lora-r16", "reviewer-1", True)
    assert first.tstamp == 1763700000.0
    assert loaded.skipped == []


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_write_then_read_round_trips(tmp_path: Path, suffix: str) -> None:
    battles = read_battles(SAMPLE).battles + [
        Battle(
            model_a="x",
            model_b="y",
            winner="tie",
            question_id="q1",
            conversation_a=[Turn(role="user", content="hi"), Turn(role="assistant", content="hello")],
            answer_b="hey",
            length_a=5,
            length_b=3,
        )
    ]
    path = tmp_path / f"battles{suffix}"
    write_battles(path, battles)
    text = path.read_text()
    if suffix == ".jsonl":
        assert len(text.splitlines()) == len(battles)
    else:
        assert isinstance(json.loads(text), list)
    assert read_battles(path).battles == battles


def test_jsonl_and_array_give_the_same_battles() -> None:
    records = [_record(), _record(winner="tie", tstamp=3)]
    as_array = parse_battles(json.dumps(records))
    as_lines = parse_battles("\n".join(json.dumps(r) for r in records) + "\n")
    assert as_array.battles == as_lines.battles
    assert as_array.battles[1].tstamp == 3.0


def test_unknown_fields_are_ignored_and_conversations_parsed() -> None:
    record = _record(
        openai_moderation={"flagged": False},
        conversation_a=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "long answer"}],
        conversation_b=[{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "image"}]}],
    )
    battle = parse_battles(json.dumps([record])).battles[0]
    assert battle.answer_text("a") == "long answer"
    assert battle.answer_text("b") == ""  # non-text content is not an answer
    assert b"openai_moderation" not in encode_battles([battle])


def test_every_malformed_record_is_named_by_index_and_field() -> None:
    records = [
        _record(),
        {"model_a": "a", "model_b": "b"},
        _record(winner="a"),
        _record(model_a=3),
        _record(model_b="a"),
        "not an object",
        _record(tstamp="yesterday"),
    ]
    with pytest.raises(BattleFormatError) as info:
        parse_battles(json.dumps(records))
    errors = {(e.index, e.field) for e in info.value.errors}
    assert errors == {(1, "winner"), (2, "winner"), (3, "model_a"), (4, "model_b"), (5, None), (6, "tstamp")}
    message = str(info.value)
    assert message.startswith("6 invalid records: record 1: field `winner`: missing (required)")
    assert "'a' is not one of model_a, model_b, tie, tie (bothbad)" in message
    assert "and 3 more" in message


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "votes.jsonl"
    path.write_text(json.dumps(_record()) + "\n\n" + '{"model_a": "a", "model_b": "b", "winner": "tie"\n' + json.dumps(_record(winner="b")) + "\n")
    with pytest.raises(BattleFormatError) as info:
        read_battles(path)
    assert [(e.line, e.field) for e in info.value.errors] == [(3, None), (4, "winner")]
    assert str(info.value).startswith(f"{path}: 2 invalid records: line 3: not valid JSON")


def test_skip_invalid_keeps_the_good_records_and_counts_the_rest() -> None:
    records = [_record(), _record(winner="nobody"), _record(model_a="c", model_b="d", winner="tie")]
    loaded = parse_battles(json.dumps(records), skip_invalid=True)
    assert [b.model_a for b in loaded.battles] == ["a", "c"]
    assert [(e.index, e.field) for e in loaded.skipped] == [(1, "winner")]


def test_broken_json_array_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    with pytest.raises(BattleFormatError, match="not valid JSON"):
        parse_battles('[{"model_a": "a", ', skip_invalid=True)
    path = tmp_path / "cut.json"
    path.write_text('[{"model_a": "a", ')
    with pytest.raises(BattleFormatError, match=f"^{path}: 1 invalid record: .*not valid JSON"):  # says which file
        read_battles(path, skip_invalid=True)


def test_an_overnested_line_is_one_invalid_record_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(_record()) + "\n" + '{"model_a": ' + "[" * 100_000 + "\n" + json.dumps(_record(winner="tie")) + "\n")
    with pytest.raises(BattleFormatError) as info:
        read_battles(path)
    assert [(e.line, e.message) for e in info.value.errors] == [(2, "nested too deeply to read")]
    loaded = read_battles(path, skip_invalid=True)
    assert len(loaded.battles) == 2 and [e.line for e in loaded.skipped] == [2]


def test_a_document_that_is_not_battles_is_rejected() -> None:
    with pytest.raises(BattleFormatError, match="expected a JSON array of battles or JSON Lines"):
        parse_battles("model_a,model_b,winner\n")


def test_empty_input_has_no_battles() -> None:
    assert parse_battles(b"").battles == []
    assert parse_battles("[]").battles == []


def test_validate_battles_checks_decoded_records() -> None:
    loaded = validate_battles([_record(), _record(model_a="")], skip_invalid=True)
    assert len(loaded.battles) == 1
    assert loaded.skipped[0].describe() == "record 1: field `model_a`: empty model name"


def test_agreement_matches_verdicts_by_question_id_whatever_the_order() -> None:
    human = [
        Battle(model_a="x", model_b="y", winner="model_a", question_id="1"),
        Battle(model_a="x", model_b="y", winner="model_b", question_id="2"),
        Battle(model_a="x", model_b="y", winner="tie", question_id="3"),
        Battle(model_a="x", model_b="y", winner="model_a", question_id="4"),
    ]
    judge = [
        Battle(model_a="y", model_b="x", winner="model_b", question_id="1"),  # swapped sides, same verdict
        Battle(model_a="x", model_b="y", winner="model_a", question_id="2"),  # disagrees
        Battle(model_a="x", model_b="y", winner="tie", question_id="3"),
        Battle(model_a="x", model_b="y", winner="model_a", question_id="9"),  # no human verdict
    ]
    result = agreement(human, judge)
    assert result.matched == 3
    assert result.agreement == pytest.approx(2 / 3)
    assert result.decisive == 2
    assert result.agreement_decisive == pytest.approx(1 / 2)
    assert agreement([], judge).agreement is None
