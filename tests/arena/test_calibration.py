"""Judges calibrated against people: planted judges (faithful, careless, length-biased,
position-biased, self-preferring) found by `arena.calibration` and `arena ratings calibration`;
graded Arena-Hard verdicts and their weight; AlpacaEval's length-controlled win rate."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from arena.agreement import agreement, within_agreement
from arena.battles import Battle, write_battles
from arena.calibration import calibrate_judges, judge_verdicts
from arena.counts import PairCounts
from arena.judge import STRONG_WEIGHT, LLMJudge, judge_both_orders, parse_graded_verdict, parse_verdict
from arena.length_control import length_controlled_win_rates
from service.cli import cli, main

MODELS = ["m0", "m1", "m2", "m3"]
STRENGTH = np.array([0.6, 0.2, -0.2, -0.6])


class Item:
    """One question between two models: who is truly better, and the answers' lengths."""

    def __init__(self, qid: str, a: str, b: str, truth: str, length_a: int, length_b: int) -> None:
        self.qid, self.a, self.b, self.truth = qid, a, b, truth
        self.length_a, self.length_b = length_a, length_b

    def battle(self, winner_name: str, judge: str, *, swap: bool = False) -> Battle:
        a, b, la, lb = (self.b, self.a, self.length_b, self.length_a) if swap else (self.a, self.b, self.length_a, self.length_b)
        winner = "model_a" if winner_name == a else "model_b" if winner_name == b else "tie"
        return Battle(model_a=a, model_b=b, winner=winner, judge=judge, question_id=self.qid, length_a=la, length_b=lb)  # type: ignore[arg-type]

    def other(self, name: str) -> str:
        return self.b if name == self.a else self.a


def simulate(n_items: int = 300, seed: int = 0) -> tuple[list[Item], list[Battle]]:
    """Items and two human votes on each (reviewers alice/bob/carol), each right 95% of the time."""
    rng = np.random.default_rng(seed)
    items, humans = [], []
    for q in range(n_items):
        i, j = rng.choice(len(MODELS), size=2, replace=False)
        truth = MODELS[i] if rng.random() < 1 / (1 + np.exp(STRENGTH[j] - STRENGTH[i])) else MODELS[j]
        item = Item(f"q{q}", MODELS[i], MODELS[j], truth, int(rng.integers(50, 800)), int(rng.integers(50, 800)))
        items.append(item)
        for reviewer in rng.choice(["alice", "bob", "carol"], size=2, replace=False):
            name = truth if rng.random() < 0.95 else item.other(truth)
            humans.append(item.battle(name, str(reviewer), swap=bool(rng.random() < 0.5)))
    return items, humans


def judge_battles(items: list[Item], name: str, pick: Callable[[Item, np.random.Generator], str], seed: int = 1,
                  *, position: str | None = None) -> list[Battle]:
    """A judge's verdicts on every item in both orders; `pick` chooses the winner once per
    item (so the two orders agree), unless `position` ("a") makes it pick the first shown."""
    rng = np.random.default_rng(seed)
    out = []
    for item in items:
        winner = pick(item, rng)
        for swap in (False, True):
            shown_first = item.b if swap else item.a
            out.append(item.battle(shown_first if position == "a" else winner, name, swap=swap))
    return out


def truthful(p: float) -> Callable[[Item, np.random.Generator], str]:
    return lambda item, rng: item.truth if rng.random() < p else item.other(item.truth)


def longer(p: float) -> Callable[[Item, np.random.Generator], str]:
    def pick(item: Item, rng: np.random.Generator) -> str:
        long, short = (item.a, item.b) if item.length_a >= item.length_b else (item.b, item.a)
        return long if rng.random() < p else short
    return pick


def self_preferring(model: str) -> Callable[[Item, np.random.Generator], str]:
    return lambda item, rng: model if model in (item.a, item.b) and rng.random() < 0.9 else item.truth


@pytest.fixture(scope="module")
def planted() -> list[Battle]:
    items, humans = simulate()
    judges = [
        judge_battles(items, "llm:faithful", truthful(0.95)),   # ~90% agreement with the humans
        judge_battles(items, "llm:careless", truthful(0.55)),   # ~55%
        judge_battles(items, "llm:verbose", longer(0.9)),
        judge_battles(items, "llm:flipper", truthful(1.0), position="a"),
        judge_battles(items, "llm:m1", self_preferring("m1")),
    ]
    return humans + [b for j in judges for b in j]


@pytest.fixture(scope="module")
def report(planted: list[Battle]):
    return {j.judge: j for j in calibrate_judges(planted, bootstrap=300, seed=0).judges}


def test_a_careless_judge_is_marked_below_human_agreement_and_a_faithful_one_is_not(planted, report) -> None:
    human = calibrate_judges(planted, bootstrap=300).human_agreement
    assert human.matched == 300 and 0.85 < human.agreement_decisive < 0.95
    faithful, careless = report["llm:faithful"], report["llm:careless"]
    assert faithful.agreement.matched == 300 and faithful.judgements == 300 and faithful.verdicts == 600
    assert 0.85 < faithful.agreement.agreement_decisive < 0.95
    assert 0.45 < careless.agreement.agreement_decisive < 0.65
    assert careless.agreement.ci_decisive[1] < human.agreement_decisive
    assert careless.below_human is True and faithful.below_human is False


def test_length_bias_is_clearly_positive_for_a_verbose_judge_and_near_zero_otherwise(report) -> None:
    verbose, faithful = report["llm:verbose"], report["llm:faithful"]
    assert verbose.length_coefficient > 1.0 and verbose.length_ci[0] > 0.5
    assert abs(faithful.length_coefficient) < 0.25
    assert faithful.length_ci[0] < 0 < faithful.length_ci[1]


def test_flip_rate_counts_verdicts_that_change_with_the_order(report) -> None:
    assert report["llm:flipper"].flips.flipped == 300 and report["llm:flipper"].flips.rate == 1.0
    assert report["llm:faithful"].flips.flipped == 0 and report["llm:faithful"].flips.judged_both_orders == 300
    assert report["llm:faithful"].flips.ci[1] < 0.05
    # MT-Bench's rule: an order-dependent verdict is a tie, so none of its pairs is decisive.
    assert report["llm:flipper"].agreement.decisive_pairs == 0
    # ... so it is compared with ties counted, where it never agrees with anyone.
    assert report["llm:flipper"].agreement.agreement == 0.0 and report["llm:flipper"].below_human is True


def test_a_self_preferring_judge_is_flagged_and_an_unrelated_one_is_not(report) -> None:
    preferring = report["llm:m1"].self_preference
    assert preferring.model == "m1" and preferring.flagged and preferring.ci[0] > 0.2
    assert report["llm:faithful"].self_preference is None  # its model is not a candidate


def test_agreement_counts_pairs_with_and_without_ties_as_fastchat() -> None:
    human = [Battle(model_a="x", model_b="y", winner=w, judge=r, question_id="1")  # type: ignore[arg-type]
             for w, r in (("model_a", "h1"), ("tie", "h2"), ("tie (bothbad)", "h3"))]
    judge = [Battle(model_a="y", model_b="x", winner="model_b", question_id="1", turn=1)]  # x wins, other order; no turn is turn 1
    result = agreement(judge, human)
    assert (result.pairs, result.agreement) == (3, pytest.approx(1 / 3))
    assert (result.decisive_pairs, result.agreement_decisive) == (1, 1.0)
    within = within_agreement(human)  # h2 and h3 agree: both kinds of tie are one outcome
    assert (within.pairs, within.agreement, within.decisive_pairs) == (3, pytest.approx(1 / 3), 0)


def test_judge_verdicts_combine_two_orders_as_mt_bench() -> None:
    same = [Battle(model_a="x", model_b="y", winner="model_a", question_id="1"),
            Battle(model_a="y", model_b="x", winner="model_b", question_id="1")]
    split = [Battle(model_a="x", model_b="y", winner="model_a", question_id="2"),
             Battle(model_a="y", model_b="x", winner="model_a", question_id="2")]
    combined = {b.question_id: b for b in judge_verdicts(same + split)}
    assert combined["1"].winner == "model_a" and combined["1"].model_a == "x"
    assert combined["2"].winner == "tie"


@pytest.mark.parametrize(("reply", "expected"), [
    ("My final verdict is: [[A>>B]]", ("a", 3)),
    ("[[A>B]]", ("a", 1)),
    ("tie: [[A=B]]", ("tie", 1)),
    ("[[B>A]]", ("b", 1)),
    ("[[B>>A]]", ("b", 3)),
    ("[[A<<B]]", ("b", 3)),
    ("[[B<A]]", ("a", 1)),
    ("[[C]]", ("tie", 1)),
    ("[[A>>B]] or maybe [[A>B]]", None),
    ("[[A>A]]", None),
    ("no verdict", None),
])
def test_graded_verdicts_parse_all_five_forms(reply: str, expected) -> None:
    assert parse_graded_verdict(reply) == expected


def test_plain_verdicts_still_parse_and_graded_labels_need_the_option() -> None:
    assert parse_verdict("[[A]]") == "a" and parse_verdict("[[D]]", allow_both_bad=True) == "both_bad"
    assert parse_verdict("[[A>>B]]") is None and parse_verdict("[[A>>B]]", graded=True) == "a"


class _Scripted:
    name = "llm:scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.seen = list(replies), []

    def complete(self, messages: list[dict[str, str]]) -> str:
        self.seen.append(messages)
        return self.replies.pop(0)


def test_a_strong_graded_verdict_counts_as_three_battles() -> None:
    client = _Scripted(["Assistant A is far better. [[A>>B]]", "They are close. [[B>A]]"])
    pair = judge_both_orders(LLMJudge(client, graded=True), question="q", model_x="x", answer_x="good",
                             model_y="y", answer_y="bad")
    assert "[[A>>B]]" in client.seen[0][0]["content"] and "[[B>>A]]" in client.seen[0][0]["content"]
    assert [b.weight for b in pair.observations] == [STRONG_WEIGHT, None] and pair.consistent is True
    counts = PairCounts.from_battles(pair.observations)
    assert counts.pair("x", "y").wins_a == 3 + 1 and counts.n_battles == 4


def test_lc_win_rate_is_near_half_for_a_model_that_wins_by_length_only() -> None:
    rng = np.random.default_rng(0)
    battles = []
    for _ in range(500):
        long, base = int(rng.integers(300, 1200)), int(rng.integers(100, 600))
        p = 1 / (1 + np.exp(-3 * np.tanh((long - base) / 300)))  # wins explained by length alone
        battles.append(Battle(model_a="verbose", model_b="base", winner="model_a" if rng.random() < p else "model_b",
                              length_a=long, length_b=base))
        own, base = int(rng.integers(100, 600)), int(rng.integers(100, 600))
        battles.append(Battle(model_a="base", model_b="good", winner="model_b" if rng.random() < 0.75 else "model_a",
                              length_a=base, length_b=own))
    rows = {r.model: r for r in length_controlled_win_rates(battles, "base", bootstrap=200)}
    assert rows["verbose"].win_rate > 0.8 and rows["verbose"].ci[0] < 0.5 < rows["verbose"].ci[1]
    assert abs(rows["verbose"].lc_win_rate - 0.5) < 0.12 and rows["verbose"].length_coefficient > 1
    assert rows["good"].lc_win_rate == pytest.approx(rows["good"].win_rate, abs=0.03) and rows["good"].ci[0] > 0.65


# --- through the CLI ----------------------------------------------------------------------


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["arena", "ratings", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return int(code), captured.out, captured.err


def test_cli_calibration_marks_the_careless_judge(tmp_path: Path, planted: list[Battle], report) -> None:
    path = tmp_path / "battles.jsonl"
    write_battles(path, planted)
    result = CliRunner().invoke(cli, ["ratings", "calibration", str(path), "--bootstrap", "300", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    judges = {j["judge"]: j for j in json.loads(result.stdout)["judges"]}
    assert judges["llm:careless"]["below_human"] is True and judges["llm:faithful"]["below_human"] is False
    assert judges["llm:careless"]["agreement"]["agreement_decisive"] == report["llm:careless"].agreement.agreement_decisive
    text = CliRunner().invoke(cli, ["ratings", "calibration", str(path), "--bootstrap", "100"], catch_exceptions=False).stdout
    careless = text.split("llm:careless:")[1].split("\n\n")[0]
    assert "BELOW HUMAN AGREEMENT" in careless and "w/o tie" in careless and "order flips: 0 of 300" in careless
    assert "BELOW HUMAN" not in text.split("llm:faithful:")[1].split("\n\n")[0]
    assert "SELF-PREFERRING" in text.split("llm:m1:")[1].split("\n\n")[0] and "length coefficient: +" in text


def test_cli_calibration_one_line_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    code, _, err = run_main(monkeypatch, capsys, "calibration", str(tmp_path / "missing.jsonl"))
    assert code != 0 and err.strip().count("\n") == 0 and "no such file" in err
    path = tmp_path / "humans.jsonl"
    write_battles(path, [Battle(model_a="x", model_b="y", winner="model_a", judge="alice", question_id="1")])
    code, _, err = run_main(monkeypatch, capsys, "calibration", str(path))
    assert code != 0 and "no judge verdicts" in err and err.strip().count("\n") == 0


def test_cli_lc_baseline(tmp_path: Path, monkeypatch, capsys) -> None:
    battles = [Battle(model_a="long", model_b="base", winner="model_a" if k % 4 else "model_b", length_a=400 + k, length_b=100 + k % 7)
               for k in range(40)]
    path = tmp_path / "lc.jsonl"
    write_battles(path, battles)
    result = CliRunner().invoke(cli, ["ratings", str(path), "--bootstrap", "50", "--lc-baseline", "base", "--json"], catch_exceptions=False)
    rows = {r["model"]: r for r in json.loads(result.stdout)}
    direct = length_controlled_win_rates(battles, "base", bootstrap=50)[0]
    assert rows["long"]["lc_win_rate"] == direct.lc_win_rate and rows["base"]["lc_win_rate"] == 0.5
    text = CliRunner().invoke(cli, ["ratings", str(path), "--bootstrap", "50", "--lc-baseline", "base"], catch_exceptions=False).stdout
    assert "length-controlled win rate against base" in text and "raw 75.0%" in text
    code, _, err = run_main(monkeypatch, capsys, str(path), "--lc-baseline", "nobody")
    assert code != 0 and "has no battles" in err and err.strip().count("\n") == 0


def test_weighted_battles_count_the_same_through_the_file_reader(tmp_path: Path) -> None:
    battles = [Battle(model_a="x", model_b="y", winner="model_a", weight=STRONG_WEIGHT),
               Battle(model_a="y", model_b="x", winner="model_a"), Battle(model_a="x", model_b="y", winner="tie")]
    path = tmp_path / "weighted.jsonl"
    write_battles(path, battles)
    rows = json.loads(CliRunner().invoke(cli, ["ratings", str(path), "--bootstrap", "0", "--json"], catch_exceptions=False).stdout)
    assert {r["model"]: r["votes"] for r in rows} == {"x": 5, "y": 5}
    assert {r["model"]: r["win_rate"] for r in rows}["x"] == pytest.approx(3.5 / 5)
    assert PairCounts.from_battles(battles).pair("x", "y").wins_a == 3
