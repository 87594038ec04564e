"""`arena base add|tiny|list` and `arena candidates list|show`."""

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
