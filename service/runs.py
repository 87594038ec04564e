"""Training runs: enqueue, the worker's train job, candidates with lineage.

A run is a job of kind `train`; its id is the job id. The job trains with
`service.training.train_adapter` (transformers.Trainer + peft) into
`<data dir>/runs/<run id>/`, streams each logging step as a progress event, and only
after the adapter is saved registers the candidate, so a failed or cancelled run leaves
no half-registered candidate. Retried after a lost worker, it resumes from the last
checkpoint.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import msgspec

from service import datasets
from service.config import Settings
from service.ids import check_id, under
from service.domain import Candidate, JobRecord, check_name, kept_indices
from service.errors import Conflict, InvalidInput
from service.jobs import JobCancelled, JobContext, enqueue, job_handler

SWEEPABLE = {"lora_r": int, "lora_alpha": float, "lora_dropout": float, "lr": float, "epochs": float, "batch_size": int,
             "max_steps": int, "grad_accum": int, "max_length": int, "seed": int, "target_modules": str}


def run_dir(settings: Settings, run_id: str) -> Path:
    return under(settings.data_dir, "runs", check_id("run", run_id))


def parse_sweep(spec: str) -> list[dict[str, Any]]:
    """`"lora_r=8,16 lr=1e-4,3e-4"` → one override dict per combination (4 here)."""
    axes: list[tuple[str, list[Any]]] = []
    for part in spec.split():
        key, sep, values = part.partition("=")
        if not sep or not values:
            raise InvalidInput(f"sweep {part!r}: expected KEY=V1,V2,...")
        if key not in SWEEPABLE:
            raise InvalidInput(f"sweep key {key!r}: expected one of {', '.join(sorted(SWEEPABLE))}")
        try:
            axes.append((key, [SWEEPABLE[key](v) for v in values.split(",") if v]))
        except ValueError:
            raise InvalidInput(f"sweep {part!r}: values must be {SWEEPABLE[key].__name__}s") from None
    return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


async def start_run(store, queue, settings: Settings, *, base: str, data: str, name: str, config: dict[str, Any]) -> JobRecord:
    """Validate everything that can be checked now, reserve the candidate name, enqueue."""
    from service.training import TrainConfig

    check_name(name, "candidate name")
    await store.get_base(base)
    dsv = await store.resolve_dataset(data)
    try:
        TrainConfig.check_request(config)
        cfg = msgspec.convert(config, TrainConfig)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"training config: {exc}") from None
    if await store.candidate_exists(name):
        raise Conflict(f"candidate {name!r} already exists; pick another --name")
    import secrets

    run_id = f"run_{secrets.token_hex(8)}"
    if not await store.reserve_candidate_name(name, run_id):
        raise Conflict(f"candidate name {name!r} is taken by queued run {await store.candidate_reserved_by(name)}")
    params = {"base": base, "dataset": dsv.ref, "dataset_id": dsv.id, "candidate": name, "config": msgspec.to_builtins(cfg)}
    return await enqueue(store, queue, settings, "train", params, job_id=run_id)


def training_records(settings: Settings, dsv) -> tuple[list, list[int]]:
    """The records a run trains on: the version minus its held-out split (kept for benchmarks)."""
    records, _ = datasets.read_records(settings.data_dir, dsv.id)
    keep = kept_indices(len(records), dsv.split.test_indices if dsv.split else ())
    return [records[i] for i in keep], keep


@job_handler("train")
def train_job(ctx: JobContext) -> dict[str, Any]:
    from service.training import TrainConfig, TrainingCancelled, train_adapter

    p = ctx.params
    if p.get("method") == "dpo":
        from service.dpo_runs import dpo_train_job

        return dpo_train_job(ctx)
    store = ctx.store
    name = p["candidate"]
    try:
        base = ctx.call(store.get_base(p["base"]))
        dsv = ctx.call(store.resolve_dataset(f"{p['dataset'].split('@')[0]}@{p['dataset_id']}"))
        records, kept = training_records(ctx.settings, dsv)
        config = msgspec.convert(p["config"], TrainConfig)
        out = run_dir(ctx.settings, ctx.job_id)
        ctx.progress(0.0, f"training on {len(records)} records of {dsv.ref}", step=0)

        def on_log(entry: dict[str, Any]) -> None:
            total = entry.get("max_steps") or 1
            ctx.progress(entry.get("step", 0) / total, f"step {entry.get('step')}/{total}", **{k: v for k, v in entry.items() if v is not None})

        try:
            result = train_adapter(base.path, records, config, out, on_log=on_log, should_stop=ctx.cancelled)
        except TrainingCancelled:
            raise JobCancelled("cancelled during training") from None
        if ctx.cancelled():
            raise JobCancelled("cancelled")
        metrics = {
            "final_loss": result.final_loss, "final_eval_loss": result.final_eval_loss, "steps": result.global_step,
            "tokens_per_s": result.tokens_per_s, "wall_s": result.wall_s, "train_records": len(result.train_indices),
            "trainable_params": result.trainable_params,
        }
        cand = Candidate(
            name=name, base=base.name, dataset=dsv.ref, dataset_id=dsv.id, run_id=ctx.job_id, adapter_dir=result.adapter_dir,
            config=msgspec.to_builtins(config), metrics=metrics, created_at=time.time(),
            held_out=sorted(dsv.split.test_indices) if dsv.split else [],
        )
        ctx.call(store.add_candidate(cand))
        return {"candidate": name, "adapter_dir": result.adapter_dir, "record_indices": kept, **metrics,
                **_register_remote(ctx, name)}
    finally:
        ctx.call(store.release_candidate_name(name))


def _register_remote(ctx: JobContext, name: str) -> dict[str, Any]:
    """Load the new candidate's adapter on the remote generation server, if there is one.
    The candidate is saved either way: a refusal is a warning on the finished run (and
    activating the candidate later tries again), not a failed run."""
    from service.adapter_sync import register_candidates
    from service.errors import ArenaError

    if not ctx.settings.generation_url:
        return {}
    try:
        ctx.call(register_candidates(ctx.store, ctx.settings, [name]))
    except ArenaError as exc:
        warning = f"candidate {name!r} is saved, but its adapter is not loaded for generation: {exc.message}"
        ctx.event(type="warning", message=warning)
        return {"remote_adapter": "not loaded", "warnings": [warning]}
    return {"remote_adapter": "loaded"}


class _Curve(msgspec.Struct):
    """The part of a finished run's metrics that SFT (`TrainResult`) and DPO (`DPOResult`) share."""

    loss_curve: list[dict[str, Any]]


def loss_curve(settings: Settings, events: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """Loss points of a run: from its metrics file when finished, else from its progress events."""
    from service.training import METRICS_FILE

    try:
        result = msgspec.json.decode((run_dir(settings, run_id) / METRICS_FILE).read_bytes(), type=_Curve)
    except FileNotFoundError:
        result = None
    if result is not None:
        return result.loss_curve
    return [
        {"step": e.get("step"), "epoch": e.get("epoch"), "loss": e.get("loss"), "eval_loss": e.get("eval_loss"), "lr": e.get("lr")}
        for e in events
        if e.get("type") == "progress" and (e.get("loss") is not None or e.get("eval_loss") is not None)
    ]
