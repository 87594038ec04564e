"""`arena task from-data|export|validate`: derive a benchmark task from a dataset, export
it for lm-eval (with the `lm_eval` command that asks its prompts as we do), validate it."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.common import open_store, settings
from service.cli.evals import _names, _task_file
from service.errors import InvalidInput


@click.group("task")
def task_cmd() -> None:
    """Derive, export and validate benchmark tasks."""


@task_cmd.command("from-data")
@click.argument("dataset")
@click.option("--split", type=click.Choice(["test", "train", "all"]), default="test", show_default=True,
              help="Which records: the held-out split (test), the rest (train), or all.")
@click.option("--name", default=None, help="Task name (default: the dataset's name).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: <name>.yaml")
@click.option("--metrics", default="exact_match,token_f1,rouge_l", show_default=True, help="Comma-separated metrics.")
@click.option("--max-gen-toks", type=int, default=64, show_default=True)
def task_from_data(dataset: str, split: str, name: str | None, out: Path | None, metrics: str, max_gen_toks: int) -> None:
    """A chat generation task over DATASET's held-out split (NAME[@VERSION]), in each candidate's chat template."""
    from evaluators.task_export import task_yaml
    from evaluators.tasks import TaskError, task_from_records
    from service.evals import resolve_dataset_docs

    s = settings()
    with open_store(s) as store:
        dsv = store.resolve_dataset(dataset)
        ref = f"{dsv.ref}:{split}"
        _, _, docs = store._run(resolve_dataset_docs(store.store, s, ref))
    name = name or dsv.name
    try:
        task, _ = task_from_records(name, [], dataset=ref, metric_list=_names(metrics), max_gen_toks=max_gen_toks)
    except TaskError as exc:
        raise InvalidInput(str(exc)) from None
    config = {
        "task": task.task, "dataset": ref, "output_type": task.output_type,
        # Each record's last user turn, after its earlier turns, in each candidate's own chat
        # template: the prompt the record was trained on, and what a trace reads back.
        "apply_chat_template": True, "doc_to_history": task.doc_to_history, "doc_to_text": task.doc_to_text,
        "doc_to_target": task.doc_to_target, "generation_kwargs": {"until": task.generation_kwargs.until,
                                                                   "max_gen_toks": max_gen_toks},
        "metric_list": [{"metric": m.metric} for m in task.metric_list],
        "metadata": {"version": 1.0, "dataset_id": dsv.id, "documents": len(docs)},
    }
    out = out or Path(f"{name}.yaml")
    out.write_text(task_yaml(config), encoding="utf-8")
    click.echo(f"wrote {out}: task {name} over {ref} ({len(docs)} documents, dataset id {dsv.id})")


def _resolve_docs(task):
    """The task's documents, through the store when it names a registered dataset."""
    from evaluators.tasks import is_registered_dataset
    from service.evals import prepare_task

    s = settings()
    if is_registered_dataset(task.dataset):
        with open_store(s) as store:
            return store._run(prepare_task(store.store, s, task, store_docs=False))
    return _run_without_store(prepare_task(None, s, task, store_docs=False))


def _run_without_store(coro):
    import asyncio

    return asyncio.run(coro)


@task_cmd.command("export")
@click.argument("task_file")
@click.option("--format", "fmt", type=click.Choice(["lm-eval"]), default="lm-eval", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory to write into.")
def task_export(task_file: str, fmt: str, out: Path) -> None:
    """Write TASK as <task>.yaml + <task>.jsonl that `lm_eval --include_path OUT` runs."""
    from evaluators.tasks import export_lm_eval

    prepared = _resolve_docs(_task_file(task_file))
    export = export_lm_eval(prepared.task, prepared.docs, out)
    click.echo(f"wrote {export.yaml_path} and {export.data_path} ({len(prepared.docs)} documents)")
    if export.dropped_metrics:
        click.echo(f"lm-eval lacks {', '.join(export.dropped_metrics)}: kept in metadata.arena_metric_list only")
    history = prepared.task.doc_to_history
    turns = sum(bool(d.get(history)) for d in prepared.docs) if history else 0
    if turns:
        click.echo(f"warning: {turns} of {len(prepared.docs)} documents have earlier turns ({history}); lm-eval asks "
                   "only the last user turn, so its scores on them are not ours (arena check refuses such a baseline)",
                   err=True)
    if prepared.task.num_fewshot:
        click.echo(f"warning: lm-eval picks the {prepared.task.num_fewshot} few-shot examples of each document its own "
                   "way (and, with --apply_chat_template, sends them as earlier turns), so it asks other prompts than "
                   "ours (arena check refuses such a baseline)", err=True)
    import shlex

    click.echo("run: " + shlex.join(["lm_eval", "--model", "hf", "--model_args", "pretrained=BASE,peft=ADAPTER", "--tasks",
                                     prepared.task.task, "--include_path", str(out), *export.run_flags, "--log_samples",
                                     "--output_path", "RESULTS_DIR"]))


@task_cmd.command("validate")
@click.argument("task_file")
def task_validate(task_file: str) -> None:
    """Check TASK: fields, templates on every document, metrics."""
    prepared = _resolve_docs(_task_file(task_file))
    t = prepared.task
    click.echo(f"ok: task {t.task}: {len(prepared.docs)} documents from {prepared.dataset}, {t.output_type}, "
               f"metrics {', '.join(m.metric for m in t.metrics)}")
