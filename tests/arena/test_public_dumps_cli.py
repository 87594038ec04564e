"""The public arena dumps through the user's commands: `arena battles import|export` (all or
nothing, a batch at a time), and `arena ratings` on a dump (the streaming tally, the
mapping reader, a category)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from arena.battles import read_battles
from arena.style_metadata import STYLE_KEYS
from service.cli import cli, main
from tests.arena.dump_rows import arena_140k_rows, kaggle_rows, write_rows
from tests.redis_fixtures import settings_env


def _cli(settings, *args: str):
    return CliRunner().invoke(cli, list(args), env=settings_env(settings), catch_exceptions=False)


@pytest.mark.parametrize("name,rows", [
    ("train.csv", lambda: kaggle_rows(25)),
    ("arena.json", lambda: arena_140k_rows(25)),
    ("arena.jsonl", lambda: arena_140k_rows(25)),
    ("arena.parquet", lambda: arena_140k_rows(25)),
])
def test_import_a_public_dump_then_export_and_import_again(settings, tmp_path: Path, name: str, rows) -> None:
    source = write_rows(rows(), tmp_path / name)
    expected = read_battles(source).battles
    result = _cli(settings, "battles", "import", str(source))
    assert result.exit_code == 0 and "imported 25 battles (25 human); skipped 0 invalid" in result.stdout, result.output

    exported = tmp_path / "out.jsonl"
    assert _cli(settings, "battles", "export", str(exported)).exit_code == 0
    back = read_battles(exported).battles
    assert [(b.model_a, b.model_b, b.winner, b.question_id, b.tstamp, b.language, b.category_tag) for b in back] == [
        (b.model_a, b.model_b, b.winner, b.question_id, b.tstamp, b.language, b.category_tag) for b in expected]
    for old, new in zip(expected, back):
        assert new.answer_text("a") == old.answer_text("a")
        assert set(STYLE_KEYS) <= new.conv_metadata.keys()  # given by the dump, or computed for the export
        if old.conv_metadata:
            assert all(new.conv_metadata[k] == old.conv_metadata[k] for k in STYLE_KEYS)

    copy = settings.model_copy(update={"key_prefix": settings.key_prefix + "-copy"}) if hasattr(settings, "model_copy") else None
    if copy is not None:
        assert _cli(copy, "battles", "import", str(exported)).exit_code == 0
        again = tmp_path / "again.jsonl"
        assert _cli(copy, "battles", "export", str(again)).exit_code == 0
        assert again.read_text() == exported.read_text()


def test_import_errors_are_one_line_and_nothing_is_stored(settings, tmp_path: Path, monkeypatch, capsys) -> None:
    rows = kaggle_rows(5)
    rows[2].update(winner_model_a=0, winner_model_b=0, winner_tie=0)
    path = write_rows(rows, tmp_path / "train.csv")
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["arena", "battles", "import", str(path)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "row 3: field `winner_model_a`: expected exactly one of" in err and "--skip-invalid" in err
    exported = tmp_path / "none.json"
    assert _cli(settings, "battles", "export", str(exported)).exit_code == 0
    assert json.loads(exported.read_text()) == []  # all or nothing
    result = _cli(settings, "battles", "import", str(path), "--skip-invalid")
    assert result.exit_code == 0 and "imported 4 battles (4 human); skipped 1 invalid" in result.stdout


@pytest.mark.parametrize("name", ["arena.jsonl", "arena.parquet"])
def test_a_dump_is_imported_a_batch_at_a_time_and_still_all_or_nothing(settings, tmp_path: Path, monkeypatch, name: str) -> None:
    """`arena battles import` reads the file twice, a batch at a time (a 140k dump was
    3.1 GB held whole): first every record is checked, then the battles are logged batch by
    batch. A record refused in the last batch (a model name with a control character,
    which the store would refuse mid-import) still stops it before anything is logged, named
    by its line or row; with --skip-invalid the rest is logged, in batches."""
    from arena import battle_stream
    from service.store.arena import ArenaStore

    rows = arena_140k_rows(120)
    rows[117]["model_b"] = "evil\x1fname"
    path = write_rows(rows, tmp_path / name)
    monkeypatch.setattr(battle_stream, "BLOCK_BYTES", 16 << 10)
    monkeypatch.setattr(battle_stream, "TABLE_ROWS", 16)
    logged, real = [], ArenaStore.record_observations

    async def spy(self, votes, **kw):
        logged.append(len(votes))
        return await real(self, votes, **kw)

    monkeypatch.setattr(ArenaStore, "record_observations", spy)
    from service.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:  # the entry point prints it as one line, exit 1
        _cli(settings, "battles", "import", str(path))
    assert logged == []
    where = "line 118" if name.endswith(".jsonl") else "row 118"
    assert f"1 invalid record: {where}: model names must not contain control characters" in refused.value.message
    assert "--skip-invalid" in refused.value.message

    result = _cli(settings, "battles", "import", str(path), "--skip-invalid")
    assert result.exit_code == 0 and "imported 119 battles (119 human); skipped 1 invalid" in result.output, result.output
    assert sum(logged) == 119 and len(logged) >= 5 and max(logged) <= 40
    exported = tmp_path / "out.jsonl"
    assert _cli(settings, "battles", "export", str(exported)).exit_code == 0
    back = read_battles(exported).battles
    assert [b.question_id for b in back] == [r["id"] for k, r in enumerate(rows) if k != 117]
    # The tags computed in the check pass and reused by the logging pass are each battle's own.
    from service.prompt_categories import battle_tags

    source = [b for k, b in enumerate(read_battles(path).battles) if k != 117]  # the reader takes it; our check refuses it
    assert [b.conv_metadata["arena"]["categories"] for b in back] == [battle_tags(b) for b in source]
    assert len({tuple(t) for t in (battle_tags(b) for b in source)}) > 1


@pytest.mark.parametrize("name,rows", [("train.csv", lambda: kaggle_rows(60)), ("arena.jsonl", lambda: arena_140k_rows(60))])
def test_ratings_read_a_dump_through_the_mapping_reader(tmp_path: Path, name: str, rows) -> None:
    """`arena ratings` on a dump in JSON Lines: the streaming tally leaves a foreign time
    (ISO `timestamp`) to the reader that maps it. (A Parquet or CSV dump is streamed:
    `test_the_tally_streams_a_table_dump_as_the_mapping_reader_reads_it`.)"""
    from arena.counts import PairCounts
    from arena.tally import tally_file

    rows = rows()
    if name.endswith(".jsonl"):
        for row in rows:
            row["winner"] = "tie" if row["winner"] == "both_bad" else row["winner"]  # only the timestamp is foreign
    path = write_rows(rows, tmp_path / name)
    if name.endswith(".jsonl"):
        assert tally_file(path) is None
    counts = PairCounts.from_battles(read_battles(path).battles)
    result = CliRunner().invoke(cli, ["ratings", str(path), "--bootstrap", "0", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    votes = {row["model"]: row["votes"] for row in json.loads(result.stdout)}
    assert sum(votes.values()) == 2 * len(rows) and set(votes) == set(counts.models)


@pytest.mark.parametrize("name", ["train.csv", "train.parquet", "arena-140k.parquet", "arena-140k.csv", "times.parquet"])
def test_the_tally_streams_a_table_dump_as_the_mapping_reader_reads_it(tmp_path: Path, monkeypatch, name: str) -> None:
    """A public dump in Parquet or CSV is counted by the streaming tally (only the columns
    it needs: never a conversation), with the counts and Elo the mapping reader gives:
    the 55k's winner columns, the 140k's `both_bad` and ISO `timestamp` (naive: UTC),
    and a Parquet time column."""
    from arena import tally as tally_module
    from arena.counts import PairCounts
    from arena.elo import online_elo
    from arena.files import record_batches
    from arena.tally import tally_file

    rows = kaggle_rows(300) if name.startswith("train") else arena_140k_rows(300)
    if name == "times.parquet":  # a Parquet time column, out of order, some rows with a tstamp too
        for k, row in enumerate(rows):
            row["timestamp"] = datetime(2025, 5, 1 + (k * 7) % 28, 14, k % 60, 41)
            row["tstamp"] = 1.7e9 + k if k % 5 == 0 else None
    if name == "arena-140k.csv":  # nested columns are JSON text in a CSV
        rows = [{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()} for row in rows]
    path = write_rows(rows, tmp_path / name)
    battles = read_battles(path).battles
    asked = []
    monkeypatch.setattr(tally_module, "record_batches", lambda p, columns=None: asked.append(columns) or record_batches(p, columns))
    got = tally_file(path)
    assert got is not None and got.counts == PairCounts.from_battles(battles)
    assert got.elo == pytest.approx(online_elo(battles), abs=1e-9)
    assert not {"conversation_a", "conversation_b", "prompt", "response_a", "conv_metadata"} & set(asked[0])


@pytest.mark.parametrize("broken", ["flags", "time"])
def test_a_dump_row_the_mapping_reader_rejects_is_left_to_it(tmp_path: Path, broken: str) -> None:
    """A row the mapping reader rejects (two winner columns set, a time that is not ISO 8601)
    makes the tally step aside, so `arena ratings` names the row."""
    from arena.tally import tally_file

    rows = kaggle_rows(20) if broken == "flags" else arena_140k_rows(20)
    if broken == "flags":
        rows[7]["winner_model_b"] = rows[7]["winner_model_a"] = 1
    else:
        rows[7]["timestamp"] = "yesterday"
    path = write_rows(rows, tmp_path / "dump.parquet")
    assert tally_file(path) is None
    result = CliRunner().invoke(cli, ["ratings", str(path), "--bootstrap", "0"])
    assert result.exit_code != 0 and "row 8" in str(result.exception), result.exception


def test_a_category_of_a_dump_is_read_batch_by_batch_keeping_only_its_battles(tmp_path: Path, monkeypatch) -> None:
    """`arena ratings DUMP --category TAG` holds a few thousand rows at a time and keeps only
    the category's battles, without their conversations (a 140k dump was 3.2 GB whole)."""
    from arena import battle_stream as battles_module
    from service.cli.ratings import _InCategory

    rows = arena_140k_rows(300)
    path = write_rows(rows, tmp_path / "dump.parquet")
    asked = []
    real = battles_module.record_batches
    monkeypatch.setattr(battles_module, "record_batches", lambda p, columns=None, **kw: asked.append(kw) or real(p, columns, **kw))
    kept = read_battles(path, keep=lambda b: b if b.language == "de" else None).battles
    assert [b.question_id for b in kept] == [r["id"] for r in rows if r["language"] == "de"]
    assert asked and asked[0]["batch_rows"] <= 4096
    every = read_battles(path).battles
    in_category = _InCategory("task_type=math", slim=True)
    slim = [b for b in map(in_category, every) if b is not None]
    assert slim and all(b.conversation_a is None and b.category_tag is None for b in slim)
    assert [(b.model_a, b.model_b, b.winner, b.tstamp) for b in slim] == [
        (b.model_a, b.model_b, b.winner, b.tstamp) for b, r in zip(every, rows) if r["category_tag"]["math_v0.1"]["math"]]
    assert _InCategory("task_type=math", slim=False)(every[1]) is every[1]
