"""The `balance` check: how a dataset is spread over its metadata (sources, annotators, task
types, domains — `Conversation.meta`) and over the languages of its questions, and where
one value crowds out the rest. Also `with_sources`, which says which sources the records of
a duplicate or conflict finding come from."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from evaluators._checks_context import Check, Finding, _Context


def _balance(ctx: _Context) -> Check:
    config = ctx.config
    fields: dict[str, list[str | None]] = {}
    names = sorted({name for meta in ctx.meta for name, _ in meta})
    for name in names:
        fields[name] = [dict(meta).get(name) for meta in ctx.meta]
    fields["language"] = ctx.language
    n = ctx.n
    stats: dict[str, Any] = {}
    findings = []
    for name, values in fields.items():
        counts = Counter(v for v in values if v is not None)
        if not counts or len(counts) >= max(2, n):  # nothing said, or an id per record
            continue
        missing = sum(v is None for v in values)
        stats[name] = {"values": dict(counts.most_common(50)), "distinct": len(counts), "missing": missing}
        if missing and name != "language" and missing < n:
            findings.append(ctx.finding(
                "balance", "info", [i for i, v in enumerate(values) if v is None],
                f"{missing} of {n} records carry no {name!r} ({n - missing} do): they cannot be told apart by {name}",
                field=name, missing=missing))
        top, top_n = counts.most_common(1)[0]
        share = top_n / n
        if len(counts) > 1 and share >= config.balance_majority:
            rest = ", ".join(f"{v} {c}" for v, c in counts.most_common()[1:6])
            findings.append(ctx.finding(
                "balance", "warning", [i for i, v in enumerate(values) if v is not None and v != top],
                f"{name} {top!r} holds {share:.0%} of the records ({top_n} of {n}); the rest: {rest} — "
                f"a model trained on it may learn little of them",
                field=name, majority=top, share=share))
    return findings, stats


def with_sources(ctx: _Context, findings: list[Finding], checks: tuple[str, ...]) -> list[Finding]:
    """`findings` of `checks` with `details["sources"]` (the `source` values of their records)
    and the sources named in their message, when the records carry a source."""
    out = []
    for f in findings:
        sources = sorted({s for i in f.record_indices if (s := dict(ctx.meta[i]).get("source")) is not None})
        if f.check in checks and sources:
            f = msgspec.structs.replace(f, message=f"{f.message} (source{'s' if len(sources) > 1 else ''}: {', '.join(sources)})",
                                        details={**f.details, "sources": sources})
        out.append(f)
    return out
