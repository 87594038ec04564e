"""What every dataset check reads: a record's text features, computed once, and the
context (records, line numbers, config) that names records in findings."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from evaluators import _text
from evaluators._similarity import ShingleIndex
from evaluators.records import Conversation, exchange_ends

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
