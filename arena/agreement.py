"""How often two raters agree on the same battles, counted as MT-Bench counts it.

FastChat's `fastchat/llm_judge/compute_agreement.py` is the reference: verdicts are matched
by question and unordered model pair (and turn), each verdict oriented by the winning
model's name, so a judge that saw the answers in the other order still matches; the two
kinds of tie are one outcome. Two settings are reported:

- **w/ tie**: every compared pair of verdicts counts; a tie agrees only with a tie.
- **w/o tie**: pairs where either verdict is a tie are left out.

The figure is agreeing pairs / compared pairs over all matched items (not an average of
per-item rates), as FastChat's. Confidence intervals come from a bootstrap that redraws
items (question + pair), not single verdicts: verdicts on one item are not independent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import msgspec
import numpy as np

if TYPE_CHECKING:  # a runtime import would be circular: `arena.battles` re-exports this module
    from arena.battles import Battle

#: A matched item: (question_id, turn, lower model name, higher model name).
ItemKey = tuple[str, int, str, str]


class Agreement(msgspec.Struct, frozen=True):
    """Agreement between two verdict sets (or within one, between different raters).

    `matched`: items (question + pair) compared; `agreement`: the w/ tie rate over `pairs`
    compared verdict pairs; `decisive`: items with at least one pair neither side called
    a tie; `agreement_decisive`: the w/o tie rate over `decisive_pairs`. Rates are None
    when nothing was compared. `ci`/`ci_decisive`: bootstrap intervals over items (None
    without a bootstrap)."""

    matched: int
    agreement: float | None
    decisive: int
    agreement_decisive: float | None
    pairs: int = 0
    decisive_pairs: int = 0
    ci: tuple[float, float] | None = None
    ci_decisive: tuple[float, float] | None = None


def item_key(battle: Battle) -> ItemKey | None:
    """The item a verdict is about: question, turn (none given is turn 1) and unordered
    pair; None without a `question_id`."""
    if battle.question_id is None:
        return None
    lo, hi = sorted((battle.model_a, battle.model_b))
    return (battle.question_id, battle.turn or 1, lo, hi)


def verdict(battle: Battle) -> str:
    """A verdict by name: the winning model, or "tie" for either kind of tie (MT-Bench's `equalvote`)."""
    return battle.model_a if battle.winner == "model_a" else battle.model_b if battle.winner == "model_b" else "tie"


def agreement(
    battles_a: Iterable[Battle],
    battles_b: Iterable[Battle],
    *,
    bootstrap: int = 0,
    seed: int | None = 0,
    level: float = 0.95,
) -> Agreement:
    """Agreement between two verdict sets on the same items (battles without a
    `question_id` are ignored). On an item with several verdicts on a side, every cross
    pair counts once — so pass a judge's two orders as one verdict per item (see
    `arena.calibration.judge_verdicts`) to count as MT-Bench did."""
    a, b = _by_item(battles_a), _by_item(battles_b)
    items = [[(x, y) for x in a[key] for y in b[key]] for key in sorted(a.keys() & b.keys(), key=repr)]
    return _count(items, bootstrap, seed, level)


def within_agreement(
    battles: Iterable[Battle],
    *,
    rater: Callable[[Battle], str | None] = lambda b: b.judge,
    bootstrap: int = 0,
    seed: int | None = 0,
    level: float = 0.95,
) -> Agreement:
    """Agreement among raters of one set, e.g. human–human on double-voted items: every
    pair of verdicts on an item by two different raters (`rater(battle)`; None counts as
    a rater of its own) is compared, as FastChat's human–human setting."""
    by_item: dict[ItemKey, list[tuple[str | None, str]]] = defaultdict(list)
    for battle in battles:
        key = item_key(battle)
        if key is not None:
            by_item[key].append((rater(battle), verdict(battle)))
    items = []
    for key in sorted(by_item, key=repr):
        votes = by_item[key]
        pairs = [(votes[i][1], votes[j][1]) for i in range(len(votes)) for j in range(i + 1, len(votes))
                 if votes[i][0] is None or votes[i][0] != votes[j][0]]
        if pairs:
            items.append(pairs)
    return _count(items, bootstrap, seed, level)


def bootstrap_ratio(numerators: np.ndarray, denominators: np.ndarray, rounds: int, seed: int | None,
                    level: float) -> tuple[float, float] | None:
    """Equal-tailed `level` interval of Σnum / Σden with the items redrawn with replacement
    (`rounds` multinomial draws, all at once); None when there is nothing to divide by."""
    n = len(numerators)
    if rounds <= 0 or n == 0 or denominators.sum() == 0:
        return None
    rng = np.random.default_rng(seed)
    num, den = np.empty(rounds), np.empty(rounds)
    chunk = max(1, 2_000_000 // n)  # rounds per draw: bounds the rounds × items array
    for start in range(0, rounds, chunk):
        draws = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, rounds - start)).astype(float)
        num[start : start + len(draws)] = draws @ numerators
        den[start : start + len(draws)] = draws @ denominators
    ratios = num[den > 0] / den[den > 0]
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    return float(low), float(high)


# --- private helpers ---------------------------------------------------------------------


def _by_item(battles: Iterable[Battle]) -> dict[ItemKey, list[str]]:
    out: dict[ItemKey, list[str]] = defaultdict(list)
    for battle in battles:
        key = item_key(battle)
        if key is not None:
            out[key].append(verdict(battle))
    return out


def _count(items: Sequence[list[tuple[str, str]]], rounds: int, seed: int | None, level: float) -> Agreement:
    """Tally the compared pairs per item, both settings, with item-bootstrap intervals."""
    agree = np.array([sum(x == y for x, y in pairs) for pairs in items], dtype=float)
    total = np.array([len(pairs) for pairs in items], dtype=float)
    decisive = [[(x, y) for x, y in pairs if x != "tie" and y != "tie"] for pairs in items]
    agree_d = np.array([sum(x == y for x, y in pairs) for pairs in decisive], dtype=float)
    total_d = np.array([len(pairs) for pairs in decisive], dtype=float)
    return Agreement(
        matched=len(items),
        agreement=float(agree.sum() / total.sum()) if total.sum() else None,
        decisive=int((total_d > 0).sum()),
        agreement_decisive=float(agree_d.sum() / total_d.sum()) if total_d.sum() else None,
        pairs=int(total.sum()),
        decisive_pairs=int(total_d.sum()),
        ci=bootstrap_ratio(agree, total, rounds, seed, level),
        ci_decisive=bootstrap_ratio(agree_d, total_d, rounds, seed, level),
    )
