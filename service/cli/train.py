"""`arena train` and `arena runs list|show|cancel`."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.common import ListingGroup, call_with_queue, cancel_job, echo_json, follow_job, open_store, settings


def _enqueue(store, s, **kw):
    from service import runs

    return call_with_queue(store, s, runs.start_run, **kw)


#: Options of one method only; given with the other, they are refused rather than ignored.
SFT_ONLY = ("data", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "eval_fraction", "attribution_checkpoints", "packing",
            "sweep")
DPO_ONLY = ("parent", "preferences", "from_arena", "board", "beta")
SHARED = ("lr", "epochs", "max_steps", "batch_size", "grad_accum", "max_length", "seed", "logging_steps")


@click.command("train")
@click.option("--method", type=click.Choice(["sft", "dpo"]), default="sft", show_default=True,
              help="sft: LoRA on a dataset; dpo: continue an SFT candidate on preference pairs (TRL's DPOTrainer).")
@click.option("--base", required=True, help="Registered base name.")
@click.option("--data", default=None, help="SFT: dataset NAME[@VERSION]; its held-out split is not trained on.")
@click.option("--name", required=True, help="Candidate name (with --sweep, a suffix per combination is added).")
@click.option("--from", "parent", default=None, metavar="CANDIDATE", help="DPO: the SFT candidate to start from (also the reference).")
@click.option("--preferences", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="DPO: preference pairs, JSON Lines (prompt/chosen/rejected, as `arena battles export --format dpo` writes).")
@click.option("--from-arena", is_flag=True, help="DPO: the pairs from the arena's votes now (ties and both-bad left out).")
@click.option("--board", type=click.Choice(["all", "human", "judge"]), default="human", show_default=True,
              help="DPO with --from-arena: whose votes.")
@click.option("--beta", type=float, default=None, help="DPO: β, how far from the SFT reference (default 0.1).")
@click.option("--lora-r", type=int, default=16, show_default=True)
@click.option("--lora-alpha", type=float, default=32, show_default=True)
@click.option("--lora-dropout", type=float, default=0.05, show_default=True)
@click.option("--target-modules", default="q_proj,v_proj", show_default=True, help="Comma-separated, or all-linear.")
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Default 5e-5 with --method dpo.")
@click.option("--epochs", type=float, default=3, show_default=True, help="Default 1 with --method dpo.")
@click.option("--max-steps", type=int, default=None)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Default 4 with --method dpo (pairs).")
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-fraction", type=float, default=0.1, show_default=True)
@click.option("--logging-steps", type=int, default=10, show_default=True)
@click.option("--attribution-checkpoints", type=click.IntRange(min=0), default=5, show_default=True,
              help="Checkpoints (with optimizer state) kept for tracing, spread over training; 0 keeps every one.")
@click.option("--packing", type=click.Choice(["auto", "packed", "grouped", "padded"]), default="auto", show_default=True,
              help="Batch layout: packed (padding-free), grouped by length, or padded; auto packs when the base can.")
@click.option("--sweep", default=None, help='One run per combination, e.g. "lora_r=8,16 lr=1e-4,3e-4".')
@click.option("--wait", is_flag=True, help="Run here (embedded mode) or wait for a worker, with a progress bar.")
@click.option("--json", "json_out", is_flag=True)
@click.pass_context
def train_cmd(ctx: click.Context, method, base, data, name, parent, preferences, from_arena, board, beta, lora_r, lora_alpha,
              lora_dropout, target_modules, lr, epochs, max_steps, batch_size, grad_accum, max_length, seed, eval_fraction,
              logging_steps, attribution_checkpoints, packing, sweep, wait, json_out) -> None:
    """Enqueue a training run: LoRA SFT on a dataset (one per --sweep combination), or
    DPO of an SFT candidate on preference pairs (--method dpo --from CANDIDATE
    --preferences FILE | --from-arena)."""
    from service.errors import InvalidInput
    from service.runs import parse_sweep

    given = {k for k, v in ctx.params.items() if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    wrong = sorted(given & set(DPO_ONLY if method == "sft" else SFT_ONLY))
    if wrong:
        flags = ", ".join("--" + ("from" if k == "parent" else k.replace("_", "-")) for k in wrong)
        raise InvalidInput(f"{flags}: not an option of --method {method}")
    s = settings()
    with open_store(s) as store:
        if method == "dpo":
            config = {k: ctx.params[k] for k in (*SHARED, "beta") if k in given}
            if "board" in given and not from_arena:
                raise InvalidInput("--board: only with --from-arena (a preference file holds the boards it was exported from)")
            jobs = [_enqueue_dpo(store, s, base=base, parent=parent, name=name, preferences=preferences,
                                 from_arena=from_arena, board=board, config=config)]
        else:
            if data is None:
                raise InvalidInput("--data NAME[@VERSION]: the dataset to train on is required with --method sft")
            config = dict(lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
                          lr=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
                          max_length=max_length, seed=seed, eval_fraction=eval_fraction, logging_steps=logging_steps,
                          attribution_checkpoints=attribution_checkpoints, packing=packing)
            jobs = []
            for combo in parse_sweep(sweep) if sweep else [{}]:
                suffix = "".join(f"-{k.replace('_', '')}{v}" for k, v in combo.items())
                jobs.append(_enqueue(store, s, base=base, data=data, name=f"{name}{suffix}", config={**config, **combo}))
        for job in jobs:
            if not json_out:
                click.echo(f"queued {job.id}: {'DPO ' if method == 'dpo' else ''}candidate {job.params['candidate']}"
                           + (_pairs_said(job.params["preferences"]) if method == "dpo" else ""))
        if not wait:
            if json_out:
                echo_json(jobs)
            return
        with _local_worker(store, s):
            finals = [follow_job(store, job.id, f"train {job.params['candidate']}", json_out) for job in jobs]
    if json_out:
        echo_json(finals)
    else:
        for f in finals:
            r = f["result"]
            extra = f", reward margin {r['reward_margin']:.3f}" if r.get("reward_margin") is not None else ""
            click.echo(f"{r['candidate']}: final loss {r['final_loss']:.4f}{extra}, {r['steps']} steps, "
                       f"{r['tokens_per_s']:.0f} tokens/s")


def _enqueue_dpo(store, s, *, base, parent, name, preferences: Path | None, from_arena: bool, board: str, config):
    from service.dpo_runs import PreferenceSource, arena_source, start_dpo_run
    from service.errors import InvalidInput
    from service.preferences import read_preferences

    if parent is None:
        raise InvalidInput("--from CANDIDATE: DPO starts from an SFT candidate (its adapter, and its reference)")
    if (preferences is None) == (not from_arena):
        raise InvalidInput("give exactly one of --preferences FILE or --from-arena")
    if from_arena:
        source, pairs = arena_source(board), None
    else:
        source, pairs = PreferenceSource(kind="file", name=preferences.name), read_preferences(preferences)
    return call_with_queue(store, s, start_dpo_run, base=base, parent=parent, name=name, source=source, pairs=pairs,
                           config=config)


def _pairs_said(prefs: dict) -> str:
    """What a DPO run trains on, as " (N preference pairs; left out: 2 tie)"."""
    from service.preferences import left_out_said

    left_out = prefs.get("left_out")
    return f" ({prefs['pairs']} preference pairs" + (f"; left out: {left_out_said(left_out)})" if left_out else ")")


class _local_worker:
    """`--wait` with no live worker on this Redis (always so in embedded mode) runs one in
    this process for the duration, instead of waiting for a worker that never comes."""

    def __init__(self, store, s) -> None:
        self.store, self.s, self.thread = store, s, None

    def __enter__(self):
        if self.store.live_workers(within_s=15):
            return self
        if not self.s.embedded:
            click.echo("no live worker on this Redis: running the job in this process", err=True)
        import asyncio
        import threading

        from service.jobs import build_worker, run_worker

        worker = build_worker(self.store.url, self.s)
        worker.SIGNALS = []
        self.loop = asyncio.new_event_loop()
        self.task = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.task = self.loop.create_task(run_worker(worker))
            try:
                self.loop.run_until_complete(self.task)
            except BaseException:  # noqa: BLE001 - cancelled on exit
                pass

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread:
            import logging

            # The job is done (or failed, and said so): SAQ's notice that its idle timers were
            # cancelled on the way out is not news to the user.
            logging.getLogger("saq").setLevel(logging.ERROR)
            self.loop.call_soon_threadsafe(lambda: self.task and self.task.cancel())
            self.thread.join(timeout=30)


@click.group("runs", cls=ListingGroup)
def runs_cmd() -> None:
    """List, show and cancel training runs."""


@runs_cmd.command("list")
@click.option("--json", "json_out", is_flag=True)
def runs_list(json_out: bool) -> None:
    """Training runs, newest first."""
    with open_store() as store:
        rows = store.list_jobs(limit=50, kind="train")
    if json_out:
        echo_json(rows)
        return
    for j in rows:
        loss = j.info.get("loss")
        click.echo(f"{j.id}  {j.params['candidate']:<20} {j.status:<10} {j.progress:>4.0%}  {'' if loss is None else f'loss {loss:.4f}'}  {j.error or ''}")


@runs_cmd.command("show")
@click.argument("run_id")
def runs_show(run_id: str) -> None:
    """A run's record (status, step, loss, result) as JSON."""
    with open_store() as store:
        echo_json(store.get_job(run_id))


@runs_cmd.command("cancel")
@click.argument("run_id")
def runs_cancel(run_id: str) -> None:
    """Stop a run within a few steps; no candidate is registered."""
    s = settings()
    with open_store(s) as store:
        job = cancel_job(store, s, run_id)
    click.echo(f"{job.id}: {job.status}{' (stopping within a few steps)' if job.status == 'running' else ''}")
