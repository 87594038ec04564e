"""lm-eval export of a task, and generate_until tasks made from dataset records."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import yaml

from evaluators.metrics import DEFAULT_METRICS, METRICS
from evaluators.records import EOS, TURN_SEP, USER_PREFIX, Conversation, render_plain
from evaluators.text_metrics import exact_match_in_lm_eval
from evaluators.task_config import _CHAT_FIELDS, GenerationKwargs, MetricConfig, TaskConfig, TaskError

_PLAIN = TaskConfig(task="plain", dataset="plain.jsonl", doc_to_target="")


# --- lm-eval export and tasks from records -----------------------------------------------


class LmEvalExport(msgspec.Struct, frozen=True):
    """Files written by `export_lm_eval`; `dropped_metrics` are ours that lm-eval lacks
    (kept in `metadata.arena_metric_list` so reloading the YAML restores them)."""

    yaml_path: str
    data_path: str
    dropped_metrics: list[str]
    run_flags: list[str] = []  # lm_eval's flags the task needs: its chat options are run flags there


def lm_eval_flags(task: TaskConfig) -> list[str]:
    """The `lm_eval` flags that ask the task's prompts as we do: lm-eval takes the chat
    options (`--apply_chat_template`, `--system_instruction`, `--fewshot_as_multiturn`)
    per run, not per task, so a run without them asks other prompts (the exported
    YAML keeps them under `metadata.arena_chat` only)."""
    flags = ["--apply_chat_template"] if task.apply_chat_template else []
    if task.system_instruction:
        flags += ["--system_instruction", task.system_instruction]
    if task.fewshot_as_multiturn:
        flags.append("--fewshot_as_multiturn")
    return flags


def lm_eval_config(task: TaskConfig, data_path: str) -> tuple[dict[str, Any], list[str]]:
    """The task as an lm-eval YAML mapping reading `data_path`, and the dropped metrics."""
    kept, dropped = [], []
    for m in task.metrics:
        (kept if METRICS[m.metric].in_lm_eval else dropped).append(m)
    if not kept:
        kept = [MetricConfig(DEFAULT_METRICS[task.output_type][0])]
    options = {m.metric: exact_match_in_lm_eval(m.kwargs) if m.metric == "exact_match" else m.kwargs for m in kept}

    def entry(m: MetricConfig) -> dict[str, Any]:
        spec = METRICS[m.metric]
        return {"metric": m.metric, "aggregation": m.aggregation or spec.aggregation,
                "higher_is_better": spec.higher_is_better if m.higher_is_better is None else m.higher_is_better,
                **options[m.metric]}

    config: dict[str, Any] = {
        "task": task.task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_path}},
        "test_split": "test",
        "output_type": task.output_type,
        "doc_to_text": task.doc_to_text,
        "doc_to_target": task.doc_to_target,
    }
    if task.doc_to_choice is not None:
        config["doc_to_choice"] = task.doc_to_choice
    if task.description:
        config["description"] = task.description
    config.update(target_delimiter=task.target_delimiter, fewshot_delimiter=task.fewshot_delimiter,
                  num_fewshot=task.num_fewshot)
    if task.output_type == "generate_until":
        config["generation_kwargs"] = msgspec.to_builtins(task.generation_kwargs)
    config["metric_list"] = [entry(m) for m in kept]
    config["metadata"] = {"version": task.metadata.version, **task.metadata.extra}
    if dropped or any(options[m.metric] != m.kwargs for m in kept):
        # Ours, as the task says them (reloading the YAML restores them): the metrics lm-eval
        # lacks, and options rewritten into what lm-eval computes the same way.
        config["metadata"]["arena_metric_list"] = [
            {"metric": m.metric, **{k: v for k, v in (("aggregation", m.aggregation),
                                                      ("higher_is_better", m.higher_is_better)) if v is not None},
             **m.kwargs}
            for m in task.metrics]
    chat = {k: getattr(task, k) for k in _CHAT_FIELDS if getattr(task, k) != getattr(_PLAIN, k)}
    if chat:
        # lm-eval takes these as run flags (--apply_chat_template, --system_instruction,
        # --fewshot_as_multiturn); kept here so reloading the YAML restores them.
        config["metadata"]["arena_chat"] = chat
    return config, [m.metric for m in dropped]


class _TaskDumper(yaml.SafeDumper):
    """Strings with line breaks as double-quoted scalars ("Q: {{q}}\\nA:"), the way task
    files are written by hand; plain YAML folding would turn them into blank lines."""


_TaskDumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style='"' if "\n" in s else None))


def task_yaml(config: dict[str, Any]) -> str:
    """A task mapping as YAML the way task files are written: keys in order, text as is
    (Chinese unescaped), multi-line strings double-quoted."""
    return yaml.dump(config, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True, width=1000)


def export_lm_eval(task: TaskConfig, docs: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> LmEvalExport:
    """Write `<task>.yaml` and `<task>.jsonl` into `out_dir` so that
    `lm_eval --tasks <task> --include_path <out_dir>` runs the task on `docs`.

    The YAML names the JSONL by absolute path (HF `datasets` resolves relative paths
    against the working directory, not the YAML)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_path = (out / f"{task.task}.jsonl").resolve()
    with data_path.open("w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    config, dropped = lm_eval_config(task, str(data_path))
    yaml_path = out / f"{task.task}.yaml"
    yaml_path.write_text(task_yaml(config), encoding="utf-8")
    return LmEvalExport(str(yaml_path), str(data_path), dropped, lm_eval_flags(task))


def record_doc(record: Conversation) -> dict[str, Any]:
    """A task document of a conversation: `question` (its last user turn), `history` (every
    turn before that, as `{"role", "content"}`), `answer` (its final assistant turn) and
    `prompt` (the turns before the answer in the plain `User:…</s>` format ending
    `Assistant:`, for task files written against it)."""
    before = record.prompt_messages
    last_user = max((k for k, m in enumerate(before) if m.role == "user"), default=None)
    history = before[:last_user] if last_user is not None else before
    return {
        "prompt": render_plain(Conversation(messages=before), add_generation_prompt=True),
        "question": record.prompt,
        "history": [{"role": m.role, "content": m.content} for m in history],
        "answer": record.answer,
    }


def task_from_records(
    name: str,
    records: Sequence[Conversation],
    *,
    dataset: str | None = None,
    metric_list: Sequence[str] = ("exact_match", "token_f1", "rouge_l"),
    max_gen_toks: int = 256,
) -> tuple[TaskConfig, list[dict[str, Any]]]:
    """A generate_until chat task over conversations: each record's last user turn is asked
    after its earlier turns (`doc_to_history`), rendered with the candidate's chat
    template (`apply_chat_template`), exactly as the record was trained; the target is
    its final answer. Returns the task and its documents (`record_doc`); the caller
    stores the documents where `dataset` (default `<name>.jsonl`) says. Records without
    an answer raise `TaskError`."""
    docs = []
    for i, record in enumerate(records):
        if not record.answer:
            raise TaskError(f"task {name}: record {i} has no final assistant answer to use as the target")
        docs.append(record_doc(record))
    task = TaskConfig(
        task=name,
        dataset=dataset or f"{name}.jsonl",
        doc_to_text="{{question}}",
        doc_to_target="{{answer}}",
        output_type="generate_until",
        metric_list=[MetricConfig(m) for m in metric_list],
        generation_kwargs=GenerationKwargs(until=[EOS, TURN_SEP + USER_PREFIX], max_gen_toks=max_gen_toks),
        apply_chat_template=True,
        doc_to_history="history",
    )
    return task, docs
