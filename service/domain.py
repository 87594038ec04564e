"""Typed records the service stores and returns (msgspec Structs at the edges)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from service.errors import InvalidInput

#: Letters and digits of any script (Chinese names such as 客服-v2 included), '.', '_', '-';
#: starting with a letter or digit. No space, '/', ':' or other punctuation.
NAME_RE = re.compile(r"[^\W_][\w.\-]{0,63}")


def check_name(name: str, what: str = "name") -> str:
    """Validate a user-chosen name (datasets, candidates, bases, reviewers): Unicode letters
    and digits in NFC, '.', '_', '-'. A name is never a path on its own: it cannot hold a
    separator, nor be "." or "..", so the eval folder named after a candidate stays inside
    its eval."""
    import unicodedata

    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or unicodedata.normalize("NFC", name) != name:
        raise InvalidInput(
            f"{what} {name!r} is not valid: expected 1-64 letters or digits (any script), '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def now() -> float:
    return time.time()


class Split(msgspec.Struct, kw_only=True):
    """A deterministic held-out split of a dataset version."""

    test_fraction: float
    seed: int
    test_indices: list[int]

    def train_indices(self, n: int) -> list[int]:
        return kept_indices(n, self.test_indices)


def kept_indices(n: int, held: Iterable[int]) -> list[int]:
    """0..n-1 without the `held` indices (a version's training records, in order)."""
    held = set(held)
    return [i for i in range(n) if i not in held]


class DatasetVersion(msgspec.Struct, kw_only=True):
    id: str  # content hash of the normalised records
    name: str
    version: int  # 1-based position among the name's versions
    source_filename: str
    format: str
    record_count: int
    created_at: float
    parent: str | None = None  # lineage: the version this one was curated from
    note: str = ""
    split: Split | None = None
    warnings: list[str] = []  # fields the reader did not use (named), and such

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class JobRecord(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    params: dict[str, Any]
    status: JobStatus = "queued"
    progress: float = 0.0
    message: str = ""
    error: str | None = None
    result: dict[str, Any] | None = None
    created_at: float = msgspec.field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    attempts: int = 0
    worker: str | None = None
    cancel_requested: bool = False
    info: dict[str, Any] = msgspec.field(default_factory=dict)  # latest progress fields (step, loss, ...)


class BaseModel(msgspec.Struct, kw_only=True):
    """A registered base: a local Hugging Face causal-LM directory."""

    name: str
    path: str
    source: str  # what the user gave: a directory, a hub id, or "tiny"
    created_at: float
    parameters: int = 0
    vocab_size: int = 0
    context_length: int = 0
    chat_template: bool = False


class PendingUnload(msgspec.Struct, kw_only=True):
    """A retired candidate's adapter the generation server could not be told to unload
    (down, overloaded, refusing us): kept until an unload succeeds or the server is found
    without it (`service.adapter_sync`)."""

    name: str
    path: str  # the adapter's path as the server was given it
    server: str  # the generation server's URL when it was retired
    since: float
    attempts: int = 1
    error: str = ""  # what the last attempt met


class Candidate(msgspec.Struct, kw_only=True):
    """A trained adapter on a base, with its lineage. A DPO candidate names its parent
    candidate and its preference data, and keeps the parent's dataset (the SFT data is
    part of what made it)."""

    name: str
    base: str
    dataset: str  # NAME@N
    dataset_id: str
    run_id: str
    adapter_dir: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    created_at: float
    active: bool = True  # competes in the arena
    method: Literal["sft", "dpo"] = "sft"
    parent: str | None = None  # the candidate a DPO run started from (its SFT adapter, also its reference)
    #: DPO: where the preference pairs came from ("file NAME" or "arena human"), their SHA-256 and count.
    preferences: dict[str, Any] | None = None
    #: The version's held-out indices when the run was given its records ([]: none held out;
    #: None: not recorded, a candidate from before this was kept): a later re-split of the
    #: version does not change what the candidate was trained on (`arena trace` reads this).
    held_out: list[int] | None = None
