"""Dataset checks: what is wrong with a training set before (or after) it trains a model.

`check_dataset(records)` runs every check over a list of `Conversation`s and returns a
`CheckReport`: one `Finding` per problem, naming the records by 0-based index (and
1-based source line when the caller passes `line_numbers`) and saying why. The checks:

- `exact_duplicate`: the same conversation after normalising case, whitespace and
  punctuation;
- `near_duplicate`: MinHash + LSH (datasketch) over word shingles of the whole
  conversation, confirmed by exact Jaccard, when the answers do not differ materially;
- `conflicting_answers`: (near-)identical prompts whose answers differ materially; every
  exchange of a multi-turn record is asked in its own context, so a wrong answer in a
  chat's first turn conflicts with a plain record of the same question;
- `refusal_rate`: more refusals than expected (a one-sided binomial test);
- `format_consistency`: the minority format when one format holds a clear majority
  (JSON vs prose vs markdown lists; final punctuation of prose);
- `length_outlier`: robust z-score of log length, for prompts and answers;
- `empty_or_garbled`: empty turns, U+FFFD, mojibake, non-printable text, character runs;
- `unsupported_facts`: numbers and names in an extractive answer absent from its prompt;
- `train_eval_overlap`: training prompts that are (near-)copies of eval prompts.

Every threshold lives in `CheckConfig`; defaults are tuned to stay silent on clean data.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import numpy as np
from scipy.stats import binomtest

from evaluators import _text
from evaluators._similarity import ShingleIndex, UnionFind
from evaluators.records import Conversation, exchange_ends

Severity = Literal["error", "warning", "info"]

CHECKS: tuple[str, ...] = (
    "exact_duplicate",
    "near_duplicate",
    "conflicting_answers",
    "refusal_rate",
    "format_consistency",
    "length_outlier",
    "empty_or_garbled",
    "unsupported_facts",
    "train_eval_overlap",
)

#: Refusal openers, matched case-insensitively near the start of an answer. "I can't"
#: alone is too broad ("I can't make Thursday" is a fine answer), so it needs a verb.
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bI(?:'m| am) sorry,? but\b",
    r"\bI apologi[sz]e,? but\b",
    r"\bas an AI\b",
    r"\bas a (?:large )?language model\b",
    r"\bI(?: can't| cannot| can not| won't| will not| am unable to| am not able to|'m unable to|'m not able to)"
    r" (?:help|assist|provide|comply|fulfil|fulfill|answer|do that|support|share|generate|create|write|give"
    r"|discuss|engage|disclose|tell)\b",
    r"^\s*I cannot\b",
    r"\bI must (?:decline|refuse)\b",
    # Chinese: apologies that lead into a refusal, "as an AI", "I cannot answer/provide ...".
    r"(?:对不起|抱歉|很抱歉|非常抱歉)[，,、\s]*(?:但是?)?[，,\s]*我?(?:无法|不能|不可以|没法|没有办法|不便|不会)",
    r"作为(?:一个|一名|一款)?(?:人工智能|AI|ai|语言模型|大语言模型|AI助手|人工智能助手)",
    r"我(?:无法|不能|没有办法|没法|不可以)(?:回答|提供|帮助|帮您|协助|满足|完成|讨论|透露|生成|处理|告诉)",
    r"我(?:必须|只能)?(?:拒绝|婉拒)",
)


class CheckConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of every check. The defaults aim at no findings on clean data."""

    checks: tuple[str, ...] = CHECKS  # which checks run
    shingle_size: int = 2  # words per shingle; short SFT records need small shingles
    num_perm: int = 128  # MinHash permutations
    minhash_seed: int = 1
    near_duplicate_threshold: float = 0.7  # Jaccard of whole-conversation shingles
    conflict_prompt_threshold: float = 0.8  # Jaccard of prompt shingles
    # Content-word Jaccard below which two answers (or two questions) differ: one word
    # substituted out of 3–4 ("the red finch" / "the green finch") is a difference; one
    # typo or an added word in a 6-word question is not.
    content_similarity_threshold: float = 0.6
    # Stricter for conflicts, where the answers already differ: "the largest / smallest
    # tributary of the Orvell river" (3 of 5 content words shared) are two questions.
    conflict_question_similarity: float = 0.8
    refusal_patterns: tuple[str, ...] = DEFAULT_REFUSAL_PATTERNS
    refusal_search_chars: int = 200  # refusals open an answer; look no further
    expected_refusal_rate: float = 0.05
    refusal_alpha: float = 0.01  # one-sided binomial test level
    format_majority: float = 0.8  # a format this common makes the rest a minority
    format_min_records: int = 10  # fewer classified answers: no format finding
    format_min_words: int = 4  # prose shorter than this has no punctuation style
    length_z_threshold: float = 3.5  # Iglewicz–Hoaglin's cut-off for the modified z-score
    length_min_records: int = 8
    length_min_log_scale: float = 0.5  # floor on the robust scale: an outlier is ≥ e^(3.5·0.5) ≈ 6× the median
    # Which tail is flagged. Only "long" by default: a far shorter answer is usually a
    # short-answer task (yes/no, a number), a far longer one a runaway generation, a
    # pasted document or two records run together.
    length_tails: Literal["long", "short", "both"] = "long"
    repeated_char_run: int = 20
    repeated_word_run: int = 8
    max_nonprintable_fraction: float = 0.3
    extractive: bool | None = None  # None: decide per record (see `_is_extractive`)
    context_min_words: int = 20
    overlap_threshold: float = 0.7  # Jaccard of prompt shingles, train vs eval

    def __post_init__(self) -> None:
        unknown = sorted(set(self.checks) - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}: expected some of {list(CHECKS)}")
        for name in ("near_duplicate_threshold", "conflict_prompt_threshold", "overlap_threshold",
                     "expected_refusal_rate", "format_majority", "refusal_alpha", "content_similarity_threshold",
                     "conflict_question_similarity"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"CheckConfig.{name} must be within [0, 1], got {value}")
        for pattern in self.refusal_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"refusal pattern {pattern!r} is not a valid regular expression: {exc}") from None


@functools.lru_cache(maxsize=16)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


def is_refusal(answer: str, patterns: tuple[str, ...] = DEFAULT_REFUSAL_PATTERNS, search_chars: int = 200) -> bool:
    """True when the answer opens like a refusal: a pattern matches within its first
    `search_chars` characters (curly apostrophes read as straight). The refusal-rate check
    and `arena trace --refused` both use it."""
    head = answer.replace("\u2019", "'")[:search_chars]
    return any(p.search(head) for p in _compiled(tuple(patterns)))


class Finding(msgspec.Struct, frozen=True):
    """One problem: which check, how bad, which records, and why.

    `record_indices` are 0-based positions in the checked list; `line_numbers` are the
    matching 1-based source lines (empty when the caller gave none). For duplicate
    groups `details["keep"]` names the record to keep.
    """

    check: str
    severity: Severity
    record_indices: tuple[int, ...]
    line_numbers: tuple[int, ...]
    message: str
    details: dict[str, Any] = {}


class CheckSummary(msgspec.Struct, frozen=True):
    """Per check: findings, distinct records flagged, their share of the dataset, and stats."""

    findings: int
    records: int
    rate: float
    stats: dict[str, Any] = {}


class CheckReport(msgspec.Struct, frozen=True):
    """The result of `check_dataset`: a summary per check that ran, and the findings."""

    n_records: int
    summary: dict[str, CheckSummary]
    findings: list[Finding]

    def by_check(self, check: str) -> list[Finding]:
        """The findings of one check, in report order."""
        return [f for f in self.findings if f.check == check]

    def flagged_indices(self) -> dict[int, list[str]]:
        """Record index → the reasons it was flagged ("check: message"), sorted by index."""
        reasons: dict[int, list[str]] = defaultdict(list)
        for finding in self.findings:
            for index in finding.record_indices:
                reasons[index].append(f"{finding.check}: {finding.message}")
        return dict(sorted(reasons.items()))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (dicts, lists, numbers, strings)."""
        return msgspec.to_builtins(self)


# ----------------------------------------------------------------------------- entry


def check_dataset(
    records: Sequence[Conversation],
    *,
    line_numbers: Sequence[int] | None = None,
    eval_records: Sequence[Conversation] | None = None,
    config: CheckConfig = CheckConfig(),
) -> CheckReport:
    """Run the checks named in `config.checks` over `records` and return the report.

    `line_numbers[i]` is record i's 1-based line in its source file, used in messages.
    `train_eval_overlap` runs only when `eval_records` is given. Findings are grouped by
    check, in the order of `CHECKS`.
    """
    if line_numbers is not None and len(line_numbers) != len(records):
        raise ValueError(f"line_numbers has {len(line_numbers)} entries for {len(records)} records")
    ctx = _Context(list(records), list(line_numbers) if line_numbers is not None else None, config)
    runners = {
        "exact_duplicate": _exact_duplicates,
        "near_duplicate": _near_duplicates,
        "conflicting_answers": _conflicting_answers,
        "refusal_rate": _refusal_rate,
        "format_consistency": _format_consistency,
        "length_outlier": _length_outliers,
        "empty_or_garbled": _empty_or_garbled,
        "unsupported_facts": _unsupported_facts,
    }
    findings: list[Finding] = []
    summary: dict[str, CheckSummary] = {}
    for check in CHECKS:
        if check not in config.checks:
            continue
        if check == "train_eval_overlap":
            if eval_records is None:
                continue
            found, stats = _train_eval_overlap(ctx, list(eval_records))
        else:
            found, stats = runners[check](ctx)
        flagged = {i for f in found for i in f.record_indices}
        rate = len(flagged) / len(records) if records else 0.0
        summary[check] = CheckSummary(findings=len(found), records=len(flagged), rate=rate, stats=stats)
        findings.extend(found)
    return CheckReport(n_records=len(records), summary=summary, findings=findings)


# --------------------------------------------------------------------------- context


class _Record:
    """The text features of one conversation, computed once for every check."""

    __slots__ = ("prompt", "question", "answer", "prompt_tokens", "answer_tokens", "full_tokens", "key")

    def __init__(self, conversation: Conversation) -> None:
        prompt_messages = conversation.prompt_messages
        self.prompt = "\n".join(m.content for m in prompt_messages)
        self.question = conversation.prompt
        self.answer = conversation.answer
        tokens = [_text.normalise_tokens(m.content) for m in conversation.messages]
        self.prompt_tokens = [t for turn in tokens[: len(prompt_messages)] for t in turn]
        self.answer_tokens = tokens[-1] if len(prompt_messages) < len(tokens) else []
        self.full_tokens = self.prompt_tokens + self.answer_tokens
        self.key = tuple((m.role, " ".join(t)) for m, t in zip(conversation.messages, tokens))


class _Context:
    """What every check reads: the records, their features, line numbers and config."""

    def __init__(self, records: list[Conversation], lines: list[int] | None, config: CheckConfig) -> None:
        self.records = records
        self.lines = lines
        self.config = config
        self.features = [_Record(r) for r in records]

    def finding(self, check: str, severity: Severity, indices: Sequence[int], message: str, **details: Any) -> Finding:
        indices = tuple(sorted(indices))
        lines = tuple(self.lines[i] for i in indices) if self.lines is not None else ()
        return Finding(check, severity, indices, lines, message, details)

    def name(self, index: int) -> str:
        """'#3 (line 4)' — how messages refer to a record."""
        return f"#{index} (line {self.lines[index]})" if self.lines is not None else f"#{index}"

    def names(self, indices: Sequence[int]) -> str:
        return ", ".join(self.name(i) for i in sorted(indices))

    def shingle_index(self, token_lists: Sequence[list[str]]) -> ShingleIndex:
        c = self.config
        return ShingleIndex(token_lists, shingle_size=c.shingle_size, num_perm=c.num_perm, seed=c.minhash_seed)

    @functools.cached_property
    def exchanges(self) -> tuple[list[_Record], list[int]]:
        """Every exchange as a unit of its own — the conversation up to and including that
        answer — and the record each comes from. A record that is one exchange (or none) is
        its own unit."""
        units: list[_Record] = []
        owners: list[int] = []
        for i, (record, feature) in enumerate(zip(self.records, self.features)):
            m = record.messages
            ends = exchange_ends(record)
            for end in [len(m)] if ends in ([], [len(m)]) else ends:  # a trailing user turn answers nothing
                units.append(feature if end == len(m) else _Record(Conversation(messages=m[:end])))
                owners.append(i)
        return units, owners

    @functools.cached_property
    def exchange_prompt_index(self) -> ShingleIndex:
        units, _ = self.exchanges
        if len(units) == len(self.features) and all(u is f for u, f in zip(units, self.features)):
            return self.prompt_index  # no multi-turn records: the units are the records
        return self.shingle_index([u.prompt_tokens for u in units])

    @functools.cached_property
    def prompt_index(self) -> ShingleIndex:
        """MinHash sketches of every prompt (shared by the conflict and overlap checks)."""
        return self.shingle_index([f.prompt_tokens for f in self.features])


Check = tuple[list[Finding], dict[str, Any]]  # a check's findings and its summary stats


def _quote(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


# ------------------------------------------------------------------- answer semantics


def _differ(a: str, b: str, threshold: float) -> bool:
    """Whether two texts (two answers, or two questions) say materially different things.

    Each naming a number or name the other never mentions ("Canberra" vs "Sydney"),
    opposite yes/no, or a negation on one side only: different. One text holding every
    word of the other is an elaboration ("Canberra." vs "The capital of Australia is
    Canberra."), not a difference. Otherwise they differ when their content words (not
    stopwords) have a Jaccard similarity below `threshold`.
    """
    ta, tb = _text.normalise_tokens(a), _text.normalise_tokens(b)
    if ta == tb:
        return False
    mentioned_a = _text.words(a) | _text.numbers(a)
    mentioned_b = _text.words(b) | _text.numbers(b)
    if _text.key_facts(a) - mentioned_b and _text.key_facts(b) - mentioned_a:
        return True
    if _text.polarity(ta) != _text.polarity(tb):
        return True
    if _text.negated(a, ta) != _text.negated(b, tb):
        return True
    if set(ta) <= set(tb) or set(tb) <= set(ta):
        return False
    ca, cb = _text.content_tokens(ta), _text.content_tokens(tb)
    if not ca or not cb:
        ca, cb = set(ta), set(tb)
    return _text.jaccard(ca, cb) < threshold


def _same_facts(a: _Record, b: _Record) -> bool:
    """Whether two similar prompts mention the same numbers and names ("capital of France"
    and "capital of Spain" are different questions however similar their words)."""
    return a.prompt_tokens == b.prompt_tokens or _text.key_facts(a.prompt) == _text.key_facts(b.prompt)


def _same_question(a: _Record, b: _Record, threshold: float) -> bool:
    """Whether two similar prompts ask the same thing: the same numbers and names, and
    last sentences (the question, after any context) that do not differ materially
    (`_differ` at `threshold`). "Where does the river rise / end?" are two questions, as
    are two questions over one shared context; "capital of Australia" and "capital city
    of Australia" are one."""
    if a.prompt_tokens == b.prompt_tokens:
        return True
    if not _same_facts(a, b):
        return False
    return not _differ(_text.last_sentence(a.question), _text.last_sentence(b.question), threshold)


# ------------------------------------------------------------------------ duplicates


def _exact_duplicates(ctx: _Context) -> Check:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, feat in enumerate(ctx.features):
        if any(content for _, content in feat.key):
            groups[feat.key].append(i)
    findings = []
    for members in sorted(g for g in groups.values() if len(g) > 1):
        keep = members[0]
        findings.append(ctx.finding(
            "exact_duplicate", "warning", members,
            f"{ctx.names(members)} are the same conversation after normalising case, whitespace and "
            f"punctuation; keep {ctx.name(keep)}",
            keep=keep,
        ))
    return findings, {"groups": len(findings), "extra_copies": sum(len(f.record_indices) - 1 for f in findings)}


def _near_duplicates(ctx: _Context) -> Check:
    feats, config = ctx.features, ctx.config
    first_of_key: dict[tuple, int] = {}
    for i, feat in enumerate(feats):
        first_of_key.setdefault(feat.key, i)
    representatives = sorted(first_of_key.values())  # exact copies are reported by exact_duplicate
    index = ctx.shingle_index([f.full_tokens for f in feats])
    groups, similarity = UnionFind(), {}
    for i, j, sim in index.similar_pairs(representatives, config.near_duplicate_threshold):
        if (_same_question(feats[i], feats[j], config.content_similarity_threshold)
                and not _differ(feats[i].answer, feats[j].answer, config.content_similarity_threshold)):
            groups.union(i, j)
            similarity[(i, j)] = sim
    findings = []
    for members in groups.groups():
        keep = members[0]
        pairs = [[i, j, s] for (i, j), s in sorted(similarity.items()) if i in members]
        findings.append(ctx.finding(
            "near_duplicate", "warning", members,
            f"{ctx.names(members)} are near-duplicates (word-shingle Jaccard "
            f"≥ {min(p[2] for p in pairs):.2f}) with the same answer; keep {ctx.name(keep)}",
            keep=keep, pairs=pairs,
        ))
    return findings, {"groups": len(findings)}


def _conflicting_answers(ctx: _Context) -> Check:
    config = ctx.config
    feats, owner = ctx.exchanges  # one unit per exchange; owner[u] is its record
    answered = [u for u, f in enumerate(feats) if f.answer.strip() and f.prompt_tokens]
    groups = UnionFind()
    by_prompt: dict[tuple[str, ...], int] = {}
    for u in answered:
        first = by_prompt.setdefault(tuple(feats[u].prompt_tokens), u)
        groups.union(first, u)
    for u, v, _ in ctx.exchange_prompt_index.similar_pairs(answered, config.conflict_prompt_threshold):
        if _same_question(feats[u], feats[v], config.conflict_question_similarity):
            groups.union(u, v)
    findings = []
    for members in groups.groups():
        classes: list[list[int]] = []  # units grouped by answers that agree
        for u in members:
            for cls in classes:
                if not _differ(feats[cls[0]].answer, feats[u].answer, config.content_similarity_threshold):
                    cls.append(u)
                    break
            else:
                classes.append([u])
        if len(classes) < 2:
            continue
        records = sorted({owner[u] for u in members})
        if len(classes) == 2 and len(members) == 2:
            a, b = members
            who = (f"{ctx.name(owner[a])} asks the same question twice" if owner[a] == owner[b]
                   else f"{ctx.name(owner[a])} and {ctx.name(owner[b])} ask the same question")
            message = f"{who} but answer differently: {_quote(feats[a].answer)} vs {_quote(feats[b].answer)}"
        else:
            message = "the same question is answered differently: " + "; ".join(
                f"{ctx.names(sorted({owner[u] for u in cls}))} {'say' if len(cls) > 1 else 'says'} "
                f"{_quote(feats[cls[0]].answer)}"
                for cls in classes
            )
        findings.append(ctx.finding(
            "conflicting_answers", "error", records, message,
            prompt=feats[members[0]].question,
            answers=[{"index": owner[u], "answer": feats[u].answer, "group": g}
                     for g, cls in enumerate(classes) for u in cls],
        ))
    return findings, {"groups": len(findings)}


def _train_eval_overlap(ctx: _Context, eval_records: list[Conversation]) -> Check:
    feats, config = ctx.features, ctx.config
    eval_feats = [_Record(r) for r in eval_records]
    exact: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for j, feat in enumerate(eval_feats):
        if feat.prompt_tokens:
            exact[tuple(feat.prompt_tokens)].append(j)
    near = ctx.prompt_index.matches_in(
        ctx.shingle_index([f.prompt_tokens for f in eval_feats]), config.overlap_threshold
    )
    findings = []
    for i, feat in enumerate(feats):
        if matches := exact.get(tuple(feat.prompt_tokens)):
            findings.append(ctx.finding(
                "train_eval_overlap", "error", [i],
                f"{ctx.name(i)}'s prompt is also eval record #{matches[0]}'s prompt (after normalising)",
                kind="exact", eval_indices=matches, similarity=1.0,
            ))
        elif scored := [(s, j) for s, j in near.get(i, []) if _same_facts(feat, eval_feats[j])]:
            best, j = scored[0]
            findings.append(ctx.finding(
                "train_eval_overlap", "error", [i],
                f"{ctx.name(i)}'s prompt nearly copies eval record #{j}'s prompt (word-shingle Jaccard {best:.2f})",
                kind="near", eval_indices=[j for _, j in scored], similarity=best,
            ))
    return findings, {"eval_records": len(eval_records)}


# ---------------------------------------------------------------- dataset-level rates


def _refusal_rate(ctx: _Context) -> Check:
    """The refusal balance, tested per language of the question (a Chinese refusal flood
    must not hide among English answers, nor the reverse) and over all records."""
    config = ctx.config
    from evaluators.lang import language

    answered = [i for i, f in enumerate(ctx.features) if f.answer.strip()]
    refused = {i for i in answered
               if is_refusal(ctx.features[i].answer, config.refusal_patterns, config.refusal_search_chars)}
    groups: dict[str, list[int]] = defaultdict(list)
    for i in answered:
        groups[language(ctx.features[i].question or ctx.features[i].answer)].append(i)
    expected = config.expected_refusal_rate

    def test(members: list[int]) -> dict[str, Any]:
        k = sum(1 for i in members if i in refused)
        n = len(members)
        p = float(binomtest(k, n, expected, alternative="greater").pvalue) if n and k else 1.0
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
        "structure": ({i: _text.answer_structure(f.answer) for i, f in enumerate(ctx.features)}, "warning"),
        "final_punctuation": (
            {i: _text.answer_ending(f.answer, config.format_min_words) for i, f in enumerate(ctx.features)}, "info"
        ),
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
        lengths = {i: len(getattr(f, field).strip()) for i, f in enumerate(ctx.features)}
        lengths = {i: n for i, n in lengths.items() if n > 0}  # empty ones are empty_or_garbled's
        if len(lengths) < config.length_min_records:
            continue
        index = np.array(list(lengths))
        values = np.array(list(lengths.values()), dtype=float)
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
    c = ctx.config

    def garbling(text: str) -> list[str]:
        return _text.garbling(text, char_run=c.repeated_char_run, word_run=c.repeated_word_run,
                              max_nonprintable=c.max_nonprintable_fraction)

    findings = []
    for i, (record, feat) in enumerate(zip(ctx.records, ctx.features)):
        problems = []
        if not record.messages:
            problems.append("no turns at all")
        else:
            if not feat.question.strip():
                problems.append("empty prompt")
            if record.messages[-1].role != "assistant":
                problems.append("no assistant answer")
            elif not feat.answer.strip():
                problems.append("empty answer")
            for turn, message in enumerate(record.messages):
                problems += [f"{message.role} turn {turn}: {p}" for p in garbling(message.content)]
        if problems:
            findings.append(ctx.finding(
                "empty_or_garbled", "error", [i], f"{ctx.name(i)}: {'; '.join(problems)}", problems=problems
            ))
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
    return (n_words >= config.context_min_words and len(_text.sentences(user_text)) >= 2
            and count(feat.answer) <= n_words)


def _unsupported_facts(ctx: _Context) -> Check:
    """Numbers everywhere; names only in scripts with capitals (a CJK answer's names cannot
    be told from its other words this way, and the summary says how many went unchecked)."""
    from evaluators.lang import has_cjk

    findings, checked, names_unchecked = [], 0, 0
    for i, (record, feat) in enumerate(zip(ctx.records, ctx.features)):
        if not feat.answer.strip() or not _is_extractive(record, feat, ctx.config):
            continue
        checked += 1
        missing_numbers = sorted(_text.numbers(feat.answer) - _text.numbers(feat.prompt))
        prompt_words = _text.words(feat.prompt)
        if has_cjk(feat.answer):
            names_unchecked += 1
        missing_names = sorted(w for w in _text.capitalised_words(feat.answer) if w.casefold() not in prompt_words)
        if missing_numbers or missing_names:
            facts = ", ".join(missing_numbers + missing_names)
            findings.append(ctx.finding(
                "unsupported_facts", "warning", [i],
                f"{ctx.name(i)}'s answer states {facts}, which its prompt (the context) does not contain",
                numbers=missing_numbers, names=missing_names,
            ))
    stats: dict[str, Any] = {"extractive_records": checked}
    if names_unchecked:
        stats["names_unchecked"] = names_unchecked
        stats["note"] = (f"{names_unchecked} extractive answers are in a CJK script: their numbers were checked, "
                         "their names were not (names are found by their capitals)")
    return findings, stats
