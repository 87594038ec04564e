"""DPO runs: a training run (job kind `train`, `params["method"] == "dpo"`) that starts
from an SFT candidate and trains on preference pairs; on success, a candidate with its
lineage (base, parent candidate, preference source and hash, method, config).

The pairs are snapshotted when the run is enqueued, from a file or from the arena's vote
log, and stored content-addressed under `<data dir>/preferences/<sha256>.jsonl`: a retry
after a lost worker trains on exactly the same pairs, and the candidate's hash names them.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import msgspec

from service.config import Settings
from service.domain import Candidate, JobRecord, check_name
from service.errors import Conflict, InvalidInput
from service.ids import check_id, under
from service.jobs import JobCancelled, JobContext, enqueue
from service.preferences import PreferencePair, encode_pairs, export_preferences, left_out_said, preferences_sha256


class PreferenceSource(msgspec.Struct, kw_only=True, frozen=True):
    """Where a run's pairs come from: `kind` "file" (with `name`, the file's name) or
    "arena" (with `boards`, the vote boards exported)."""

    kind: str
    name: str | None = None
    boards: tuple[str, ...] = ("human",)

    def describe(self) -> str:
        return f"file {self.name}" if self.kind == "file" else f"arena {'+'.join(self.boards)}"


def arena_source(board: str) -> PreferenceSource:
    """The arena's votes of `board` ("human", "judge" or "all") as a preference source."""
    if board not in ("human", "judge", "all"):
        raise InvalidInput(f"board {board!r}: expected human, judge or all")
    return PreferenceSource(kind="arena", boards=("human", "judge") if board == "all" else (board,))


def preferences_path(settings: Settings, sha256: str) -> Path:
    return under(settings.data_dir, "preferences", f"{check_id('preference set', sha256)}.jsonl")


def store_preferences(settings: Settings, pairs: list[PreferencePair]) -> str:
    """Write the pairs content-addressed under the data dir (once); returns their SHA-256."""
    sha = preferences_sha256(pairs)
    path = preferences_path(settings, sha)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(encode_pairs(pairs))
        tmp.replace(path)
    return sha


async def start_dpo_run(store, queue, settings: Settings, *, base: str, parent: str, name: str, source: PreferenceSource,
                        pairs: list[PreferencePair] | None = None, config: dict[str, Any]) -> JobRecord:
    """Check everything that can be checked now, snapshot the pairs (`pairs` as read from
    a file, or the arena's votes of `source.boards`), reserve the name, enqueue.

    Raises `NotFound` (unknown base or parent candidate), `InvalidInput` (no pairs, a bad
    config, a parent on another base) or `Conflict` (the name is taken)."""
    from service.dpo import DPOTrainConfig

    check_name(name, "candidate name")
    await store.get_base(base)
    sft = await store.get_candidate(parent)
    if sft.base != base:
        raise InvalidInput(f"candidate {parent!r} is an adapter on base {sft.base!r}, not {base!r}: use --base {sft.base}")
    try:
        cfg = msgspec.convert(config, DPOTrainConfig)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"DPO config: {exc}") from None
    skipped: dict[str, int] | None = None  # votes that gave no pair (or fewer than they could), by reason
    if source.kind == "arena":
        pairs, skipped = await export_preferences(store, boards=source.boards)
        if not pairs:
            left_out = left_out_said(skipped) if skipped else "no votes"
            raise InvalidInput(f"no preference pairs in the arena's {'+'.join(source.boards)} votes ({left_out}); "
                               "ties and both-bad votes give none")
    elif not pairs:
        raise InvalidInput(f"no preference pairs in {source.name}")
    if await store.candidate_exists(name):
        raise Conflict(f"candidate {name!r} already exists; pick another --name")
    sha = store_preferences(settings, pairs)
    run_id = f"run_{secrets.token_hex(8)}"
    if not await store.reserve_candidate_name(name, run_id):
        raise Conflict(f"candidate name {name!r} is taken by queued run {await store.candidate_reserved_by(name)}")
    params = {"method": "dpo", "base": base, "parent": parent, "candidate": name, "config": msgspec.to_builtins(cfg),
              "preferences": {"source": source.describe(), "sha256": sha, "pairs": len(pairs),
                              **({} if skipped is None else {"left_out": skipped})},
              "dataset": sft.dataset, "dataset_id": sft.dataset_id}
    return await enqueue(store, queue, settings, "train", params, job_id=run_id)


def dpo_train_job(ctx: JobContext) -> dict[str, Any]:
    """The worker's side of a DPO run (called by `service.runs.train_job`)."""
    from service.dpo import DPOTrainConfig, train_dpo
    from service.preferences import read_preferences
    from service.runs import _register_remote, run_dir
    from service.training import TrainingCancelled

    p, store = ctx.params, ctx.store
    name = p["candidate"]
    try:
        base = ctx.call(store.get_base(p["base"]))
        sft = ctx.call(store.get_candidate(p["parent"]))
        prefs = p["preferences"]
        pairs = read_preferences(preferences_path(ctx.settings, prefs["sha256"]))
        config = msgspec.convert(p["config"], DPOTrainConfig)
        ctx.progress(0.0, f"DPO on {len(pairs)} preference pairs ({prefs['source']}) from {sft.name}", step=0)

        def on_log(entry: dict[str, Any]) -> None:
            total = entry.get("max_steps") or 1
            ctx.progress(entry.get("step", 0) / total, f"step {entry.get('step')}/{total}",
                         **{k: v for k, v in entry.items() if v is not None})

        try:
            result = train_dpo(base.path, sft.adapter_dir, pairs, config, run_dir(ctx.settings, ctx.job_id), on_log=on_log,
                               should_stop=ctx.cancelled)
        except TrainingCancelled:
            raise JobCancelled("cancelled during training") from None
        if ctx.cancelled():
            raise JobCancelled("cancelled")
        metrics = {"final_loss": result.final_loss, "reward_margin": result.reward_margin,
                   "reward_accuracy": result.reward_accuracy, "steps": result.global_step,
                   "tokens_per_s": result.tokens_per_s, "wall_s": result.wall_s, "pairs": result.pairs,
                   "trainable_params": result.trainable_params}
        cand = Candidate(
            name=name, base=base.name, dataset=sft.dataset, dataset_id=sft.dataset_id, run_id=ctx.job_id,
            adapter_dir=result.adapter_dir, config=msgspec.to_builtins(config), metrics=metrics, created_at=time.time(),
            method="dpo", parent=sft.name, preferences=dict(prefs),
        )
        ctx.call(store.add_candidate(cand))
        return {"candidate": name, "method": "dpo", "parent": sft.name, "adapter_dir": result.adapter_dir, **metrics,
                **_register_remote(ctx, name)}
    finally:
        ctx.call(store.release_candidate_name(name))
