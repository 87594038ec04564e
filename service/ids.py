"""The formats of every id the service makes, checked wherever one comes in.

An id from a URL or a body reaches a Redis key or a file path only through `check_id`
(the key builders in `service.store.keys` and the directory helpers call it), so
`../../x` or `b1:voted` is "no such thing" (404), never a key or a path elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

from service.errors import NotFound

#: kind -> the full-match pattern of its ids (see where each is made).
ID_FORMATS: dict[str, re.Pattern[str]] = {
    "battle": re.compile(r"[A-Za-z0-9_-]{1,64}"),  # made by secrets.token_urlsafe(16); no ":" or "/"
    "eval": re.compile(r"eval_[0-9a-f]{16}"),
    "run": re.compile(r"run_[0-9a-f]{16}"),
    "report": re.compile(r"rep_[0-9a-f]{16}"),
    "job": re.compile(r"(?:job|run|eval|rep)_[0-9a-f]{16}"),
    "dataset version": re.compile(r"[0-9a-f]{16}"),
    "correction": re.compile(r"corr_[0-9a-f]{16}"),
    "preference set": re.compile(r"[0-9a-f]{64}"),  # the SHA-256 of its pairs (service.dpo_runs)
    # user-chosen names (datasets, candidates, bases, reviewers): see domain.NAME_RE
    "name": re.compile(r"[^\W_][\w.\-]{0,63}"),
}


def check_id(kind: str, value: object) -> str:
    """`value` if it is a well-formed `kind` id, else `NotFound` ("no <kind> '<value>'"):
    an id that cannot have been made cannot name anything."""
    if not isinstance(value, str) or not ID_FORMATS[kind].fullmatch(value):
        shown = repr(value)[:80]
        raise NotFound(f"no {kind} {shown}")
    return value


def under(root: Path, *parts: str) -> Path:
    """`root / parts`, resolved, and checked to stay under `root` (a symlink or `..` that
    leads out is "not found", never followed)."""
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise NotFound(f"no {'/'.join(parts)[:80]!r} under the data directory")
    return path
