"""The next round's dataset from a data-debugging report (`arena curate`): which records to
drop and why, and which error-level findings the kept records still hold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.config import Settings
from service.errors import InvalidInput


def parse_source_rule(rule: str) -> tuple[str, str]:
    """`VALUE` (of the field `source`) or `FIELD=VALUE` -> (field, value)."""
    field, sep, value = rule.partition("=")
    field, value = (field.strip(), value.strip()) if sep else ("source", rule.strip())
    if not field or not value:
        raise InvalidInput(f"--drop-source {rule!r}: expected VALUE (a source) or FIELD=VALUE, e.g. annotator=ann-7")
    return field, value


def open_errors(report: dict[str, Any], removed: set[int]) -> list[dict[str, Any]]:
    """The report's error-level check findings that the next round still holds once the
    `removed` records are gone (a conflict both of whose sides were kept, a garbled record
    kept), with their records that are kept: what `--drop-flagged` leaves to a person."""
    from evaluators.datachecks import GROUP_CHECKS

    still = []
    for finding in (report.get("checks") or {}).get("findings", []):
        if finding["severity"] != "error":
            continue
        kept = [i for i in finding["record_indices"] if i not in removed]
        if len(kept) >= (2 if finding["check"] in GROUP_CHECKS else 1):
            still.append({"check": finding["check"], "record_indices": kept, "message": finding["message"]})
    return still


def curate_from_report(settings: Settings, report: dict[str, Any], *, drop_top: int | None, drop_flagged: bool,
                       budget: int | None, seed: int = 0, drop_sources: Sequence[str] = (), reason: str | None = None):
    """The next round's records: drop the top-K records by score and/or those flagged by the
    dataset checks or contradicting a gold answer, and every record of each `drop_sources`
    rule (`VALUE` of `source`, or `FIELD=VALUE`; `reason` says why); optionally a coreset
    to `budget`."""
    from evaluators import curation
    from service import datasets

    records, _ = datasets.read_records(settings.data_dir, report["dataset"]["id"])
    traced = {e["index"] for e in report["examples"]}
    drop: dict[int, str] = {}
    for rule in drop_sources:
        field, value = parse_source_rule(rule)
        members = [i for i, r in enumerate(records) if r.metadata.get(field) == value]
        if not members:
            seen = sorted({r.metadata[field] for r in records if field in r.metadata})
            raise InvalidInput(f"--drop-source {rule!r}: no record of {report['dataset']['ref']} has {field}={value!r}; "
                               f"its {field} values: {', '.join(seen[:20]) or '(the records carry no ' + field + ')'}")
        for i in members:
            drop.setdefault(i, f"{field} {value} dropped" + (f": {reason}" if reason else ""))
    if drop_top:
        scores = [float("nan")] * len(records)
        for e in report["examples"]:
            scores[e["index"]] = e["score"]
        drop.update(curation.drop_top(scores, drop_top, label="attributed to failures"))
    if drop_flagged:
        # Records contradicting a failing item's gold answer, and what the dataset checks say is
        # safe to drop (duplicates beyond the first copy, garbled records, train/eval overlap).
        # Conflicting answers, refusals and format drift need a person to pick the right side.
        for e in report["examples"]:
            if e["reference_conflict"] and e["index"] not in drop:
                drop[e["index"]] = "contradicts the gold answer of a failing benchmark item"
        for finding in (report.get("checks") or {}).get("findings", []):
            if finding["check"] not in curation.DEFAULT_DROP_CHECKS:
                continue
            keep = (finding.get("details") or {}).get("keep")
            for i in finding["record_indices"]:
                if i != keep and i not in drop:
                    drop[i] = f"{finding['check']}: {finding['message']}"
    # Records outside the traced set (the held-out split) stay out of the training set.
    for i in range(len(records)):
        if i not in traced:
            drop.setdefault(i, "held out for benchmarks in the source version")
    return curation.curate(records, drop=drop, budget=budget, seed=seed)
