"""How fragile is each rank: planted decisive votes are found, the count is the true minimum
on small boards (brute force), and the CLI and JSON show it."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import msgspec
import numpy as np
import pytest

from arena.battles import Battle, write_battles
from arena.counts import PairCounts
from arena.fragility import Removal, _without, adjacent_flips, flip
from arena.ratings import bradley_terry, leaderboard

PLANTED = 3


def planted_battles() -> list[Battle]:
    """`b` ahead of `a` by one vote head to head, both even against `c`; then three planted
    votes of `a` beating `b` put `a` on top."""
    battles = []
    t = 1.7e9

    def add(x, y, winner, n):
        nonlocal t
        for _ in range(n):
            battles.append(Battle(model_a=x, model_b=y, winner=winner, tstamp=t, question_id=f"q{len(battles)}"))
            t += 1

    add("a", "b", "model_a", 50)
    add("a", "b", "model_b", 51)
    for m in ("a", "b"):
        add(m, "c", "model_a", 40)
        add(m, "c", "model_b", 40)
    add("a", "b", "model_a", PLANTED)  # the planted votes, last in the file
    return battles


def rating_of(counts: PairCounts) -> dict[str, float]:
    fit = bradley_terry(counts)
    return dict(zip(fit.models, fit.ratings))


def test_planted_decisive_votes_are_found():
    counts = PairCounts.from_battles(planted_battles())
    ratings = rating_of(counts)
    assert ratings["a"] > ratings["b"]
    result = flip(counts, "a", "b")
    assert result.confirmed and result.votes == PLANTED
    assert result.removals == [Removal("a", "b", "model_a", PLANTED)]  # a's wins over b, nothing else
    after = rating_of(_without(counts, result.removals))
    assert after["b"] > after["a"]
    fewer = rating_of(_without(counts, [Removal("a", "b", "model_a", PLANTED - 1)]))
    assert fewer["a"] >= fewer["b"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_count_is_the_smallest_removal_on_small_boards(seed):
    """Against brute force over every combination of removals from each (pair, outcome)."""
    rng = np.random.default_rng(seed)
    counts = PairCounts()
    strength = {"a": 0.3, "b": 0.2, "c": -0.5}
    for _ in range(60):
        x, y = rng.choice(list(strength), 2, replace=False)
        p = 1 / (1 + np.exp(strength[y] - strength[x]))
        counts.add(str(x), str(y), "model_a" if rng.random() < p else "model_b")
    order = [m for m, _ in sorted(rating_of(counts).items(), key=lambda kv: -kv[1])]
    upper, lower = order[0], order[1]
    classes = [(p.model_a, p.model_b, w, n) for p in counts.pairs()
               for w, n in (("model_a", p.wins_a), ("model_b", p.wins_b)) if n]
    best = None
    for take in itertools.product(*[range(n + 1) for *_, n in classes]):
        total = sum(take)
        if best is not None and total >= best:
            continue
        removals = [Removal(a, b, w, k) for (a, b, w, _), k in zip(classes, take) if k]
        if total and (r := rating_of(_without(counts, removals)))[lower] > r[upper]:
            best = total
    assert flip(counts, upper, lower).votes == best


def test_every_adjacent_pair_on_the_board_and_the_last_row():
    counts = PairCounts.from_battles(planted_battles())
    board = leaderboard(counts, bootstrap=0)
    order = [r.model for r in board.rows]
    assert order[0] == "a" and board.rows[-1].flip_votes is None
    for upper, lower, row in zip(order, order[1:], board.rows):
        assert row.flip_votes == flip(counts, upper, lower).votes > 0
    assert list(adjacent_flips(counts, order)) == order[:-1]


def test_ordering_only_the_most_influential_votes_changes_nothing(monkeypatch):
    """A flip orders only the head of the vote classes (`_HEAD`) and takes the whole order
    when the head does not close the gap or a refit needs more votes: the same counts,
    estimates and removals as ordering everything, down to a head of one class."""
    from arena import fragility

    rng = np.random.default_rng(7)
    strength = np.linspace(2.0, -2.0, 12)
    counts = PairCounts()
    for _ in range(3000):
        x, y = rng.choice(12, 2, replace=False)
        u = rng.random()
        p = 1 / (1 + np.exp(strength[y] - strength[x]))
        counts.add(f"m{x}", f"m{y}", "tie" if u < 0.1 else "model_a" if u < 0.1 + 0.9 * p else "model_b")
    order = [m for m, _ in sorted(rating_of(counts).items(), key=lambda kv: -kv[1])]
    monkeypatch.setattr(fragility, "_HEAD", 10**9)
    whole = adjacent_flips(counts, order)
    assert any(f.votes and f.votes > 40 for f in whole.values())  # some flips need more than a head of 1-2 classes
    for head in (1, 2, 5):
        monkeypatch.setattr(fragility, "_HEAD", head)
        assert adjacent_flips(counts, order) == whole


def test_cli_explains_which_votes_would_flip_the_order(tmp_path):
    path = tmp_path / "battles.jsonl"
    battles = planted_battles()
    write_battles(path, battles)
    table = subprocess.run([sys.executable, "-m", "service.cli.__main__", "ratings", str(path), "--bootstrap", "0"],
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert "Flip" in table.stdout
    explained = subprocess.run([sys.executable, "-m", "service.cli.__main__", "ratings", "explain", str(path), "a", "b",
                                "--json"], capture_output=True, text=True, timeout=120)
    assert explained.returncode == 0, explained.stderr
    result = json.loads(explained.stdout)
    assert result["votes"] == PLANTED and result["confirmed"]
    # The listed battles are the planted ones: the latest votes of that pair and outcome.
    assert [b["index"] for b in result["battles"]] == list(range(len(battles) - 1, len(battles) - 1 - PLANTED, -1))
    text = subprocess.run([sys.executable, "-m", "service.cli.__main__", "ratings", "explain", str(path), "a", "b"],
                          capture_output=True, text=True, timeout=120)
    assert f"removing {PLANTED} of {len(battles)} votes rates b above a" in text.stdout and "3 × a beat b" in text.stdout
    missing = subprocess.run([sys.executable, "-m", "service.cli.__main__", "ratings", "explain", str(path), "a", "zz"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "'zz' is not in" in missing.stderr


def test_explain_reads_the_file_in_batches_and_numbers_battles_as_the_whole_file(tmp_path, monkeypatch):
    """`arena ratings explain` holds only the counts and the listed battles: the counts from
    the file's batches, then one more pass for the removed votes' battles, numbered by their
    place among the valid battles (malformed lines skipped), latest first, as when the
    whole file was held; swapped sides of the same vote count as that vote."""
    from click.testing import CliRunner

    from arena import battle_stream
    from service.cli import cli

    battles = planted_battles()
    lines = [msgspec.json.encode(b).decode() for b in battles]
    lines.insert(5, '{"model_a": "a", "winner": "tie"}')  # malformed: skipped, not numbered
    lines.insert(60, "not json")
    # One planted vote written with the sides swapped: b "lost" to a, the same vote.
    lines[-2] = msgspec.json.encode(msgspec.structs.replace(battles[-2], model_a="b", model_b="a", winner="model_b")).decode()
    path = tmp_path / "battles.jsonl"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(battle_stream, "BLOCK_BYTES", 512)
    result = CliRunner().invoke(cli, ["ratings", "explain", str(path), "a", "b", "--json", "--skip-invalid"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "skipped 2 invalid records" in result.stderr
    explained = json.loads(result.stdout)
    assert explained["votes"] == PLANTED
    n = len(battles)
    assert [(b["index"], b["model_a"], b["winner"]) for b in explained["battles"]] == [
        (n - 1, "a", "model_a"), (n - 2, "b", "model_b"), (n - 3, "a", "model_a")]
