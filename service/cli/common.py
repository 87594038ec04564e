"""Helpers shared by CLI commands: settings, a store for the duration of a command, output."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import msgspec

from service.config import Settings, load_settings, redact_url
from service.errors import ArenaError, InvalidInput
from service.runtime import redis_url
from service.store import SyncStore


class ListingGroup(click.Group):
    """A command group that runs its `list` command when given none (`arena candidates`
    lists candidates, as `git branch` lists branches); `--help` shows the group's help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, invoke_without_command=True, **kwargs)
        inner = self.callback

        def callback(*a: Any, **kw: Any) -> Any:
            ctx = click.get_current_context()
            if ctx.invoked_subcommand is None:
                return ctx.invoke(self.commands["list"])
            return inner(*a, **kw) if inner else None

        self.callback = callback

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Options with no command before them are the list's (`arena jobs --limit 5`, `arena
        # candidates --json`): the group has none of its own but --help.
        if args and args[0].startswith("-") and args[0] not in ctx.help_option_names and "list" in self.commands:
            args = ["list", *args]
        return super().parse_args(ctx, args)


def settings() -> Settings:
    try:
        return load_settings()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


@contextlib.contextmanager
def open_store(s: Settings | None = None) -> Iterator[SyncStore]:
    """A synchronous store on the configured Redis (embedded: started and stopped if needed)."""
    s = s or settings()
    with redis_url(s) as url:
        store = SyncStore(url, s.key_prefix)
        try:
            store.ping()
        except Exception as exc:  # noqa: BLE001
            store.close()
            raise ArenaError(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
        try:
            yield store
        finally:
            store.close()


@contextlib.contextmanager
def battles_file_errors(path: Path, skip_invalid: bool) -> Iterator[None]:
    """A missing, malformed or unreadable battles file (`arena.battles`' readers) as one
    line, with the hint to skip malformed records unless they are skipped already."""
    from arena.battles import BattleFormatError

    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    try:
        yield
    except BattleFormatError as exc:
        raise InvalidInput(f"{exc}{skip_hint(skip_invalid)}") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read ({exc.strerror or exc})") from None


def skip_hint(skip_invalid: bool) -> str:
    """What to add to an error naming malformed or refused records."""
    return "" if skip_invalid else " (use --skip-invalid to skip malformed records)"


def call_with_queue(store: SyncStore, s: Settings, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`await fn(store, queue, settings, *args, **kwargs)` on the store's loop, with a job queue
    on the same Redis opened for the call and closed after (enqueue, cancel, reconcile)."""
    from service.jobs import make_queue

    async def go() -> Any:
        queue = make_queue(store.url, s)
        try:
            return await fn(store.store, queue, s, *args, **kwargs)
        finally:
            await queue.disconnect()

    return store._run(go())


def cancel_job(store: SyncStore, s: Settings, job_id: str):
    """`service.jobs.cancel` from the CLI (`arena jobs cancel`, `arena runs cancel`)."""
    from service.jobs import cancel

    return call_with_queue(store, s, lambda st, queue, _settings: cancel(st, queue, job_id))


def echo_json(value: Any) -> None:
    click.echo(json.dumps(msgspec.to_builtins(value), indent=2, ensure_ascii=False))


def follow_job(store: SyncStore, job_id: str, label: str, json_out: bool = False) -> dict:
    """Show a job's progress as a rich progress bar (loss and message included) until it ends.

    Returns the final job record; raises `ArenaError` when it failed or was cancelled.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    after = "0"
    final = None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), disable=json_out) as bar:
        task = bar.add_task(label, total=1.0, info="queued")
        while True:
            for event_id, event in store.read_job_events(job_id, after=after, block_ms=500):
                after = event_id
                if event.get("type") == "progress":
                    info = event.get("message", "")
                    if "loss" in event and event["loss"] is not None:
                        info = f"loss {event['loss']:.4f} " + info
                    bar.update(task, completed=event.get("progress", 0.0), info=info[:60])
                elif event.get("type") == "status":
                    bar.update(task, info=event["status"])
            job = store.get_job(job_id)
            if job.status in ("succeeded", "failed", "cancelled"):
                final = job
                if job.status == "succeeded":
                    bar.update(task, completed=1.0)
                break
            time.sleep(0.05)
    assert final is not None
    if final.status == "failed":
        raise ArenaError(f"job {job_id} failed: {final.error}")
    if final.status == "cancelled":
        raise ArenaError(f"job {job_id} was cancelled")
    return msgspec.to_builtins(final)
