"""Dataset checks: what is wrong with a training set before (or after) it trains a model.

`check_dataset(records)` runs every check over a list of `Conversation`s and returns a
`CheckReport`: one `Finding` per problem, naming the records by 0-based index (and
1-based source line when the caller passes `line_numbers`) and saying why. The checks:

- `exact_duplicate`: the same conversation after normalising case, whitespace,
  punctuation and Traditional Chinese (as Simplified);
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
- `train_eval_overlap`: training prompts that are (near-)copies of eval prompts;
- `balance`: the spread over each metadata field (source, annotator, task type, domain)
  and over the questions' languages; a value holding `balance_majority` of the records,
  or records missing a field the others carry. Duplicate and conflict findings name the
  sources of their records.

Every threshold lives in `CheckConfig`; defaults are tuned to stay silent on clean data.
`check_source` runs the same checks over records read in blocks (a file larger than
memory): one pass (`_checks_scan`) keeps hashes, MinHash LSH band keys (`_minhash`) and
labels per record, and records are read again only to confirm a candidate pair.
The checks live beside this module: `_checks_pairs` (duplicates, conflicts, overlap),
`_checks_records` (refusals, format, length, garbling, facts), over `_checks_context`'s
per-record features; refusal detection is `evaluators.refusals`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from evaluators._checks_balance import _balance, with_sources
from evaluators._checks_context import Check, Finding, Severity, _Context, _Record  # noqa: F401
from evaluators._checks_pairs import (
    _conflicting_answers,
    _exact_duplicates,
    _near_duplicates,
    _train_eval_overlap,
)
from evaluators._checks_records import (
    _empty_or_garbled,
    _format_consistency,
    _length_outliers,
    _refusal_rate,
    _unsupported_facts,
)
from evaluators._checks_scan import scan_all
from evaluators._parallel import Background, in_background, worker_count
from evaluators.records import Conversation
from evaluators.refusals import DEFAULT_REFUSAL_PATTERNS, is_refusal  # noqa: F401

BLOCK_SIZE = 4096  # records per scanned block: what one worker holds at a time

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
    "balance",
)
#: Checks whose findings are about records together (copies, or answers that conflict):
#: their findings quote each record's source, and one holds while two of its records remain.
GROUP_CHECKS: tuple[str, ...] = ("exact_duplicate", "near_duplicate", "conflicting_answers")


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
    balance_majority: float = 0.8  # one metadata value (or language) holding this share is flagged
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
                     "conflict_question_similarity", "balance_majority"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"CheckConfig.{name} must be within [0, 1], got {value}")
        for pattern in self.refusal_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"refusal pattern {pattern!r} is not a valid regular expression: {exc}") from None


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

    def renumbered(self, ids: Sequence[int], n_records: int | None = None) -> CheckReport:
        """The report with checked record i called `ids[i]` wherever findings name a record
        (`record_indices`, and in `details` the `keep`, the near-duplicate `pairs` and the
        conflicting `answers`' `index`): e.g. a version's own numbering when only its
        training records were checked. Eval indices stay the eval set's."""

        def details(d: dict[str, Any]) -> dict[str, Any]:
            d = dict(d)
            if isinstance(d.get("keep"), int):
                d["keep"] = ids[d["keep"]]
            if isinstance(d.get("pairs"), list):
                d["pairs"] = [[ids[i], ids[j], *rest] for i, j, *rest in d["pairs"]]
            if isinstance(d.get("answers"), list):
                d["answers"] = [{**a, "index": ids[a["index"]]} for a in d["answers"]]
            return d

        findings = [msgspec.structs.replace(f, record_indices=tuple(ids[i] for i in f.record_indices), details=details(f.details))
                    for f in self.findings]
        return CheckReport(n_records=self.n_records if n_records is None else n_records, summary=self.summary, findings=findings)


# ----------------------------------------------------------------------------- entry


def check_dataset(
    records: Sequence[Conversation],
    *,
    line_numbers: Sequence[int] | None = None,
    eval_records: Sequence[Conversation] | None = None,
    config: CheckConfig = CheckConfig(),
    block_size: int = BLOCK_SIZE,
    workers: int | None = 1,
    record_ids: Sequence[int] | None = None,
) -> CheckReport:
    """Run the checks named in `config.checks` over `records` and return the report.
    `record_ids`: what messages call each record (as `check_source`).

    `line_numbers[i]` is record i's 1-based line in its source file, used in messages.
    `train_eval_overlap` runs only when `eval_records` is given. Findings are grouped by
    check, in the order of `CHECKS`. `check_source` is the same over records read in
    blocks (a file too large for memory); `workers` > 1 scans blocks in forked processes.
    """
    if line_numbers is not None and len(line_numbers) != len(records):
        raise ValueError(f"line_numbers has {len(line_numbers)} entries for {len(records)} records")
    records = list(records)

    def read(start: int, stop: int) -> tuple[list[Conversation], None]:
        return records[start:stop], None

    return check_source(read, len(records), line_numbers=line_numbers, eval_records=eval_records, config=config,
                        block_size=block_size, workers=workers, record_ids=record_ids)


def check_source(
    read: Callable[[int, int], tuple[list[Conversation], list[int] | None]],
    n: int,
    *,
    line_numbers: Sequence[int] | None = None,
    eval_records: Sequence[Conversation] | None = None,
    config: CheckConfig = CheckConfig(),
    block_size: int = BLOCK_SIZE,
    workers: int | None = None,
    record_ids: Sequence[int] | None = None,
) -> CheckReport:
    """`check_dataset` over `n` records that `read(start, stop)` returns in blocks, with
    their source lines (or None; then `line_numbers`, if given, names them). `record_ids`,
    if given, is the number each record goes by in messages (`#12`): e.g. its index in a
    dataset version when only the version's training records are checked; findings'
    `record_indices` still count the checked records.

    Memory grows by a few hundred bytes per record (hashes, LSH band keys, labels; see
    `_checks_scan`), not with the records' text: a record is read again only to confirm a
    candidate pair or to quote it. `read` must return the same records every call, and is
    called from forked worker processes when `workers` (default: every CPU) > 1.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    overlap = eval_records is not None and "train_eval_overlap" in config.checks
    scans = list(scan_all(read, n, config, overlap=overlap, block_size=block_size, workers=workers))
    ctx = _Context(read, n, scans, line_numbers, config, record_ids)
    del scans
    runners = {
        "exact_duplicate": _exact_duplicates,
        "near_duplicate": _near_duplicates,
        "conflicting_answers": _conflicting_answers,
        "refusal_rate": _refusal_rate,
        "format_consistency": _format_consistency,
        "length_outlier": _length_outliers,
        "empty_or_garbled": _empty_or_garbled,
        "unsupported_facts": _unsupported_facts,
        "balance": _balance,
    }
    # The near-duplicate search (the slowest check) runs in a forked process beside the
    # others when the scan had workers to spare.
    early: dict[str, Background[Check]] = {}
    if "near_duplicate" in config.checks and min(worker_count(workers), -(-n // block_size)) > 1:
        early["near_duplicate"] = in_background(lambda: _near_duplicates(ctx))
    results: dict[str, Check] = {}
    try:
        for check in CHECKS:
            if check not in config.checks or check in early:
                continue
            if check == "train_eval_overlap":
                if eval_records is not None:
                    results[check] = _train_eval_overlap(ctx, list(eval_records))
            else:
                results[check] = runners[check](ctx)
        results.update((check, result()) for check, result in early.items())
    finally:  # a check that raised leaves no search running behind it
        for background in early.values():
            background.cancel()
    findings: list[Finding] = []
    summary: dict[str, CheckSummary] = {}
    for check in (c for c in CHECKS if c in results):
        found, stats = results[check]
        found = with_sources(ctx, found, GROUP_CHECKS)
        flagged = {i for f in found for i in f.record_indices}
        rate = len(flagged) / n if n else 0.0
        summary[check] = CheckSummary(findings=len(found), records=len(flagged), rate=rate, stats=stats)
        findings.extend(found)
    return CheckReport(n_records=n, summary=summary, findings=findings)
