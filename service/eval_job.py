"""The eval job (`eval_job`, kind `eval`): the worker's half of `service.evals`. It registers
the candidates' adapters with the generation backend, runs `evaluators.runner.evaluate`
(all candidates in the same backend calls, so they share mixed-adapter batches), writes
lm-eval's layout per candidate and only then records the `EvalRecord`.
"""

from __future__ import annotations

import math
import shutil
import time
from typing import Any

import msgspec

from evaluators.runner import EvalResult, evaluate
from evaluators.tasks import (
    TaskConfig,
    TaskError,
    build_requests,
)
from service.eval_backend import BackendModel, shared_backend
from service.errors import InvalidInput
from service.jobs import JobCancelled, JobContext, job_handler
from service.store.evals import EvalCandidate, EvalRecord, MetricScore

from service.evals import WORST_KEPT, adapter_sha256, backend_label, eval_cache_key, eval_dir, read_docs

_TEXT_KEPT = 2000


# --- the job -------------------------------------------------------------------------------------


def _number(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _clip(text: Any) -> Any:
    return text[:_TEXT_KEPT] + "…" if isinstance(text, str) and len(text) > _TEXT_KEPT else text


def worst_samples(result: EvalResult, metric: str, n: int = WORST_KEPT) -> list[dict[str, Any]]:
    """The `n` samples that scored worst on `metric`, ties by document order.

    A sample is judged by the metric's aggregate over that sample alone: per-sample
    values of perplexities are log-likelihoods (higher is better) although the
    aggregate is better lower, so the raw value would rank them backwards."""
    from evaluators.metrics import AGGREGATIONS

    spec = result.metrics[metric]
    to_aggregate = AGGREGATIONS[spec.aggregation].from_ratio
    sign = 1.0 if spec.higher_is_better else -1.0

    def badness(s) -> tuple[float, int]:
        alone = float(to_aggregate(s.scores[metric] / (s.weights.get(metric, 1.0) or 1.0)))
        return (sign * alone if math.isfinite(alone) else -math.inf, s.doc_id)

    ranked = sorted(result.samples, key=badness)[:n]
    return [{"doc_id": s.doc_id, "doc_hash": s.doc_hash, "prompt": _clip(s.prompt),
             "target": s.references[0] if len(s.references) == 1 else list(s.references),
             "response": _clip(s.response), "scores": s.scores} for s in ranked]


@job_handler("eval")
def eval_job(ctx: JobContext) -> dict[str, Any]:
    p = ctx.params
    store = ctx.store
    task = msgspec.convert(p["task"], TaskConfig)
    docs = read_docs(ctx.settings, p["docs_id"])
    try:
        build_requests(task, docs)  # a template that fails on a document fails the job with its message, before a model loads
    except (TaskError, ValueError, TypeError) as exc:
        raise InvalidInput(str(exc)) from None
    candidates = [ctx.call(store.get_candidate(name)) for name in p["candidates"]]
    bases = {c.base: ctx.call(store.get_base(c.base)) for c in candidates}
    names = [c.name for c in candidates]
    ctx.progress(0.0, f"loading {', '.join(names)} for {task.task}", done=0)
    backend = shared_backend(ctx.settings)
    if hasattr(backend, "register"):
        for c in candidates:
            backend.register(c.name, bases[c.base].path, c.adapter_dir)
    else:  # a remote server: load the adapters it lacks (a refusal fails the job with its reason)
        from service.adapter_sync import register_candidates

        ctx.call(register_candidates(store, ctx.settings, names, backend=backend))

    def on_progress(done: int, total: int) -> None:
        ctx.check_cancelled()  # raising here stops the runner between backend calls
        ctx.progress(0.98 * done / total, f"{done}/{total} docs", done=done, total=total)

    # Two backend batches' worth of rows per call: full batches, and progress between them.
    batch = getattr(backend, "max_batch_size", 32)
    started = time.perf_counter()
    results = evaluate(task, docs, BackendModel(backend), names, p["limit"], on_progress,
                       chunk_docs=max(1, 2 * batch // len(names)))
    wall = time.perf_counter() - started
    if ctx.cancelled():
        raise JobCancelled("cancelled")
    out = eval_dir(ctx.settings, ctx.job_id)
    primary = task.metrics[0].metric
    entries, cache_keys = [], {}
    for c in candidates:
        result = results[c.name]
        base = bases[c.base]
        sha = adapter_sha256(c.adapter_dir)
        lineage = {
            "candidate": c.name, "base": base.name, "base_path": base.path, "adapter": c.adapter_dir,
            "adapter_sha256": sha, "train_dataset": c.dataset, "train_dataset_id": c.dataset_id, "run_id": c.run_id,
        }
        config_extra = {
            "model_args": lineage, **lineage, "eval_id": ctx.job_id, "task_hash": p["task_hash"],
            "dataset": p["dataset"], "dataset_id": p["dataset_id"], "backend": backend_label(ctx.settings),
        }
        folder = out / c.name
        shutil.rmtree(folder, ignore_errors=True)  # a redelivered job rewrites, never adds
        results_path, samples_path = result.write(folder, config_extra)
        metrics = {name: MetricScore(_number(m.value), _number(m.stderr), m.higher_is_better)
                   for name, m in result.metrics.items()}
        entries.append(EvalCandidate(
            name=c.name, base=base.name, base_path=base.path, adapter_dir=c.adapter_dir, adapter_sha256=sha,
            train_dataset=c.dataset, train_dataset_id=c.dataset_id, run_id=c.run_id, metrics=metrics,
            results_path=str(results_path), samples_path=str(samples_path), worst=worst_samples(result, primary),
        ))
        cache_keys[c.name] = eval_cache_key(ctx.settings, c, p["task_hash"], p["limit"])
    first = results[names[0]]
    record = EvalRecord(
        id=ctx.job_id, task=task.task, task_hash=p["task_hash"], task_config=p["task"], dataset=p["dataset"],
        dataset_id=p["dataset_id"], docs_id=p["docs_id"], primary_metric=primary, limit=p["limit"],
        n_docs=first.n_effective, n_original=first.n_original, candidates=entries, backend=backend_label(ctx.settings),
        wall_s=wall, samples_per_s=first.n_effective * len(names) / wall if wall > 0 else 0.0, created_at=time.time(),
    )
    ctx.call(store.add_eval(record, cache_keys))
    return {"eval_id": record.id, "task": record.task, "n_docs": record.n_docs, "samples_per_s": record.samples_per_s,
            "scores": {e.name: {m: s.value for m, s in e.metrics.items()} for e in entries}}
