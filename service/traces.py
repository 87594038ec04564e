"""Tracing failures to training records: the `trace` job, reports, and curation.

Failures come from benchmark samples below a threshold (eval runs) and from arena votes
the candidate lost or that were voted both-bad. The job scores every training record of
the candidate's dataset version (`evaluators.attribution.trace_failures`, with gradient
features cached per candidate and dataset version under `<data dir>/features/`), runs
the dataset checks, and writes report.json / report.html / report.md under
`<data dir>/reports/<report id>/`.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import msgspec

from evaluators.records import Conversation, Message, user_turn
from service.config import Settings
from service.errors import InvalidInput, NotFound
from service.jobs import JobContext, enqueue, job_handler

PRIMARY_METRICS = ("exact_match", "acc", "acc_norm", "token_f1", "rouge_l", "chrf")


def report_dir(settings: Settings, report_id: str) -> Path:
    return settings.data_dir / "reports" / report_id


def eval_failures(settings: Settings, eval_id: str, candidate: str, *, metric: str | None = None, threshold: float = 1.0):
    """(failures, passes) of `candidate` in eval `eval_id`: samples whose metric is below
    `threshold` fail; the others are the contrast set."""
    from evaluators.attribution import Failure

    directory = settings.data_dir / "evals" / eval_id
    files = sorted(directory.glob("**/samples_*.jsonl"))
    if not files:
        raise NotFound(f"eval {eval_id!r} has no per-sample results under {directory}")
    failures, passes = [], []
    for path in files:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("candidate") not in (None, candidate):
                continue
            name = metric or next((m for m in PRIMARY_METRICS if isinstance(row.get(m), (int, float))), None)
            if name is None or not isinstance(row.get(name), (int, float)):
                raise InvalidInput(f"eval {eval_id}: samples have no numeric metric {metric or PRIMARY_METRICS}")
            target = row.get("target")
            gold = target[0] if isinstance(target, list) and target else target
            item = Failure(prompt=user_turn(str(row.get("prompt", ""))), output=str(row.get("response", "")),
                           gold=None if gold is None else str(gold), id=f"{eval_id}:{row.get('doc_id')}")
            (failures if float(row[name]) < threshold else passes).append(item)
    return failures, passes


def _side(vote: dict[str, Any], side: str) -> tuple[str, str]:
    """(prompt, answer) of one side of a logged vote (FastChat conversation or answer fields)."""
    conversation = vote.get(f"conversation_{side}") or []
    prompt = vote.get("prompt") or next((t.get("content", "") for t in conversation if t.get("role") == "user"), "")
    answer = vote.get(f"answer_{side}")
    if answer is None:
        answer = "\n".join(t.get("content", "") for t in conversation if t.get("role") == "assistant")
    return str(prompt), str(answer)


async def battle_failures(store, candidate: str):
    """Arena failures of `candidate`: battles it lost or that were voted both-bad (human and judge)."""
    from evaluators.attribution import Failure

    failures = []
    async for vote_id, vote in store.iter_votes():
        for side, other in (("a", "b"), ("b", "a")):
            if vote.get(f"model_{side}") != candidate:
                continue
            lost = vote.get("winner") == f"model_{other}" or vote.get("winner") == "tie (bothbad)"
            prompt, answer = _side(vote, side)
            if lost and prompt and answer:
                failures.append(Failure(prompt=user_turn(prompt), output=answer, gold=vote.get("reference"), id=f"vote:{vote_id}"))
    return failures


async def start_trace(store, queue, settings: Settings, *, candidate: str, evals: list[str], battles: bool, top: int = 50,
                      threshold: float = 1.0, metric: str | None = None) -> Any:
    """Validate and enqueue a trace job; its id is the report id."""
    await store.get_candidate(candidate)
    if not evals and not battles:
        raise InvalidInput("nothing to trace: give eval ids (--eval) and/or --battles")
    for eval_id in evals:
        if not (settings.data_dir / "evals" / eval_id).exists():
            raise NotFound(f"no eval {eval_id!r}")
    report_id = f"rep_{secrets.token_hex(8)}"
    params = {"candidate": candidate, "evals": evals, "battles": battles, "top": top, "threshold": threshold, "metric": metric}
    return await enqueue(store, queue, settings, "trace", params, job_id=report_id)


@job_handler("trace")
def trace_job(ctx: JobContext) -> dict[str, Any]:
    from evaluators.attribution import trace_failures
    from evaluators.datachecks import check_dataset
    from evaluators.reports import build_report, write_report
    from service import datasets
    from service.runs import run_dir
    from service.training import load_train_result

    p, store, settings = ctx.params, ctx.store, ctx.settings
    cand = ctx.call(store.get_candidate(p["candidate"]))
    base = ctx.call(store.get_base(cand.base))
    dsv = ctx.call(store.resolve_dataset(f"{cand.dataset.split('@')[0]}@{cand.dataset_id}"))
    result = load_train_result(run_dir(settings, cand.run_id))
    if result is None or not result.checkpoints:
        raise InvalidInput(f"candidate {cand.name}: its run {cand.run_id} kept no checkpoints to trace with")
    records, lines = datasets.read_records(settings.data_dir, dsv.id)
    held = set(dsv.split.test_indices) if dsv.split else set()
    version_index = [i for i in range(len(records)) if i not in held]  # what the run was given
    train_records = [records[i] for i in version_index]
    trained = set(result.train_indices)
    in_training = [j in trained for j in range(len(train_records))]

    failures, passes, sources = [], [], []
    for eval_id in p["evals"]:
        f, ok = eval_failures(settings, eval_id, cand.name, metric=p.get("metric"), threshold=p.get("threshold", 1.0))
        failures += f
        passes += ok
        sources += [f"eval {eval_id}"] * len(f)
    if p["battles"]:
        f = ctx.call(battle_failures(store, cand.name))
        failures += f
        sources += ["arena"] * len(f)
    if not failures:
        raise InvalidInput(f"no failures to trace for {cand.name}: every sample passed and no battle was lost")
    ctx.progress(0.02, f"{len(failures)} failures, {len(passes)} passes, {len(train_records)} records")
    checks = check_dataset(train_records, line_numbers=[lines[i] for i in version_index])

    def progress(stage: str, done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.progress(0.05 + 0.9 * done / max(total, 1), f"{stage} {done}/{total}")

    attribution = trace_failures(
        base.path, [c.path for c in result.checkpoints], train_records, failures, passes,
        store_dir=settings.data_dir / "features" / cand.name / dsv.id, progress=progress,
        max_length=int(cand.config.get("max_length", 512)),
    )
    # Report in the version's own numbering: record i of the trace is version record version_index[i].
    attribution = msgspec.structs.replace(
        attribution,
        records=[msgspec.structs.replace(r, index=version_index[r.index]) for r in attribution.records],
        ranking=[version_index[i] for i in attribution.ranking],
        failures=[msgspec.structs.replace(t, top_records=[version_index[i] for i in t.top_records],
                                          opposing_records=[version_index[i] for i in t.opposing_records],
                                          conflicting_records=[version_index[i] for i in t.conflicting_records])
                  for t in attribution.failures],
    )
    checks = _reindex_checks(checks, version_index, len(records))
    in_version_training = [False] * len(records)
    for j, i in enumerate(version_index):
        in_version_training[i] = in_training[j]
    report = build_report(
        report_id=ctx.job_id,
        candidate={"name": cand.name, "run_id": cand.run_id, "base": cand.base},
        dataset={"ref": dsv.ref, "id": dsv.id, "name": dsv.name},
        records=records, line_numbers=lines, in_training=in_version_training, attribution=attribution,
        failures=failures, failure_sources=sources, checks=checks, top=int(p.get("top", 50)),
    )
    paths = write_report(report, report_dir(settings, ctx.job_id))
    top = report["examples"][: min(10, len(report["examples"]))]
    return {"report_dir": str(report_dir(settings, ctx.job_id)), "paths": {k: str(v) for k, v in paths.items()},
            "failures": len(failures), "top": [{"index": e["index"], "score": e["score"]} for e in top]}


def _reindex_checks(checks, version_index: list[int], n: int):
    from evaluators.datachecks import CheckReport

    def details(d):
        return {**d, "keep": version_index[d["keep"]]} if isinstance(d, dict) and isinstance(d.get("keep"), int) else d

    findings = [msgspec.structs.replace(f, record_indices=tuple(version_index[i] for i in f.record_indices), details=details(f.details))
                for f in checks.findings]
    return CheckReport(n_records=n, summary=checks.summary, findings=findings) if hasattr(checks, "summary") else checks


def load_report(settings: Settings, report: str) -> dict[str, Any]:
    """A report by id, or by a path to a report directory / report.json."""
    path = Path(report)
    if path.is_dir():
        path = path / "report.json"
    if not path.exists():
        if not report.startswith("rep_") or "/" in report:
            raise NotFound(f"no report {report!r} (give a report id or a report directory)")
        path = report_dir(settings, report) / "report.json"
    if not path.exists():
        raise NotFound(f"no report {report!r}")
    return json.loads(path.read_text())


def curate_from_report(settings: Settings, report: dict[str, Any], *, drop_top: int | None, drop_flagged: bool,
                       budget: int | None, seed: int = 0):
    """The next round's records: drop the top-K records by score and/or those flagged by the
    dataset checks or contradicting a gold answer; optionally a coreset to `budget`."""
    from evaluators import curation
    from service import datasets

    records, _ = datasets.read_records(settings.data_dir, report["dataset"]["id"])
    traced = {e["index"] for e in report["examples"]}
    drop: dict[int, str] = {}
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
