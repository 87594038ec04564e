"""What every dataset check reads: a record's text features, and the context (the scanned
state of every record, line numbers, config) that names records in findings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import numpy as np

from evaluators import _text
from evaluators.records import Conversation

if TYPE_CHECKING:
    from evaluators.datachecks import CheckConfig

Severity = Literal["error", "warning", "info"]


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
    """What every check reads: the scanned state of every record (`_checks_scan.Scan`,
    concatenated), line numbers and config, and `feature(i)` — a record's text features,
    read back from the source when a check must confirm a pair or quote a record."""

    def __init__(self, read: Callable[[int, int], tuple[list[Conversation], list[int] | None]], n: int,
                 scans: list[Any], lines: Sequence[int] | None, config: CheckConfig,
                 ids: Sequence[int] | None = None) -> None:
        self.read, self.n, self.config, self.ids = read, n, config, ids
        if lines is None and scans and scans[0].lines is not None:
            lines = [line for s in scans for line in s.lines]
        self.lines = lines
        cat = (lambda name: np.concatenate([getattr(s, name) for s in scans]) if scans else np.empty(0))
        for name in ("key_hash", "has_content", "full_bands", "full_signature", "prompt_hash", "prompt_bands", "prompt_signature", "unit_owner",
                     "unit_end", "unit_answered", "unit_prompt_hash", "unit_bands", "unit_signature", "answered", "refused", "prompt_len",
                     "answer_len"):
            setattr(self, name, cat(name))
        self.language = [x for s in scans for x in s.language]
        self.structure = [x for s in scans for x in s.structure]
        self.ending = [x for s in scans for x in s.ending]
        self.meta = [x for s in scans for x in s.meta]
        self.garbled = [x for s in scans for x in s.garbled]
        self.facts = [x for s in scans for x in s.facts]
        self.extractive = sum(s.extractive for s in scans)
        self.names_unchecked = sum(s.names_unchecked for s in scans)
        self._records: dict[int, Conversation] = {}
        self._features: dict[tuple[int, int], _Record] = {}

    def record(self, index: int) -> Conversation:
        """Record `index`, read back from the source (kept: a pair's records are read again)."""
        if index not in self._records:
            if len(self._records) > 100_000:
                self._records.clear()
            self._records[index] = self.read(index, index + 1)[0][0]
        return self._records[index]

    def prefetch(self, indices: Sequence[int] | np.ndarray) -> None:
        """Read the records at `indices` in runs (one read per run of neighbours, not per record)."""
        todo = sorted({int(i) for i in indices} - self._records.keys())
        k = 0
        while k < len(todo):
            stop = k
            while stop + 1 < len(todo) and todo[stop + 1] - todo[stop] < 16 and todo[stop + 1] - todo[k] < 4096:
                stop += 1
            records, _ = self.read(todo[k], todo[stop] + 1)
            for i in todo[k : stop + 1]:
                self._records[i] = records[i - todo[k]]
            k = stop + 1

    def feature(self, index: int) -> _Record:
        """The text features of record `index`."""
        return self.unit(index, -1)

    def unit(self, index: int, end: int) -> _Record:
        """The features of record `index` up to message `end` (-1: the whole record)."""
        key = (index, end)
        if key not in self._features:
            if len(self._features) > 100_000:
                self._features.clear()
            record = self.record(index)
            whole = end < 0 or end == len(record.messages)
            self._features[key] = _Record(record if whole else Conversation(messages=record.messages[:end]))
        return self._features[key]

    def unit_feature(self, u: int) -> _Record:
        """The features of exchange unit `u`."""
        return self.unit(int(self.unit_owner[u]), int(self.unit_end[u]))

    def finding(self, check: str, severity: Severity, indices: Sequence[int], message: str, **details: Any) -> Finding:
        indices = tuple(sorted(int(i) for i in indices))
        lines = tuple(self.lines[i] for i in indices) if self.lines is not None else ()
        return Finding(check, severity, indices, lines, message, details)

    def name(self, index: int) -> str:
        """'#3 (line 4)' — how messages refer to a record (by its id, when the caller gave ids)."""
        shown = index if self.ids is None else self.ids[index]
        return f"#{shown} (line {self.lines[index]})" if self.lines is not None else f"#{shown}"

    def names(self, indices: Sequence[int]) -> str:
        return ", ".join(self.name(i) for i in sorted(indices))


Check = tuple[list[Finding], dict[str, Any]]  # a check's findings and its summary stats


def _quote(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
