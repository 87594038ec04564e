"""The per-record pass of the dataset checks: one block of records in, compact state out.

Every check reads a record once, here, and keeps what it needs as numbers (hashes, LSH
band keys, lengths, labels) or as the few records it flags; the checks then work on these
arrays (`_checks_pairs`, `_checks_records`, `_checks_balance`) and fetch a record's text
again only to confirm a candidate pair or to quote it. So memory grows by a few hundred
bytes per record, not by the records' text, and blocks can be scanned in parallel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from evaluators import _text
from evaluators._checks_context import _Record
from evaluators._minhash import MinHasher, lsh_shape, shingle_hashes, token_windows, window_shingles
from evaluators._parallel import FORK_LOCK, worker_count
from evaluators.records import Conversation, exchange_ends
from evaluators.refusals import is_refusal

if TYPE_CHECKING:
    from evaluators.datachecks import CheckConfig


def text_hash(value: Any) -> int:
    """A 64-bit hash of a plain value (tokens, a record's key); never 0 (0 means "none")."""
    return int.from_bytes(hashlib.blake2b(msgspec.json.encode(value), digest_size=8).digest(), "little") | 1


@dataclass
class Scan:
    """What the checks keep of records [start, start + n): arrays indexed by record, and per
    exchange unit (a multi-turn record has one unit per exchange, see `_Context.units`)."""

    start: int
    n: int
    lines: list[int] | None
    key_hash: np.ndarray  # uint64: the normalised conversation (exact duplicates)
    has_content: np.ndarray  # bool: some turn has a token
    full_bands: np.ndarray  # (n, bands) uint64: LSH keys of the whole conversation's shingles
    full_signature: np.ndarray  # (n, bands × rows) uint8: its b-bit MinHash (`MinHasher.sketch`)
    prompt_hash: np.ndarray  # uint64: the prompt's tokens (0: no prompt tokens)
    prompt_bands: np.ndarray  # (n, bands) at overlap_threshold: prompts vs eval prompts
    prompt_signature: np.ndarray  # (n, bands × rows) uint8: their b-bit MinHash
    unit_owner: np.ndarray  # int64: the record of each unit
    unit_end: np.ndarray  # int32: the unit's end in its record's messages
    unit_answered: np.ndarray  # bool: a non-empty answer to a non-empty prompt
    unit_prompt_hash: np.ndarray
    unit_bands: np.ndarray  # (units, bands) at conflict_prompt_threshold
    unit_signature: np.ndarray  # (units, bands × rows) uint8
    answered: np.ndarray  # bool: the record's answer is not blank
    refused: np.ndarray  # bool
    language: list[str]  # of the question (or answer)
    structure: list[str | None]
    ending: list[str | None]
    prompt_len: np.ndarray  # int64, characters after strip
    answer_len: np.ndarray
    meta: list[tuple[tuple[str, str], ...]]
    garbled: list[tuple[int, list[str]]] = field(default_factory=list)
    facts: list[tuple[int, list[str], list[str]]] = field(default_factory=list)
    extractive: int = 0
    names_unchecked: int = 0


class Hashers:
    """The three MinHash families of a config: whole conversations, prompts for conflicts,
    prompts for train/eval overlap. Seeded, so every block (and the eval side) agrees."""

    def __init__(self, config: CheckConfig) -> None:
        def hasher(threshold: float, salt: int) -> MinHasher:
            bands, rows = lsh_shape(threshold, config.num_perm)
            return MinHasher(bands=bands, rows=rows, seed=config.minhash_seed * 1000 + salt)

        self.full = hasher(config.near_duplicate_threshold, 1)
        self.conflict = hasher(config.conflict_prompt_threshold, 2)
        self.overlap = hasher(config.overlap_threshold, 3)

    def sketch(self, hasher: MinHasher, token_lists: list[list[str]], size: int) -> tuple[np.ndarray, np.ndarray]:
        return hasher.sketch(*shingle_hashes(token_lists, size))


def scan_block(records: list[Conversation], start: int, lines: list[int] | None, config: CheckConfig,
               hashers: Hashers, *, overlap: bool) -> Scan:
    """The compact state of one block of records (see `Scan`)."""
    checks, size = set(config.checks), config.shingle_size
    feats = [_Record(r) for r in records]
    n = len(records)
    units: list[_Record] = []
    owner: list[int] = []
    ends: list[int] = []
    for i, (record, feat) in enumerate(zip(records, feats)):
        m = record.messages
        exchange = exchange_ends(record)
        for end in [len(m)] if exchange in ([], [len(m)]) else exchange:  # a trailing user turn answers nothing
            units.append(feat if end == len(m) else _Record(Conversation(messages=m[:end])))
            owner.append(start + i)
            ends.append(end)

    def no_sketch(rows: int) -> tuple[np.ndarray, np.ndarray]:  # a check that does not run keeps no keys
        return np.zeros((rows, 0), dtype=np.uint64), np.zeros((rows, 0), dtype=np.uint8)

    # Each record's tokens are hashed once: its prompt, and a single-exchange unit's, are a
    # prefix of the whole conversation's (`_Record.full_tokens`), so a window of it.
    if checks & {"near_duplicate", "conflicting_answers"} or overlap:
        flat, first, counts = token_windows([f.full_tokens for f in feats])
    full_bands, full_signature = (hashers.full.sketch(*window_shingles(flat, first, counts, size))
                                  if "near_duplicate" in checks else no_sketch(n))
    unit_bands, unit_signature = (hashers.conflict.sketch(*_unit_windows(feats, units, owner, start, flat, first, size))
                                  if "conflicting_answers" in checks else no_sketch(len(units)))
    prompt_counts = np.fromiter((len(f.prompt_tokens) for f in feats), dtype=np.int64, count=n)
    prompt_bands, prompt_signature = (hashers.overlap.sketch(*window_shingles(flat, first, prompt_counts, size))
                                      if overlap else no_sketch(n))
    prompt_hash = [text_hash(f.prompt_tokens) if f.prompt_tokens else 0 for f in feats]
    whole = {id(f): h for f, h in zip(feats, prompt_hash)}  # a single-exchange record is its own unit
    scan = Scan(
        start=start, n=n, lines=lines,
        key_hash=np.fromiter((text_hash(f.key) for f in feats), dtype=np.uint64, count=n),
        has_content=np.fromiter((any(c for _, c in f.key) for f in feats), dtype=bool, count=n),
        full_bands=full_bands, full_signature=full_signature,
        prompt_hash=np.asarray(prompt_hash, dtype=np.uint64),
        prompt_bands=prompt_bands, prompt_signature=prompt_signature,
        unit_owner=np.asarray(owner, dtype=np.int64),
        unit_end=np.asarray(ends, dtype=np.int32),
        unit_answered=np.fromiter((bool(u.answer.strip() and u.prompt_tokens) for u in units), dtype=bool,
                                  count=len(units)),
        unit_prompt_hash=np.fromiter((whole[id(u)] if id(u) in whole else text_hash(u.prompt_tokens) if u.prompt_tokens
                                      else 0 for u in units),
                                     dtype=np.uint64, count=len(units)),
        unit_bands=unit_bands, unit_signature=unit_signature,
        answered=np.fromiter((bool(f.answer.strip()) for f in feats), dtype=bool, count=n),
        refused=np.zeros(n, dtype=bool),
        language=[], structure=[], ending=[],
        prompt_len=np.fromiter((len(f.prompt.strip()) for f in feats), dtype=np.int64, count=n),
        answer_len=np.fromiter((len(f.answer.strip()) for f in feats), dtype=np.int64, count=n),
        meta=[r.meta for r in records],
    )
    if checks & {"refusal_rate", "balance"}:
        from evaluators.lang import language

        scan.language = [language(f.question or f.answer) for f in feats]
    if "refusal_rate" in checks:
        scan.refused = np.fromiter(
            (bool(f.answer.strip()) and is_refusal(f.answer, config.refusal_patterns, config.refusal_search_chars)
             for f in feats), dtype=bool, count=n)
    if "format_consistency" in checks:
        scan.structure = [_text.answer_structure(f.answer) for f in feats]
        scan.ending = [_text.answer_ending(f.answer, config.format_min_words) for f in feats]
    if "empty_or_garbled" in checks:
        runs = iter(_text.char_run_texts([m.content for r in records for m in r.messages], config.repeated_char_run))
        scan.garbled = [(start + i, p) for i, (r, f) in enumerate(zip(records, feats)) if (p := _problems(r, f, config, runs))]
    if "unsupported_facts" in checks:
        _scan_facts(scan, records, feats, config)
    return scan


def _unit_windows(feats: list[_Record], units: list[_Record], owner: list[int], start: int, flat: np.ndarray,
                  first: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The prompt shingles of every exchange unit: a window of its record's token hashes
    when the unit is the whole record, the hashes of its own tokens otherwise (an earlier
    exchange of a multi-turn record)."""
    others = [u for u, i in zip(units, owner) if u is not feats[i - start]]
    more, more_first, _ = token_windows([u.prompt_tokens for u in others])
    at_more = iter((more_first + len(flat)).tolist())  # where each other unit's tokens start
    unit_first = [first[i - start] if u is feats[i - start] else next(at_more) for u, i in zip(units, owner)]
    unit_counts = [len(u.prompt_tokens) for u in units]
    return window_shingles(np.concatenate([flat, more]), np.asarray(unit_first, dtype=np.int64),
                           np.asarray(unit_counts, dtype=np.int64), size)


def _problems(record: Conversation, feat: _Record, c: CheckConfig, runs: Iterator[bool]) -> list[str]:
    """What is empty or garbled in one record (the `empty_or_garbled` check's evidence);
    `runs` says, message by message, whether one may hold a character run."""
    problems = []
    if not record.messages:
        return ["no turns at all"]
    if not feat.question.strip():
        problems.append("empty prompt")
    if record.messages[-1].role != "assistant":
        problems.append("no assistant answer")
    elif not feat.answer.strip():
        problems.append("empty answer")
    for turn, message in enumerate(record.messages):
        problems += [f"{message.role} turn {turn}: {p}" for p in _text.garbling(
            message.content, char_run=c.repeated_char_run, word_run=c.repeated_word_run,
            max_nonprintable=c.max_nonprintable_fraction, may_run=next(runs))]
    return problems


def _scan_facts(scan: Scan, records: list[Conversation], feats: list[_Record], config: CheckConfig) -> None:
    """Numbers everywhere; names only in scripts with capitals (see `_unsupported_facts`)."""
    from evaluators._checks_records import _is_extractive
    from evaluators.lang import has_cjk

    for i, (record, feat) in enumerate(zip(records, feats)):
        if not feat.answer.strip() or not _is_extractive(record, feat, config):
            continue
        scan.extractive += 1
        missing_numbers = sorted(_text.numbers(feat.answer) - _text.numbers(feat.prompt))
        prompt_words = _text.words(feat.prompt)
        if has_cjk(feat.answer):
            scan.names_unchecked += 1
        missing_names = sorted(w for w in _text.capitalised_words(feat.answer) if w.casefold() not in prompt_words)
        if missing_numbers or missing_names:
            scan.facts.append((scan.start + i, missing_numbers, missing_names))


# ------------------------------------------------------------------------- parallel

_JOB: tuple[Callable[[int, int], tuple[list[Conversation], list[int] | None]], CheckConfig, bool] | None = None


def _scan_range(bounds: tuple[int, int]) -> Scan:
    assert _JOB is not None
    read, config, overlap = _JOB
    records, lines = read(*bounds)
    return scan_block(records, bounds[0], lines, config, _hashers(config), overlap=overlap)


_HASHERS: dict[bytes, Hashers] = {}


def _hashers(config: CheckConfig) -> Hashers:
    key = msgspec.json.encode(config)
    if key not in _HASHERS:
        _HASHERS.clear()
        _HASHERS[key] = Hashers(config)
    return _HASHERS[key]


def scan_all(read: Callable[[int, int], tuple[list[Conversation], list[int] | None]], n: int, config: CheckConfig, *,
             overlap: bool, block_size: int, workers: int | None) -> Iterator[Scan]:
    """Scan records [0, n) in blocks of `block_size`, in order; `read(start, stop)` returns
    a block's records and their source lines. With more than one block and `workers` > 1
    (default: the CPUs this process may use), blocks are scanned by forked worker processes
    — `read` is inherited, not pickled."""
    global _JOB
    bounds = [(s, min(s + block_size, n)) for s in range(0, n, block_size)]
    workers = min(worker_count(workers), len(bounds))
    if workers <= 1:  # in this process: no shared state, safe from any thread
        hashers = _hashers(config)
        for start, stop in bounds:
            records, lines = read(start, stop)
            yield scan_block(records, start, lines, config, hashers, overlap=overlap)
        return
    import multiprocessing

    from evaluators import lang

    sample, _ = read(0, min(n, 256))
    if any(lang.has_cjk(m.content) for record in sample for m in record.messages):
        lang.load_segmenter()  # once here, inherited by every worker, rather than once in each
    with FORK_LOCK:  # the job is handed to forked workers through a module global
        _JOB = (read, config, overlap)
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                yield from pool.map(_scan_range, bounds)
        finally:
            _JOB = None

