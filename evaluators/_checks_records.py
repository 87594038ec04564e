"""The checks that look at records one by one or as a distribution: the refusal balance,
format consistency, length outliers, empty or garbled text, and unsupported facts."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import bdtrc

from evaluators import _text
from evaluators._checks_context import Check, _Context, _Record
from evaluators.records import Conversation

if TYPE_CHECKING:
    from evaluators.datachecks import CheckConfig


# ---------------------------------------------------------------- dataset-level rates


def _refusal_rate(ctx: _Context) -> Check:
    """The refusal balance, tested per language of the question (a Chinese refusal flood
    must not hide among English answers, nor the reverse) and over all records."""
    config = ctx.config
    answered = np.flatnonzero(ctx.answered).tolist()
    refused = set(np.flatnonzero(ctx.refused).tolist())
    groups: dict[str, list[int]] = defaultdict(list)
    for i in answered:
        groups[ctx.language[i]].append(i)
    expected = config.expected_refusal_rate

    def test(members: list[int]) -> dict[str, Any]:
        k = sum(1 for i in members if i in refused)
        n = len(members)
        # P(X >= k), X ~ Bin(n, expected): one-sided binomial test (scipy.stats.binomtest's
        # "greater"), from scipy.special: importing scipy.stats costs the command 0.6 s.
        p = float(bdtrc(k - 1, n, expected)) if n and k else 1.0
        return {"refusals": k, "answered": n, "rate": k / n if n else 0.0, "p_value": p}

    stats = {**test(answered), "expected_rate": expected,
             "by_language": {lang_: test(members) for lang_, members in sorted(groups.items())}}
    findings = []
    for lang_, members in sorted(groups.items()):
        t = stats["by_language"][lang_]
        if not (t["refusals"] and t["rate"] > expected and t["p_value"] < config.refusal_alpha):
            continue
        these = sorted(i for i in members if i in refused)
        where = f" of {lang_} questions" if len(groups) > 1 else ""
        findings.append(ctx.finding(
            "refusal_rate", "warning", these,
            f"{t['rate']:.1%} of answers{where} are refusals ({t['refusals']} of {t['answered']}) against an expected "
            f"{expected:.1%}: about {t['refusals'] - expected * t['answered']:.0f} more than expected "
            f"(binomial p = {t['p_value']:.2g}); refusals: {ctx.names(these)}",
            language=lang_, **{k: v for k, v in t.items()}, expected_rate=expected,
        ))
    overall = stats
    if not findings and overall["refusals"] and overall["rate"] > expected and overall["p_value"] < config.refusal_alpha:
        these = sorted(refused)
        findings.append(ctx.finding(
            "refusal_rate", "warning", these,
            f"{overall['rate']:.1%} of answers are refusals ({overall['refusals']} of {overall['answered']}) against an "
            f"expected {expected:.1%} (binomial p = {overall['p_value']:.2g}); refusals: {ctx.names(these)}",
            refusals=overall["refusals"], answered=overall["answered"], rate=overall["rate"],
            p_value=overall["p_value"], expected_rate=expected,
        ))
    return findings, stats


def _format_consistency(ctx: _Context) -> Check:
    config = ctx.config
    detectors = {
        "structure": (dict(enumerate(ctx.structure)), "warning"),
        "final_punctuation": (dict(enumerate(ctx.ending)), "info"),
    }
    findings, stats = [], {}
    for detector, (labels, severity) in detectors.items():
        labelled = {i: c for i, c in labels.items() if c is not None}
        counts = Counter(labelled.values())
        stats[detector] = dict(counts)
        if len(labelled) < config.format_min_records or len(counts) < 2:
            continue
        majority, count = counts.most_common(1)[0]
        share = count / len(labelled)
        if share < config.format_majority:
            continue
        minority = sorted(i for i, c in labelled.items() if c != majority)
        kinds = ", ".join(sorted({labelled[i] for i in minority}))
        findings.append(ctx.finding(
            "format_consistency", severity, minority,
            f"{len(minority)} of {len(labelled)} answers are {kinds} where {share:.0%} are {majority} "
            f"({detector}): {ctx.names(minority)}",
            detector=detector, majority=majority, majority_share=share, counts=dict(counts),
            formats=[[i, labelled[i]] for i in minority],
        ))
    return findings, stats


# ---------------------------------------------------------------------- per record


def _length_outliers(ctx: _Context) -> Check:
    config = ctx.config
    findings, stats = [], {}
    for field in ("prompt", "answer"):
        all_lengths = ctx.prompt_len if field == "prompt" else ctx.answer_len
        index = np.flatnonzero(all_lengths > 0)  # empty ones are empty_or_garbled's
        if len(index) < config.length_min_records:
            continue
        values = all_lengths[index].astype(float)
        logs = np.log(values)
        median = float(np.median(logs))
        # 1.4826 × MAD estimates σ for normal data; the floor keeps templated data (all
        # answers nearly one length) from calling a modestly longer answer an outlier.
        scale = max(1.4826 * float(np.median(np.abs(logs - median))), config.length_min_log_scale)
        z = (logs - median) / scale
        median_chars = math.exp(median)
        stats[field] = {"median_chars": round(median_chars, 1), "log_scale": round(scale, 3)}
        for i, n, zi in zip(index.tolist(), values.tolist(), z.tolist()):
            if abs(zi) <= config.length_z_threshold or config.length_tails == ("short" if zi > 0 else "long"):
                continue
            ratio = n / median_chars
            how = f"{ratio:.0f}× longer" if ratio >= 1 else f"{1 / ratio:.0f}× shorter"
            findings.append(ctx.finding(
                "length_outlier", "warning", [i],
                f"{ctx.name(i)}'s {field} is {how} than the median {field} "
                f"({n:,.0f} vs {median_chars:,.0f} characters, robust z = {zi:+.1f})",
                field=field, chars=int(n), median_chars=round(median_chars, 1), z=round(zi, 2),
            ))
    findings.sort(key=lambda f: f.record_indices)
    return findings, stats


def _empty_or_garbled(ctx: _Context) -> Check:
    findings = [ctx.finding("empty_or_garbled", "error", [i], f"{ctx.name(i)}: {'; '.join(problems)}", problems=problems)
                for i, problems in ctx.garbled]  # found by the scan (`_checks_scan._problems`)
    return findings, {}


def _is_extractive(record: Conversation, feat: _Record, config: CheckConfig) -> bool:
    """Whether the prompt carries a context the answer should draw from.

    Auto-detected (config.extractive None) as: the user turns hold at least
    `context_min_words` words in two or more sentences, and the answer is no longer
    than them (a story or essay is longer than its brief; a summary or extract is not).
    """
    if config.extractive is not None:
        return config.extractive
    from evaluators.lang import has_cjk, words

    user_text = "\n".join(m.content for m in record.prompt_messages if m.role == "user")
    count = (lambda t: len(words(t))) if has_cjk(user_text) else (lambda t: len(t.split()))
    n_words = count(user_text)
    return (n_words >= config.context_min_words and _text.has_sentences(user_text, 2)
            and count(feat.answer) <= n_words)


def _unsupported_facts(ctx: _Context) -> Check:
    """Numbers everywhere; names only in scripts with capitals (a CJK answer's names cannot
    be told from its other words this way, and the summary says how many went unchecked).
    The scan (`_checks_scan._scan_facts`) compares each extractive answer with its prompt."""
    findings = []
    for i, missing_numbers, missing_names in ctx.facts:
        facts = ", ".join(missing_numbers + missing_names)
        findings.append(ctx.finding(
            "unsupported_facts", "warning", [i],
            f"{ctx.name(i)}'s answer states {facts}, which its prompt (the context) does not contain",
            numbers=missing_numbers, names=missing_names,
        ))
    stats: dict[str, Any] = {"extractive_records": ctx.extractive}
    if names_unchecked := ctx.names_unchecked:
        stats["names_unchecked"] = names_unchecked
        stats["note"] = (f"{names_unchecked} extractive answers are in a CJK script: their numbers were checked, "
                         "their names were not (names are found by their capitals)")
    return findings, stats
