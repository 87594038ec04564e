"""`arena base add|tiny|list`, `arena candidates list|show` and `arena adapters`."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.common import ListingGroup, echo_json, open_store, settings


@click.group("base", cls=ListingGroup)
def base_cmd() -> None:
    """Register base models, or build the offline tiny base."""


@base_cmd.command("add")
@click.argument("path_or_id")
@click.option("--name", required=True, help="Name to register the base under.")
def base_add(path_or_id: str, name: str) -> None:
    """Register a Hugging Face causal LM: a local directory, or a hub id where a hub is reachable."""
    from service.bases import make_base, resolve_base_source

    path = resolve_base_source(path_or_id)
    base = make_base(name, path, path_or_id)
    with open_store() as store:
        store.put_base(base)
    click.echo(f"base {name}: {path} ({base.parameters:,} parameters, vocab {base.vocab_size}, context {base.context_length})")


@base_cmd.command("tiny")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Directory (default: <data dir>/bases/tiny).")
@click.option("--name", default="tiny", show_default=True, help="Name to register it under.")
@click.option("--size", type=click.Choice(["small", "test"]), default="small", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True,
              help="zh: the bilingual base (English and Chinese corpus and tokenizer), for Chinese data.")
def base_tiny(out: Path | None, name: str, size: str, seed: int, lang: str) -> None:
    """Build the offline tiny base (BPE tokenizer, small Llama, short pretraining; cached) and register it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from service.bases import make_base
    from service.models.tiny import build_tiny_base

    s = settings()
    out = (out or s.data_dir / "bases" / (f"tiny-{size}" + ("-zh" if lang == "zh" else ""))).resolve()
    with Progress(TextColumn("pretraining tiny base"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[loss]}"), TimeElapsedColumn()) as bar:
        task = bar.add_task("tiny", total=None, loss="")

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"loss {loss:.3f}")

        path = build_tiny_base(out, size=size, seed=seed, progress=progress, lang=lang)
    base = make_base(name, path, "tiny")
    with open_store(s) as store:
        store.put_base(base)
    click.echo(f"base {name}: {path} ({base.parameters:,} parameters, vocab {base.vocab_size})")


@base_cmd.command("list")
@click.option("--json", "json_out", is_flag=True)
def base_list(json_out: bool) -> None:
    """Registered bases."""
    with open_store() as store:
        bases = store.list_bases()
    if json_out:
        echo_json(bases)
        return
    for b in bases:
        click.echo(f"{b.name}  {b.path}  {b.parameters:,} params  ({b.source})")
    if not bases:
        click.echo("no bases yet: `arena base tiny` builds one offline")


@click.group("candidates", cls=ListingGroup)
def candidates_cmd() -> None:
    """List candidates (trained adapters) with their lineage and metrics."""


@candidates_cmd.command("list")
@click.option("--json", "json_out", is_flag=True)
def candidates_list(json_out: bool) -> None:
    """Name, base, dataset version (or, for DPO, the parent and its preference pairs), key metrics, created."""
    import datetime as dt

    with open_store() as store:
        cands = store.list_candidates()
    if json_out:
        echo_json(cands)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "base", "dataset", "final loss", "eval loss", "steps", "created")
    for c in cands:
        m = c.metrics
        fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        data = f"{c.dataset} ({c.dataset_id[:8]})"
        if c.method == "dpo":
            data = f"DPO of {c.parent} on {(c.preferences or {}).get('pairs', '?')} pairs ({(c.preferences or {}).get('source', '')})"
        table.add_row(c.name, c.base, data, fmt(m.get("final_loss")), fmt(m.get("final_eval_loss")),
                      str(m.get("steps", "")), dt.datetime.fromtimestamp(c.created_at).strftime("%Y-%m-%d %H:%M"))
    Console().print(table)


@candidates_cmd.command("show")
@click.argument("name")
def candidates_show(name: str) -> None:
    """One candidate's record, lineage included, as JSON."""
    with open_store() as store:
        echo_json(store.get_candidate(name))


@click.command("adapters")
@click.option("--sync", "sync_now", is_flag=True,
              help="Reconcile now: retry the pending unloads, load the active candidates the server lacks.")
@click.option("--json", "json_out", is_flag=True)
def adapters_cmd(sync_now: bool, json_out: bool) -> None:
    """The generation server's view of the arena (ARENA_GENERATION_URL): each active
    candidate, loaded there (from its path), missing, elsewhere (that name from another
    path) or unknown (server unreachable), and the retired adapters it has yet to unload (the
    server was down or refused when they were retired; `arena serve` asks again every
    ARENA_REMOTE_ADAPTER_SYNC_S seconds). With --sync, exit 1 when anything is still
    failing."""
    import datetime as dt

    from service.adapter_sync import SyncReport, adapter_states, reconcile_adapters
    from service.errors import InvalidInput

    s = settings()
    if not s.generation_url:
        raise InvalidInput("ARENA_GENERATION_URL is not set: adapters are loaded in this process, there is no "
                           "generation server to follow the arena")
    with open_store(s) as store:
        report = store._run(reconcile_adapters(store.store, s)) if sync_now else SyncReport()
        state, unreachable = store._run(adapter_states(store.store, s))
        pending = store.pending_unloads()
    if json_out:
        echo_json({"server": s.generation_url, "unreachable": unreachable, "active": state, "pending_unloads": pending,
                   **({"sync": report} if sync_now else {})})
    else:
        for name in report.loaded:
            click.echo(f"loaded {name}")
        for name in report.unloaded:
            click.echo(f"unloaded retired {name}")
        for name, reason in {**report.failed, **report.unload_failed}.items():
            click.echo(f"warning: {name}: {reason}", err=True)
        click.echo(f"generation server {s.generation_url}" + (f": unreachable ({unreachable})" if unreachable else ""))
        for name, where in state.items():
            click.echo(f"  active   {name}  {where}")
        for p in pending:
            since = dt.datetime.fromtimestamp(p.since).strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"  retired  {p.name}  unload pending since {since}, {p.attempts} attempt"
                       f"{'s' if p.attempts != 1 else ''}: {p.error}")
        if not state and not pending:
            click.echo("  no active candidates and nothing pending")
    if sync_now and (report.failed or report.unload_failed):
        raise SystemExit(1)
