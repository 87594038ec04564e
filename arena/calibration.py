"""Judges calibrated against people: how far each LLM (or reference) judge can be trusted.

`calibrate_judges(battles)` takes one list of battles holding both boards — the judge's
verdicts and the human votes, as `arena battles export` writes them — and reports, per
judge:

- **agreement with humans** on the items both rated (same question and pair), in MT-Bench's
  two settings, w/ tie and w/o tie (`arena.agreement`), with item-bootstrap CIs. A judge's
  verdicts on one item (its two orders) are first made one verdict as MT-Bench did: a
  winner only when every order names it, otherwise a tie (`judge_verdicts`);
- **human–human agreement** on double-voted items (two different reviewers), the yardstick;
- the **order-flip rate**: of the judgements seen in both orders, those whose verdicts name
  different outcomes (the service's stored `consistent` flag when there is one), Wilson CI;
- a **length-bias coefficient**: style control (`arena.style`) fitted on the judge's
  battles alone; its length coefficient (log-odds per SD of the normalised length gap;
  > 0: longer answers win more) with its bootstrap CI;
- **self-preference**, when the judge's own model (`llm:NAME` judges as NAME) is a
  candidate: that model's score in the judge's verdicts minus its score in the human votes
  on the same items, with a paired item-bootstrap CI; flagged when the CI is above 0;
- **below human agreement** (`BELOW_HUMAN_RULE`): the upper bound of the judge's w/o-tie
  agreement CI is below the human–human w/o-tie agreement — even the most favourable
  reading of the data puts the judge below how well two people agree with each other.
  A judge with no decisive verdict on the shared items (every one a tie, e.g. one that
  always prefers the first answer shown) is compared in the w/ tie setting instead.

Which board a battle is on: the service's `conv_metadata["arena"]["board"]` when present;
else a `judge` field named in `judges=` or starting with `llm:` / `reference:` is a judge;
anything else is a human vote.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence

import msgspec
import numpy as np
from scipy.stats import binomtest

from arena.agreement import Agreement, agreement, bootstrap_ratio, item_key, verdict, within_agreement
from arena.battles import Battle

JUDGE_PREFIXES = ("llm:", "reference:")
BELOW_HUMAN_RULE = (
    "below human agreement: the upper bound of the judge's 95% CI of agreement with humans (w/o tie) "
    "is below the human–human agreement (w/o tie) on double-voted battles; w/ tie when the judge has "
    "no decisive verdict on them"
)


class FlipRate(msgspec.Struct, frozen=True):
    """Judgements seen in both orders (`judged_both_orders`) and how many changed outcome
    with the order (`flipped`); `rate` and its Wilson `ci` are None with none."""

    flipped: int
    judged_both_orders: int
    rate: float | None
    ci: tuple[float, float] | None


class SelfPreference(msgspec.Struct, frozen=True):
    """The judge's own model's score (wins + half the ties) on `items` it shares with human
    votes: in the judge's verdicts, in the human votes, their `difference` and its paired
    bootstrap `ci`. `flagged` when the whole CI is above 0."""

    model: str
    items: int
    judge_win_rate: float | None
    human_win_rate: float | None
    difference: float | None
    ci: tuple[float, float] | None
    flagged: bool


class JudgeCalibration(msgspec.Struct, frozen=True):
    """One judge's report; see the module docstring. `verdicts`: its battles (both orders);
    `judgements`: after one verdict per judgement; `length_coefficient`/`length_ci` None when
    the battles have no lengths; `below_human` None when there is nothing to compare."""

    judge: str
    verdicts: int
    judgements: int
    agreement: Agreement
    flips: FlipRate
    length_coefficient: float | None
    length_ci: tuple[float, float] | None
    self_preference: SelfPreference | None
    below_human: bool | None
    notes: list[str] = []


class Calibration(msgspec.Struct, frozen=True):
    """Every judge's report, and the human–human agreement they are measured against."""

    judges: list[JudgeCalibration]
    human_agreement: Agreement
    human_votes: int
    level: float
    rule: str = BELOW_HUMAN_RULE


def board_of(battle: Battle, judges: Collection[str] = ()) -> str:
    """"judge" or "human": the service's stored board, else by the `judge` name (see the module docstring)."""
    meta = _arena_meta(battle)
    if meta.get("board") in ("human", "judge"):
        return meta["board"]
    name = battle.judge or ""
    return "judge" if name in judges or name.startswith(JUDGE_PREFIXES) else "human"


def rater_of(battle: Battle) -> str | None:
    """Who rated the battle: the service's reviewer, else FastChat's `judge` field."""
    reviewer = _arena_meta(battle).get("reviewer")
    return reviewer if isinstance(reviewer, str) else battle.judge


def judge_verdicts(battles: Iterable[Battle]) -> list[Battle]:
    """One verdict per judgement (the service's `judgement` id, else a judge on one item):
    the winner when all its verdicts name the same one, else a tie — MT-Bench's rule for a
    pair judged in both orders. Battles without a `question_id` are left out."""
    out = []
    for group in _judgements(battles).values():
        names = {verdict(b) for b in group}
        first = group[0]
        name = names.pop() if len(names) == 1 else "tie"
        winner = "model_a" if name == first.model_a else "model_b" if name == first.model_b else "tie"
        out.append(Battle(model_a=first.model_a, model_b=first.model_b, winner=winner, judge=first.judge,  # type: ignore[arg-type]
                          question_id=first.question_id, turn=first.turn))
    return out


def flip_rate(battles: Iterable[Battle], *, level: float = 0.95) -> FlipRate:
    """How often a judgement seen in both orders changed outcome with the order (a graded
    verdict's strength does not count: A>>B then A>B is consistent)."""
    seen = flipped = 0
    for group in _judgements(battles).values():
        if len({b.model_a for b in group}) < 2:
            continue
        seen += 1
        stored = [m["consistent"] for b in group if isinstance((m := _arena_meta(b)).get("consistent"), bool)]
        if stored:
            flipped += not stored[0]
        else:
            flipped += len({b.winner if b.winner.startswith("tie") else verdict(b) for b in group}) > 1
    if not seen:
        return FlipRate(0, 0, None, None)
    ci = binomtest(flipped, seen).proportion_ci(confidence_level=level, method="wilson")
    return FlipRate(flipped, seen, flipped / seen, (float(ci.low), float(ci.high)))


def calibrate_judges(
    battles: Sequence[Battle],
    *,
    judges: Collection[str] = (),
    bootstrap: int = 1000,
    seed: int | None = 0,
    level: float = 0.95,
) -> Calibration:
    """The calibration report of every judge in `battles` (both boards in one list; see
    the module docstring). `judges` names extra `judge` values to treat as judges (e.g.
    MT-Bench's `gpt4_pair`). Judges are listed by name; no judge gives an empty list."""
    humans = [b for b in battles if board_of(b, judges) == "human"]
    by_judge: dict[str, list[Battle]] = defaultdict(list)
    for b in battles:
        if board_of(b, judges) == "judge":
            by_judge[rater_of(b) or "judge"].append(b)
    human = within_agreement(humans, rater=rater_of, bootstrap=bootstrap, seed=seed, level=level)
    reports = [_calibrate(name, by_judge[name], humans, human, bootstrap, seed, level) for name in sorted(by_judge)]
    return Calibration(judges=reports, human_agreement=human, human_votes=len(humans), level=level)


# --- private helpers ---------------------------------------------------------------------


def _calibrate(name: str, own: list[Battle], humans: list[Battle], human: Agreement, rounds: int,
               seed: int | None, level: float) -> JudgeCalibration:
    notes: list[str] = []
    combined = judge_verdicts(own)
    agree = agreement(combined, humans, bootstrap=rounds, seed=seed, level=level)
    if not agree.matched:
        notes.append("no item (question + pair) was voted by humans too: no agreement to measure")
    coefficient, coefficient_ci = _length_bias(own, rounds, seed, level, notes)
    below = None
    if agree.ci_decisive is not None and human.agreement_decisive is not None:
        below = agree.ci_decisive[1] < human.agreement_decisive
    elif agree.ci is not None and human.agreement is not None:
        below = agree.ci[1] < human.agreement
        notes.append("no decisive verdict on the battles humans voted: compared with ties counted")
    if human.agreement is None:
        notes.append("no double-voted battles (one item, two reviewers): human–human agreement unknown")
    return JudgeCalibration(
        judge=name, verdicts=len(own), judgements=len(combined), agreement=agree, flips=flip_rate(own, level=level),
        length_coefficient=coefficient, length_ci=coefficient_ci,
        self_preference=_self_preference(name, combined, humans, rounds, seed, level), below_human=below, notes=notes,
    )


def _length_bias(own: list[Battle], rounds: int, seed: int | None, level: float,
                 notes: list[str]) -> tuple[float | None, tuple[float, float] | None]:
    from arena.style import style_control

    if len({m for b in own for m in (b.model_a, b.model_b)}) < 2:
        return None, None
    try:
        fit = style_control(own, bootstrap=rounds, seed=seed, level=level)
    except ValueError as exc:
        notes.append(f"no length coefficient: {exc}")
        return None, None
    if "length" not in fit.coefficients:
        notes.append("no length coefficient: the answers' lengths do not vary")
        return None, None
    return fit.coefficients["length"], fit.coefficient_ci["length"]


def _self_preference(name: str, combined: list[Battle], humans: list[Battle], rounds: int, seed: int | None,
                     level: float) -> SelfPreference | None:
    model = name.removeprefix("llm:")
    if model == name or not any(model in (b.model_a, b.model_b) for b in combined):
        return None  # not an LLM judge, or its model is not a candidate
    human_scores: dict[object, list[float]] = defaultdict(list)
    for b in humans:
        if model in (b.model_a, b.model_b):
            human_scores[item_key(b)].append(_score_of(model, b))
    judge_scores: dict[object, list[float]] = defaultdict(list)
    for b in combined:
        key = item_key(b)
        if model in (b.model_a, b.model_b) and key in human_scores:
            judge_scores[key].append(_score_of(model, b))
    keys = sorted(judge_scores, key=repr)
    if not keys:
        return SelfPreference(model, 0, None, None, None, None, False)
    j = np.array([np.mean(judge_scores[k]) for k in keys])
    h = np.array([np.mean(human_scores[k]) for k in keys])
    ci = bootstrap_ratio(j - h, np.ones(len(keys)), rounds, seed, level)
    return SelfPreference(model, len(keys), float(j.mean()), float(h.mean()), float((j - h).mean()), ci,
                          ci is not None and ci[0] > 0)


def _score_of(model: str, battle: Battle) -> float:
    return battle.score_a if battle.model_a == model else 1.0 - battle.score_a


def _judgements(battles: Iterable[Battle]) -> dict[object, list[Battle]]:
    groups: dict[object, list[Battle]] = defaultdict(list)
    for b in battles:
        key = item_key(b)
        if key is None:
            continue
        judgement = _arena_meta(b).get("judgement")
        groups[judgement if isinstance(judgement, str) else (rater_of(b), key)].append(b)
    return groups


def _arena_meta(battle: Battle) -> dict:
    meta = (battle.conv_metadata or {}).get("arena")
    return meta if isinstance(meta, dict) else {}
