"""Where the blame falls by source: the trace's evidence aggregated per metadata value.

A bad annotator or a bad vendor batch teaches many wrong answers at once; seen record by
record it is a list of offenders, seen by source it is one decision ("drop vendor B").
For each metadata field the records carry (`source`, `annotator`, … — `Conversation.meta`)
and each of its values, `by_source` reports:

- how many of the trace's top `k` records come from it, against how many it would hold by
  its share of the dataset; the one-sided hypergeometric p-value of holding that many or
  more by chance, Bonferroni-corrected over every (field, value) tested;
- how many of its records the trace flags (a reference conflict with a failing item's gold
  answer, or a dataset-check finding) and that share with a 95% Wilson interval.

A value is `suspect` when its top-k excess is significant (corrected p < `alpha`): the
trace's evidence, not the value's size, puts it there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence

import msgspec
import numpy as np
from scipy.stats import binomtest, hypergeom

from evaluators.records import Conversation


class SourceFinding(msgspec.Struct, kw_only=True):
    field: str
    value: str
    records: int
    share: float  # of the dataset
    in_top: int
    top_k: int
    expected_in_top: float
    p_value: float  # Bonferroni-corrected, one-sided (more in the top than by chance)
    flagged: int
    flagged_share: float
    flagged_ci: tuple[float, float]
    suspect: bool

    @property
    def message(self) -> str:
        low, high = self.flagged_ci
        return (f"{self.field} {self.value}: {self.in_top} of the top {self.top_k} records "
                f"(expected {self.expected_in_top:.1f} by its share), {self.flagged_share:.0%} of its "
                f"{self.records} records flagged (95% CI {low:.0%}–{high:.0%}); p={self.p_value:.2g}")


def wilson(successes: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (scipy's), (0, 0) when n is 0."""
    if n == 0:
        return 0.0, 0.0
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def by_source(
    records: Sequence[Conversation],
    scores: Sequence[float],
    flagged: Collection[int],
    *,
    top_k: int = 10,
    alpha: float = 0.01,
    fields: Sequence[str] | None = None,
) -> list[SourceFinding]:
    """Per (field, value) of the records' metadata: its share of the top `top_k` records by
    `scores` (NaN scores rank last) and of `flagged`, most over-represented first. Fields
    with a single value, or whose values are all distinct (ids), say nothing and are skipped."""
    n = len(records)
    if n == 0:
        return []
    values: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, record in enumerate(records):
        for name, value in record.meta:
            if fields is None or name in fields:
                values[name][value].append(i)
    order = np.argsort(-np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf), kind="stable")
    k = min(top_k, n)
    top_set = set(order[:k].tolist())
    flagged = set(flagged)
    tested = [(name, value, members) for name, by_value in values.items()
              if 1 < len(by_value) < n for value, members in by_value.items()]
    out = []
    for name, value, members in tested:
        in_top = sum(1 for i in members if i in top_set)
        p = float(hypergeom.sf(in_top - 1, n, len(members), k)) * len(tested)
        hit = sum(1 for i in members if i in flagged)
        out.append(SourceFinding(
            field=name, value=value, records=len(members), share=len(members) / n, in_top=in_top, top_k=k,
            expected_in_top=k * len(members) / n, p_value=min(1.0, p), flagged=hit,
            flagged_share=hit / len(members), flagged_ci=wilson(hit, len(members)), suspect=min(1.0, p) < alpha,
        ))
    out.sort(key=lambda f: (f.p_value, -f.in_top))
    return out
