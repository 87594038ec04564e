"""`arena corrections list|accept|reject`: the admin's side of reviewers' corrections, and
what `arena curate --add-corrections` adds."""

from __future__ import annotations

import datetime

import click

from service.cli.common import ListingGroup, echo_json, open_store


@click.group("corrections", cls=ListingGroup)
def corrections_cmd() -> None:
    """Corrected answers reviewers wrote after voting: list them, accept or reject each.
    Accepted ones join a dataset with `arena curate --add-corrections`."""


@corrections_cmd.command("list")
@click.option("--status", type=click.Choice(["pending", "accepted", "rejected"]), default=None, help="Only these (default: all).")
@click.option("--json", "json_out", is_flag=True)
def list_cmd(status, json_out) -> None:
    """Corrections, newest first."""
    from service import corrections

    with open_store() as store:
        items = store._run(corrections.list_corrections(store.store, status))
    if json_out:
        echo_json(items)
        return
    if not items:
        click.echo(f"no {status or ''} corrections".replace("  ", " "))
        return
    for c in items:
        when = datetime.datetime.fromtimestamp(c.created_at).strftime("%Y-%m-%d %H:%M")
        edited = f" (edits {c.based_on.upper()})" if c.based_on else ""
        used = f", in {c.used_in}" if c.used_in else ""
        click.echo(f"{c.id}  {c.status:<8}  {when}  battle {c.battle_id}  by {c.reviewer}{edited}{used}")
        click.echo(f"    prompt: {c.prompt[:70]!r}")
        click.echo(f"    answer: {c.text[:70]!r}")


def _decide(correction_id: str, accept: bool, note: str | None, json_out: bool) -> None:
    from service import corrections

    with open_store() as store:
        decided = store._run(corrections.decide_correction(store.store, correction_id, accept=accept, by="admin (cli)", note=note))
    if json_out:
        echo_json(decided)
    else:
        click.echo(f"{decided.id} {decided.status}")


@corrections_cmd.command("accept")
@click.argument("correction_id")
@click.option("--note", default=None, help="Why (kept with the decision).")
@click.option("--json", "json_out", is_flag=True)
def accept_cmd(correction_id, note, json_out) -> None:
    """Accept a pending correction: it joins the next `arena curate --add-corrections`."""
    _decide(correction_id, True, note, json_out)


@corrections_cmd.command("reject")
@click.argument("correction_id")
@click.option("--note", default=None, help="Why (kept with the decision).")
@click.option("--json", "json_out", is_flag=True)
def reject_cmd(correction_id, note, json_out) -> None:
    """Reject a pending correction."""
    _decide(correction_id, False, note, json_out)


def accepted_records(store, existing) -> tuple[list, list]:
    """(records, corrections) that `arena curate --add-corrections` adds: every accepted
    correction not yet used in a dataset version, from any battle of the arena."""
    from service import corrections

    accepted = store._run(corrections.list_corrections(store.store, "accepted"))
    return corrections.correction_records(accepted, existing)
