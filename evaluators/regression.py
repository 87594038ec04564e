"""The regression gate: is a candidate at least as good as the baseline, task by task?

Both runs are joined item by item on the document's content (`gate_scores.doc_key`; lm-eval's
`doc_hash` changes when HF `datasets` rewrites a document), so the test is paired: the same
documents, scored for both. Items present on one side only are
reported and left out. The scores come from `evaluators.gate_scores` (a runner result, or
an lm-eval output directory).

The decision, per task, is a **non-inferiority test** with margin m ≥ 0 in the metric's
own units. With δ = the candidate's improvement over the baseline (candidate − baseline,
sign-flipped for lower-is-better metrics):

    H0: δ ≤ −m  (the candidate is worse by the margin or more)
    H1: δ > −m  (the candidate is non-inferior)

A task **passes** when H0 is rejected at one-sided level α/2 after Holm's correction
across the compared tasks; otherwise it is a **regression** (not shown to be within the
margin — which includes "too few items to tell"). Equivalently, without the correction:
the lower end of the two-sided (1 − α) confidence interval of δ lies above −m.

Tests:
- binary per-sample scores (0/1 with a mean): Tango's score test for paired proportions
  (the margin-aware generalisation of McNemar's test) and its score confidence interval;
  the plain decrease test is the exact McNemar test (a binomial test on the discordant
  pairs, `scipy.stats.binomtest`).
- anything else (F1, ROUGE, chrF, perplexities, bits per byte): a seeded paired bootstrap
  of the aggregate difference (items resampled jointly, so ratio metrics are recomputed
  per round), percentile confidence interval and bootstrap p-values.

Separately every verdict says whether the candidate is **significantly worse at all**
(two-sided test of δ = 0 at level α, Holm-adjusted); `compare(...,
fail_on_significant_decrease=True)` turns that into a regression too.

Exit codes (`exit_code`): 0 all pass, 1 any regression, 2 nothing regressed but some task
could not be compared (missing task, metric or paired items).
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
from scipy import optimize, stats

from evaluators.gate_scores import MetricScores, TaskScores
from evaluators.metrics import AGGREGATIONS, aggregate_value, bootstrap_counts


# --- statistics --------------------------------------------------------------------------


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of c successes in b + c
    discordant pairs at p = 1/2 (1.0 when there are no discordant pairs)."""
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(c, b + c, 0.5, alternative="two-sided").pvalue)


def tango_z(b: int, c: int, n: int, delta0: float) -> float:
    """Tango's (1998) score statistic for H0: δ = delta0, δ = (c − b) / n the paired
    difference of proportions (b: only the baseline right, c: only the candidate right).
    At delta0 = 0 it is McNemar's z = (c − b) / sqrt(b + c)."""
    B = b + c + (c - b - 2 * n) * delta0
    # Constrained MLE of P(only baseline right) under δ = delta0 (positive root).
    q = (B + math.sqrt(max(B * B + 8 * n * b * delta0 * (1 - delta0), 0.0))) / (4 * n)
    var = n * (2 * q + delta0 - delta0 ** 2)
    num = c - b - n * delta0
    if var <= 1e-15:
        return 0.0 if num == 0 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def tango_ci(b: int, c: int, n: int, alpha: float) -> tuple[float, float]:
    """Two-sided (1 − alpha) score confidence interval for δ = (c − b) / n, by inverting
    `tango_z` (so it is consistent with the test, and defined when b = c = 0)."""
    z = stats.norm.ppf(1 - alpha / 2)
    point = (c - b) / n
    eps = 1e-12

    def bound(target: float, lo: float, hi: float, edge: float) -> float:
        f = lambda d: tango_z(b, c, n, d) - target  # noqa: E731 — decreasing in d
        if lo >= hi or np.sign(f(lo)) == np.sign(f(hi)):
            return edge
        return float(optimize.brentq(f, lo, hi, xtol=1e-10))

    return bound(z, -1 + eps, point, -1.0), bound(-z, point, 1 - eps, 1.0)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


# --- verdicts ----------------------------------------------------------------------------

Status = Literal["pass", "regression", "error"]


class Verdict(msgspec.Struct):
    """The gate's answer for one task. `diff` and its CI are candidate − baseline in the
    metric's units, on the paired items; `p_value` tests non-inferiority (H0: worse by at
    least `margin`), `p_decrease` tests "no change" two-sided; `*_adjusted` are Holm's.
    Numbers are None when the task could not be compared (`status` "error")."""

    task: str
    metric: str
    status: Status
    reason: str
    higher_is_better: bool = True
    margin: float = 0.0
    n_paired: int = 0
    missing_in_baseline: list[str] = []
    missing_in_candidate: list[str] = []
    baseline: float | None = None
    candidate: float | None = None
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float = 0.95
    test: str = ""
    p_value: float | None = None
    p_adjusted: float | None = None
    p_decrease: float | None = None
    p_decrease_adjusted: float | None = None
    significant_decrease: bool = False
    #: Better than the baseline by the same two-sided test (exact McNemar on 0/1 metrics) at
    #: alpha: the only ground on which a report may say "improved".
    significant_increase: bool = False
    effect_size: float | None = None
    effect_size_kind: str = ""
    discordant: list[int] | None = None


def _is_binary(base: np.ndarray, cand: np.ndarray, aggregation: str, weighted: bool) -> bool:
    both = np.concatenate([base, cand])
    return aggregation == "mean" and not weighted and bool(np.all((both == 0) | (both == 1)))


def _decide(v: Verdict, p_adjusted: float, p_decrease_adjusted: float, alpha: float,
            fail_on_significant_decrease: bool) -> Verdict:
    v.p_adjusted, v.p_decrease_adjusted = float(p_adjusted), float(p_decrease_adjusted)
    worse = v.diff < 0 if v.higher_is_better else v.diff > 0
    better = v.diff > 0 if v.higher_is_better else v.diff < 0
    v.significant_decrease = bool(worse and v.p_decrease_adjusted < alpha)
    v.significant_increase = bool(better and v.p_decrease_adjusted < alpha)
    passed = v.p_adjusted < alpha / 2 and not (fail_on_significant_decrease and v.significant_decrease)
    v.status = "pass" if passed else "regression"
    v.reason = _reason(v, alpha)
    return v


def compare_metric(task: str, baseline: MetricScores, candidate: MetricScores, *, margin: float,
                   alpha: float = 0.05, bootstrap_rounds: int = 2000, seed: int = 0,
                   fail_on_significant_decrease: bool = False) -> Verdict:
    """Paired comparison of one metric on the items both runs scored, decided without
    multiplicity correction (`p_adjusted` = `p_value`); `compare` re-decides with Holm."""
    verdict = _paired_test(task, baseline, candidate, margin=margin, alpha=alpha,
                           bootstrap_rounds=bootstrap_rounds, seed=seed)
    if verdict.status == "error":
        return verdict
    return _decide(verdict, verdict.p_value, verdict.p_decrease, alpha, fail_on_significant_decrease)


def _paired_test(task: str, baseline: MetricScores, candidate: MetricScores, *, margin: float,
                 alpha: float, bootstrap_rounds: int, seed: int) -> Verdict:
    name = candidate.metric
    common = dict(task=task, metric=name, higher_is_better=candidate.higher_is_better, margin=margin,
                  confidence=1 - alpha)
    if (baseline.aggregation, baseline.higher_is_better) != (candidate.aggregation, candidate.higher_is_better):
        return Verdict(**common, status="error", reason=(
            f"{name}: baseline and candidate disagree on aggregation/direction "
            f"({baseline.aggregation}, higher_is_better={baseline.higher_is_better}) vs "
            f"({candidate.aggregation}, higher_is_better={candidate.higher_is_better})"))
    keys = [k for k in candidate.values if k in baseline.values]
    missing_b = [k for k in candidate.values if k not in baseline.values]
    missing_c = [k for k in baseline.values if k not in candidate.values]
    common.update(n_paired=len(keys), missing_in_baseline=missing_b, missing_in_candidate=missing_c)
    if not keys:
        return Verdict(**common, status="error", reason=f"{name}: no items scored by both runs "
                       f"({len(baseline.values)} baseline, {len(candidate.values)} candidate)")
    vb = np.array([baseline.values[k] for k in keys], dtype=float)
    vc = np.array([candidate.values[k] for k in keys], dtype=float)
    wb = np.array([baseline.weights.get(k, 1.0) for k in keys], dtype=float)
    wc = np.array([candidate.weights.get(k, 1.0) for k in keys], dtype=float)
    for side, values, weights in (("baseline", vb, wb), ("candidate", vc, wc)):
        bad = [k for k, ok in zip(keys, np.isfinite(values) & np.isfinite(weights)) if not ok]
        if bad:  # one NaN makes every bootstrap round NaN: no test can be run on it
            return Verdict(**common, status="error", reason=(
                f"{name}: the {side} has no finite score on {len(bad)} of {len(keys)} paired items "
                f"(NaN or inf; e.g. item {bad[0]}): a metric missing on some items cannot gate"))
    agg = candidate.aggregation
    base_value, cand_value = aggregate_value(agg, vb, wb), aggregate_value(agg, vc, wc)
    common.update(baseline=base_value, candidate=cand_value, diff=cand_value - base_value)
    sign = 1.0 if candidate.higher_is_better else -1.0
    if _is_binary(vb, vc, agg, bool(baseline.weights or candidate.weights)):
        good_b, good_c = (vb == 1, vc == 1) if sign > 0 else (vb == 0, vc == 0)
        b, c, n = int(np.sum(good_b & ~good_c)), int(np.sum(~good_b & good_c)), len(keys)
        lo, hi = tango_ci(b, c, n, alpha)  # CI of the improvement δ
        ci = (lo, hi) if sign > 0 else (-hi, -lo)
        p = float(stats.norm.sf(tango_z(b, c, n, -margin)))
        return Verdict(**common, status="pass", reason="", ci_low=ci[0], ci_high=ci[1],
                       test="tango_score + mcnemar_exact", p_value=p, p_decrease=mcnemar_exact(b, c),
                       effect_size=(c + 0.5) / (b + 0.5), effect_size_kind="matched_odds_ratio", discordant=[b, c])
    rng = np.random.default_rng(seed)
    spec = AGGREGATIONS[agg]
    diffs = []
    for counts in bootstrap_counts(len(keys), bootstrap_rounds, rng):
        with np.errstate(divide="ignore", invalid="ignore"):
            cand_round = spec.from_ratio((counts @ vc) / (counts @ wc))
            diffs.append(cand_round - spec.from_ratio((counts @ vb) / (counts @ wb)))
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    improvement = sign * d
    rounds = len(d)
    p = (np.sum(improvement <= -margin) + 1) / (rounds + 1)
    p_dec = min(1.0, 2 * min(np.sum(improvement <= 0) + 1, np.sum(improvement >= 0) + 1) / (rounds + 1))
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    if agg == "mean":
        delta = vc - vb
        sd = float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0
        effect, kind = (float(np.mean(delta)) / sd if sd > 0 else 0.0 if np.mean(delta) == 0 else None), "cohens_dz"
    else:
        effect, kind = (cand_value - base_value) / abs(base_value) if base_value else None, "relative_change"
    return Verdict(**common, status="pass", reason="", ci_low=float(lo), ci_high=float(hi),
                   test=f"paired_bootstrap({rounds}, seed={seed})", p_value=float(p),
                   p_decrease=float(p_dec), effect_size=effect,
                   effect_size_kind=kind)


def _reason(v: Verdict, alpha: float) -> str:
    ci = f"{int(round(v.confidence * 100))}% CI [{v.ci_low:+.4g}, {v.ci_high:+.4g}]"
    head = f"{v.metric} {v.baseline:.4g} -> {v.candidate:.4g} (diff {v.diff:+.4g}, {ci}, n={v.n_paired})"
    if v.status == "pass":
        verdict = f"non-inferior within margin {v.margin:g} (Holm p={v.p_adjusted:.3g} < {alpha / 2:g})"
    else:
        verdict = (f"not shown to be within margin {v.margin:g} of the baseline "
                   f"(Holm p={v.p_adjusted:.3g} >= {alpha / 2:g})")
    test = "exact McNemar" if v.discordant is not None else "paired bootstrap"
    if v.significant_decrease:
        verdict += f"; significantly worse than the baseline ({test}, Holm p={v.p_decrease_adjusted:.3g})"
    elif v.significant_increase:
        verdict += f"; significantly better than the baseline ({test}, Holm p={v.p_decrease_adjusted:.3g})"
    elif v.p_decrease_adjusted is not None and v.diff:
        verdict += f"; not a significant change ({test}, Holm p={v.p_decrease_adjusted:.3g})"
    missing = len(v.missing_in_baseline) + len(v.missing_in_candidate)
    if missing:
        verdict += (f"; {len(v.missing_in_candidate)} baseline items missing in candidate, "
                    f"{len(v.missing_in_baseline)} candidate items missing in baseline")
    return f"{head}: {verdict}"


def compare(
    baseline: Mapping[str, TaskScores],
    candidate: Mapping[str, TaskScores],
    *,
    margins: Mapping[str, float] | None = None,
    default_margin: float = 0.02,
    alpha: float = 0.05,
    metrics: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
    bootstrap_rounds: int = 2000,
    seed: int = 0,
    fail_on_significant_decrease: bool = False,
) -> list[Verdict]:
    """A verdict per task (default: every baseline task) on its gated metric (`metrics`
    per task, else the candidate's primary metric), with Holm-adjusted p-values across
    the tasks compared. Margins are in metric units (`margins[task]`, else
    `default_margin`, which suits 0–1 metrics; set it for chrF (0–100) or perplexity)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha}")
    margins = margins or {}
    verdicts = []
    for task in (list(tasks) if tasks is not None else list(baseline)):
        margin = float(margins.get(task, default_margin))
        if margin < 0:
            raise ValueError(f"margins[{task!r}]: expected >= 0, got {margin}")
        base, cand = baseline.get(task), candidate.get(task)
        if base is None or cand is None:
            side = "baseline" if base is None else "candidate"
            verdicts.append(Verdict(task, (metrics or {}).get(task, ""), "error",
                                    f"task {task!r} missing in {side} results", margin=margin))
            continue
        name = (metrics or {}).get(task) or cand.primary_metric
        if name not in cand.metrics or name not in base.metrics:
            side = "candidate" if name not in cand.metrics else "baseline"
            have = ", ".join(sorted((cand if side == "candidate" else base).metrics))
            both = [m for m in cand.metrics if m in base.metrics]  # e.g. lm-eval lacks our token_f1
            hint = f"; gate on a metric both have with --metric {both[0]}" if both else ""
            verdicts.append(Verdict(task, name, "error", f"metric {name!r} missing in {side} results (has: {have}){hint}",
                                    margin=margin))
            continue
        verdicts.append(_paired_test(task, base.metrics[name], cand.metrics[name], margin=margin, alpha=alpha,
                                     bootstrap_rounds=bootstrap_rounds, seed=seed))
    ran = [v for v in verdicts if v.status != "error"]
    if ran:
        for v, p_adj, p_dec_adj in zip(ran, holm([v.p_value for v in ran]), holm([v.p_decrease for v in ran])):
            _decide(v, p_adj, p_dec_adj, alpha, fail_on_significant_decrease)
    return verdicts


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """0 when every task passed, 1 when any regressed, else 2 (some task could not be
    compared, or there was nothing to compare)."""
    if any(v.status == "regression" for v in verdicts):
        return 1
    if not verdicts or any(v.status == "error" for v in verdicts):
        return 2
    return 0


# --- reports -----------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def verdicts_json(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """{"exit_code", "status", "verdicts": [...]}; any NaN/inf becomes null (strict JSON)."""
    code = exit_code(verdicts)
    return {"exit_code": code, "status": {0: "pass", 1: "regression", 2: "error"}[code],
            "verdicts": [_finite(msgspec.to_builtins(v)) for v in verdicts]}


def write_json(verdicts: Sequence[Verdict], path: str | os.PathLike) -> Path:
    """Write `verdicts_json(verdicts)` to `path`."""
    path = Path(path)
    path.write_text(json.dumps(verdicts_json(verdicts), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_junit(verdicts: Sequence[Verdict], path: str | os.PathLike, suite_name: str = "arena-check") -> Path:
    """JUnit XML for CI: one testcase per task, `<failure type="regression">` on a
    regression, `<error type="could_not_run">` when the task could not be compared; the
    verdict's numbers go into `<system-out>` as JSON."""
    failures = sum(v.status == "regression" for v in verdicts)
    errors = sum(v.status == "error" for v in verdicts)
    counts = {"tests": str(len(verdicts)), "failures": str(failures), "errors": str(errors)}
    root = ET.Element("testsuites", name=suite_name, **counts)
    suite = ET.SubElement(root, "testsuite", name=suite_name, skipped="0", time="0", **counts)
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"{suite_name}.{v.metric or 'metric'}", name=v.task, time="0")
        if v.status == "regression":
            ET.SubElement(case, "failure", message=v.reason, type="regression").text = v.reason
        elif v.status == "error":
            ET.SubElement(case, "error", message=v.reason, type="could_not_run").text = v.reason
        ET.SubElement(case, "system-out").text = json.dumps(_finite(msgspec.to_builtins(v)), ensure_ascii=False)
    path = Path(path)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
