"""How often two sets of verdicts on the same battles agree (judge vs human, judge vs judge)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from arena.battles import Battle


class Agreement(msgspec.Struct, frozen=True):
    """How often two sets of verdicts on the same battles agree.

    `agreement` counts a tie as its own outcome; `agreement_decisive` looks only at battles
    both sides decided (no tie) — the number usually quoted for judge-vs-human agreement."""

    matched: int
    agreement: float | None
    decisive: int
    agreement_decisive: float | None


def agreement(battles_a: Iterable[Battle], battles_b: Iterable[Battle]) -> Agreement:
    """Agreement between two verdict sets on the same battles, matched by `question_id`
    (records without one are ignored). Verdicts are compared by the winning model's name,
    so a judge that saw the answers in swapped order still matches. When one id has several
    verdicts on a side (a judge asked in both orders), every cross pair counts equally."""
    verdicts_a = _verdicts_by_id(battles_a)
    verdicts_b = _verdicts_by_id(battles_b)
    shared = sorted(verdicts_a.keys() & verdicts_b.keys())
    total = decisive_total = 0.0
    agree = decisive_agree = 0.0
    decisive_ids = 0
    for key in shared:
        pairs = [(x, y) for x in verdicts_a[key] for y in verdicts_b[key]]
        total += 1
        agree += sum(x == y for x, y in pairs) / len(pairs)
        decisive = [(x, y) for x, y in pairs if x != "tie" and y != "tie"]
        if decisive:
            decisive_ids += 1
            decisive_total += 1
            decisive_agree += sum(x == y for x, y in decisive) / len(decisive)
    return Agreement(
        matched=len(shared),
        agreement=agree / total if total else None,
        decisive=decisive_ids,
        agreement_decisive=decisive_agree / decisive_total if decisive_total else None,
    )


def _verdicts_by_id(battles: Iterable[Battle]) -> dict[str, list[str]]:
    verdicts: dict[str, list[str]] = defaultdict(list)
    for b in battles:
        if b.question_id is None:
            continue
        winner = b.model_a if b.winner == "model_a" else b.model_b if b.winner == "model_b" else "tie"
        verdicts[b.question_id].append(winner)
    return verdicts
