"""The arena from the command line: `arena prompts`, `arena activate|deactivate`,
`arena battles export|import`, `arena reviewers` and `arena judge`."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.common import ListingGroup, battles_file_errors, call_with_queue, echo_json, follow_job, open_store, settings, skip_hint

# --- prompts ----------------------------------------------------------------------------


@click.group("prompts", cls=ListingGroup)
def prompts_cmd() -> None:
    """The arena's prompt pool: add from a file, a dataset's held-out split or a task."""


@prompts_cmd.command("add")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataset", "dataset_ref", metavar="NAME[@V]", help="Add a registered dataset's held-out split.")
@click.option("--split", type=click.Choice(["test", "all"]), default="test", show_default=True, help="With --dataset: the held-out split, or every record.")
@click.option("--task", "task_path", type=click.Path(dir_okay=False, path_type=Path), help="Add a generate_until task's prompts (with references).")
@click.option("--category", default=None, help="Category for prompts that name none (a leaderboard filter).")
@click.option("--source", default=None, help="Source label (default: the file, dataset or task name).")
def prompts_add(file: Path | None, dataset_ref: str | None, split: str, task_path: Path | None, category: str | None, source: str | None) -> None:
    """Add prompts from FILE (JSONL with prompt/text/question/instruction or messages, and
    optional reference, category, source, task_type, hard (true/false); or plain text, one
    prompt per line). Each battle's category tags (task type, language, length, hard) come
    from these and the prompt's text."""
    import msgspec

    from service.errors import InvalidInput
    from service.prompts import parse_prompt_file, prompts_from_dataset, prompts_from_task

    given = [x for x in (file, dataset_ref, task_path) if x is not None]
    if len(given) != 1:
        raise InvalidInput("give exactly one of FILE, --dataset NAME[@V] or --task FILE.yaml")
    s = settings()
    with open_store(s) as store:
        if file is not None:
            prompts = parse_prompt_file(file, category=category, source=source)
        elif dataset_ref is not None:
            prompts = store._run(prompts_from_dataset(store.store, s, dataset_ref, split=split, category=category))
        else:
            prompts = store._run(prompts_from_task(store.store, s, task_path, category=category))
        if source:
            prompts = [msgspec.structs.replace(p, source=source) for p in prompts]
        total = store.add_prompts([msgspec.to_builtins(p) for p in prompts])
    with_ref = sum(p.reference is not None for p in prompts)
    click.echo(f"added {len(prompts)} prompts ({with_ref} with references); the pool has {total}")


@prompts_cmd.command("list")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "json_out", is_flag=True)
def prompts_list(limit: int, json_out: bool) -> None:
    """The first prompts of the pool and its size."""
    with open_store() as store:
        prompts = store.prompts(0, limit - 1)
        total = store.prompt_count()
    if json_out:
        echo_json({"total": total, "prompts": prompts})
        return
    for i, p in enumerate(prompts):
        text = p["text"].replace("\n", " ")
        click.echo(f"{i:>4}  [{p.get('category') or '-'}] {text[:90]}{'…' if len(text) > 90 else ''}")
    click.echo(f"{total} prompts in the pool")


# --- competing candidates ------------------------------------------------------------------


@click.command("activate")
@click.argument("names", nargs=-1, required=True)
def activate_cmd(names: tuple[str, ...]) -> None:
    """Mark candidates (or bases) as competing in the arena."""
    _set_active(names, True)


@click.command("deactivate")
@click.argument("names", nargs=-1, required=True)
def deactivate_cmd(names: tuple[str, ...]) -> None:
    """Stop candidates from being matched in new battles (their votes stay)."""
    _set_active(names, False)


def _set_active(names: tuple[str, ...], active: bool) -> None:
    from service.battles import set_active

    s = settings()
    with open_store(s) as store:
        now = store._run(set_active(store.store, s, list(names), active))
    for warning in now.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"active: {', '.join(now.active) or 'none'}")


# --- battles ----------------------------------------------------------------------------


@click.group("battles")
def battles_cmd() -> None:
    """Export or import votes in FastChat's battle format; import also reads the public arena dumps."""


@battles_cmd.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["fastchat", "dpo"]), default="fastchat", show_default=True,
              help="fastchat: the battles; dpo: prompt/chosen/rejected pairs for TRL (ties and both-bad left out).")
@click.option("--board", type=click.Choice(["all", "human", "judge"]), default=None,
              help="Whose votes: default all for fastchat, human for dpo (the judge board is opt-in there).")
@click.option("--include-excluded", is_flag=True, help="Keep the votes of excluded reviewers (fastchat only).")
def battles_export(file: Path, fmt: str, board: str | None, include_excluded: bool) -> None:
    """Write the votes to FILE: in FastChat's battle schema (JSON array; JSON Lines when it
    ends in .jsonl), with the conv_metadata style counts its style control reads; or, with
    --format dpo, as preference pairs in JSON Lines."""
    from arena.battles import write_battles
    from service.battles import export_battles
    from service.errors import InvalidInput

    board = board or ("human" if fmt == "dpo" else "all")
    boards = ("human", "judge") if board == "all" else (board,)
    if fmt == "dpo":
        if include_excluded:
            raise InvalidInput("--include-excluded: preference pairs never use excluded reviewers' votes")
        _export_preferences(file, boards)
        return
    with open_store() as store:
        battles = store._run(export_battles(store.store, boards=boards, include_excluded=include_excluded))
    write_battles(file, battles)
    click.echo(f"wrote {len(battles)} battles to {file}")


def _export_preferences(file: Path, boards: tuple[str, ...]) -> None:
    from service.preferences import export_preferences, left_out_said, write_preferences

    with open_store() as store:
        pairs, skipped = store._run(export_preferences(store.store, boards=boards))
    write_preferences(file, pairs)
    click.echo(f"wrote {len(pairs)} preference pairs to {file} ({'/'.join(boards)} board); left out: {left_out_said(skipped)}")


@battles_cmd.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--board", type=click.Choice(["human", "judge"]), default=None, help="Board to count them on (default: the record's own, else human).")
@click.option("--skip-invalid", is_flag=True, help="Skip malformed records (and say how many) instead of failing.")
def battles_import(file: Path, board: str | None, skip_invalid: bool) -> None:
    """Log and count the battles in FILE: FastChat's battle schema or a public arena dump
    (Kaggle lmsys-chatbot-arena 55k train.csv, arena-human-preference-140k), as a JSON
    array, JSON Lines, Parquet or CSV."""
    from service.battles import import_file
    from service.errors import InvalidInput

    if not file.is_file():  # before the store (perhaps an embedded server) starts
        raise InvalidInput(f"{file}: no such file")
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)  # stdout keeps the one result line; no bar where stderr is not a terminal
    with open_store() as store, Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} battles"),
                                         TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("checking", total=None)

        def progress(phase: str, done: int, total: int | None) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        with battles_file_errors(file, skip_invalid):  # read twice, a batch at a time: checked whole first, then logged
            try:
                result = store._run(import_file(store.store, file, board=board, skip_invalid=skip_invalid, progress=progress))
            except InvalidInput as refused:  # our checks' refusals, skipped like malformed records
                raise InvalidInput(f"{refused.message}{skip_hint(skip_invalid)}") from None
    for line in result["errors"]:
        click.echo(f"skipped {line}", err=True)
    boards = ", ".join(f"{n} {b}" for b, n in result["by_board"].items())
    click.echo(f"imported {result['imported']} battles ({boards or 'none'}); skipped {result['skipped']} invalid")


# --- reviewers --------------------------------------------------------------------------


@click.group("reviewers", cls=ListingGroup)
def reviewers_cmd() -> None:
    """Invite reviewers, revoke their tokens, list them, exclude (or re-include) one's votes."""


@reviewers_cmd.command("invite")
@click.argument("reviewer")
def reviewers_invite(reviewer: str) -> None:
    """Create an invite token for REVIEWER (shown once)."""
    from service.reviewers import create_invite

    s = settings()
    with open_store(s) as store:
        token = store._run(create_invite(store.store, reviewer))
    click.echo(f"reviewer {reviewer}: token {token}")
    click.echo(f"link: http://{s.host}:{s.port}/arena?token={token}")


@reviewers_cmd.command("revoke")
@click.argument("reviewer")
def reviewers_revoke(reviewer: str) -> None:
    """Revoke every invite token of REVIEWER: their link and cookie stop working at once.
    Their past votes still count; `arena reviewers exclude` removes those."""
    from service.errors import NotFound

    with open_store() as store:
        revoked = store.revoke_invites(reviewer)
    if not revoked:
        raise NotFound(f"reviewer {reviewer!r} holds no invite token (nothing revoked)")
    click.echo(f"revoked {revoked} invite token{'s' if revoked != 1 else ''} of {reviewer}")


@reviewers_cmd.command("list")
@click.option("--json", "json_out", is_flag=True)
def reviewers_list(json_out: bool) -> None:
    """Reviewers with their human votes and whether they are excluded."""
    from service.leaderboards import reviewer_stats

    with open_store() as store:
        rows = store._run(reviewer_stats(store.store))
    if json_out:
        echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r['reviewer']:<24} {r['votes']:>6} votes{'  (excluded)' if r['excluded'] else ''}")


@reviewers_cmd.command("suspicious")
@click.option("--min-votes", default=20, show_default=True, help="Reviewers with fewer votes are not judged.")
@click.option("--json", "json_out", is_flag=True)
def reviewers_suspicious(min_votes: int, json_out: bool) -> None:
    """Reviewers whose votes look unlike honest ones: improbable under the crowd's board,
    always one side, faster than reading, or ties everywhere; with the figures."""
    from service.reviewers import suspicious_reviewers

    with open_store() as store:
        rows = store._run(suspicious_reviewers(store.store, min_votes=min_votes))
    if json_out:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no reviewer looks suspicious (reviewers with fewer than {min_votes} votes are not judged)")
        return
    for row in rows:
        click.echo(f"{row['reviewer']} ({row['votes']} votes{', excluded' if row['excluded'] else ''}):")
        for reason in row["reasons"]:
            click.echo(f"  {reason['check']}: {reason['message']} (p = {reason['p_value']:.2g})")


@reviewers_cmd.command("exclude")
@click.argument("reviewer")
def reviewers_exclude(reviewer: str) -> None:
    """Leave REVIEWER's votes out of the counts (recounted from the log now); their later
    votes are refused."""
    _set_excluded(reviewer, True)


@reviewers_cmd.command("include")
@click.argument("reviewer")
def reviewers_include(reviewer: str) -> None:
    """Count REVIEWER's votes again."""
    _set_excluded(reviewer, False)


def _set_excluded(reviewer: str, excluded: bool) -> None:
    """Exclude or include a reviewer, then recount the pair counts from the votes log."""
    with open_store() as store:
        (store.exclude_reviewer if excluded else store.include_reviewer)(reviewer)
        counted = store.rebuild_aggregates()
    click.echo(f"{'excluded' if excluded else 'included'} {reviewer}; counted {counted['human']} human and {counted['judge']} judge votes")


# --- judge ------------------------------------------------------------------------------


@click.command("judge")
@click.option("--judge", "judge_spec", required=True, metavar="URL_PROFILE_OR_CANDIDATE",
              help="OpenAI-compatible base URL (with --judge-model; key: the server's ARENA_JUDGE_API_KEY), a profile "
                   "of ARENA_JUDGE_PROFILES, reference[:METRIC], or a candidate name.")
@click.option("--judge-model", default=None, help="The endpoint's model id (with a URL judge).")
@click.option("--candidates", required=True, help="Comma-separated candidates to compare pairwise.")
@click.option("--prompts", "source", default="pool", show_default=True, metavar="SOURCE",
              help="pool, human (the human-voted battles), dataset:NAME[@V], task:FILE.yaml, or a prompts file.")
@click.option("--n", default=200, show_default=True, type=click.IntRange(min=1), help="Prompts (or human battles) to judge.")
@click.option("--both-bad", is_flag=True, help='Let the judge answer "both are bad" ([[D]]).')
@click.option("--graded", is_flag=True, help="Arena-Hard's prompt and verdicts, [[A>>B]] … [[B>>A]]; a strong one counts as 3 votes.")
@click.option("--max-tokens", default=512, show_default=True, type=click.IntRange(min=1), help="Longest judge reply (explanation + verdict).")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=1, max=64), help="Judge requests at once.")
@click.option("--wait", is_flag=True, help="Follow the job (run it here in embedded mode) and print its result.")
@click.option("--json", "json_out", is_flag=True)
def judge_cmd(judge_spec: str, judge_model: str | None, candidates: str, source: str, n: int,
              both_bad: bool, graded: bool, max_tokens: int, concurrency: int, wait: bool, json_out: bool) -> None:
    """Judge candidates pairwise, each pair in both orders, as a job; verdicts go to the judge board."""
    import msgspec

    from service import judging
    from service.prompts import parse_prompt_file, prompts_from_task

    s = settings()
    spec = judging.parse_judge_spec(judge_spec, model=judge_model, allow_both_bad=both_bad, max_tokens=max_tokens, settings=s,
                                    graded=graded)
    names = [c.strip() for c in candidates.split(",") if c.strip()]
    with open_store(s) as store:
        if source.startswith("task:"):
            items = store._run(prompts_from_task(store.store, s, source.partition(":")[2]))
            prompts = {"kind": "inline", "items": [msgspec.to_builtins(p) for p in items]}
        elif Path(source).is_file():
            prompts = {"kind": "inline", "items": [msgspec.to_builtins(p) for p in parse_prompt_file(Path(source))]}
        else:
            prompts = judging.parse_prompt_source(source)

        job = call_with_queue(store, s, judging.start_judging, judge=spec, candidates=names, prompts=prompts, n=n,
                              concurrency=concurrency)
        if not wait:
            if json_out:
                echo_json(job)
            else:
                click.echo(f"queued {job.id}: judge {spec.name} on {', '.join(names)}")
            return
        from service.cli.train import _local_worker

        with _local_worker(store, s):
            final = follow_job(store, job.id, f"judge {spec.name}", json_out)
    if json_out:
        echo_json(final)
        return
    r = final["result"]
    agree = r["agreement_with_humans"]
    votes = r.get("votes", r["observations"])
    weighted = f" as {votes} votes (a strong graded verdict counts 3)" if votes != r["observations"] else ""
    click.echo(f"{r['judge']}: {r['judgements']} pairs judged in both orders, {r['observations']} verdicts logged on the judge board{weighted}")
    click.echo(f"inconsistent (winner changed with the order): {r['inconsistent']} of {r['judged_both_orders']}; errors (not votes): {r['errors']}")
    if agree["matched"]:
        click.echo(f"agreement with humans on {agree['matched']} shared battles: {agree['agreement']:.0%}")
