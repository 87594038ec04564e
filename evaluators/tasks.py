"""Benchmark tasks: how a document becomes a prompt and a target, and the requests a
task makes of a model. The task file itself is `evaluators.task_config` (fields,
validation) and `evaluators.task_files` (loading); lm-eval export and tasks from records are
`evaluators.task_export`; every public name is importable from here.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any

import jinja2
import msgspec

from evaluators.metrics import OutputType
from evaluators.records import Conversation, Message, render_plain
from evaluators.task_config import (
    GenerationKwargs,
    MetricConfig,
    TaskConfig,
    TaskError,
    TaskMetadata,
    is_registered_dataset,
)
from evaluators.task_files import load_docs, load_task, load_task_docs
from evaluators.task_export import LmEvalExport, export_lm_eval, lm_eval_config, task_from_records
from evaluators.task_templates import _compile, render_bounded


# --- rendering ---------------------------------------------------------------------------


def render(template: str, doc: dict[str, Any]) -> str:
    """Render a Jinja template with the document's fields as variables (undefined
    variables are errors, not empty strings)."""
    return render_bounded(_compile(template), doc)


def doc_hash(doc: dict[str, Any]) -> str:
    """sha256 of the document's JSON exactly as lm-eval computes `doc_hash`, so samples
    from an lm-eval run of an exported task join with ours."""
    text = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def doc_to_text(task: TaskConfig, doc: dict[str, Any]) -> str:
    """The document's prompt text (without few-shot examples or description)."""
    if task.doc_to_text in doc:
        return str(doc[task.doc_to_text])
    return render(task.doc_to_text, doc)


def doc_to_choice(task: TaskConfig, doc: dict[str, Any]) -> list[str]:
    """The document's answer choices (empty when the task has none)."""
    spec = task.doc_to_choice
    if spec is None:
        return []
    if isinstance(spec, list):
        return [render(c, doc) for c in spec]
    value = doc[spec] if spec in doc else _literal(render(spec, doc))
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, (str, int, float)) for c in value):
        raise TaskError(f"field 'doc_to_choice': expected a list of strings, got {value!r}")
    return [str(c) for c in value]


def doc_to_target(task: TaskConfig, doc: dict[str, Any]) -> Any:
    """The raw target as lm-eval reads it: a string, a list of strings, or (with choices)
    an index or list of indices."""
    spec = task.doc_to_target
    if isinstance(spec, (int, list)):
        return spec
    if spec in doc:
        return doc[spec]
    text = render(spec, doc)
    if text.isdigit() and task.doc_to_choice is not None:
        return int(text)
    if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
        value = _literal(text)
        if isinstance(value, list):
            return value
    return text


def _gold_indices(target: Any, choices: list[str]) -> tuple[int, ...]:
    targets = target if isinstance(target, list) else [target]
    gold = []
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, (int, str)):
            raise TaskError(f"field 'doc_to_target': expected a choice index or choice text, got {t!r}")
        if isinstance(t, str):
            if t not in choices:
                raise TaskError(f"field 'doc_to_target': {t!r} is not one of the choices {choices!r}")
            t = choices.index(t)
        if not 0 <= t < len(choices):
            raise TaskError(f"field 'doc_to_target': index {t} is out of range for {len(choices)} choices")
        gold.append(t)
    return tuple(gold)


def _references(task: TaskConfig, doc: dict[str, Any]) -> tuple[str, ...]:
    target = doc_to_target(task, doc)
    choices = doc_to_choice(task, doc)
    if choices:
        return tuple(choices[i] for i in _gold_indices(target, choices))
    if isinstance(target, list):
        return tuple(str(t) for t in target)
    return (str(target),)


# --- requests ----------------------------------------------------------------------------


class Request(msgspec.Struct, frozen=True):
    """What one document asks of a model.

    generate_until: generate from `prompt`, compare with `references`.
    multiple_choice: score `prompt` + each of `continuations`; `gold` indexes `choices`.
    loglikelihood_rolling: score the whole of `references[0]`; `prompt` is ''.

    A chat task's request also carries `messages`, the conversation sent (system, few-shot,
    history and user turns, without the answer); its `prompt` is then that conversation in
    the plain format, and each candidate renders `messages` with its own chat template.
    """

    doc_id: int
    doc_hash: str
    output_type: OutputType
    prompt: str
    references: tuple[str, ...]
    choices: tuple[str, ...] = ()
    continuations: tuple[str, ...] = ()
    gold: tuple[int, ...] = ()
    doc: dict[str, Any] = {}
    messages: tuple[Message, ...] = ()


def _fewshot_docs(task: TaskConfig, doc_key: str, pool: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    # Sorted by hash, so the choice does not depend on the order of the dataset.
    candidates = [d for h, d in sorted(pool, key=lambda item: item[0]) if h != doc_key]
    if len(candidates) < task.num_fewshot:
        raise TaskError(f"task {task.task}: num_fewshot is {task.num_fewshot} but only {len(candidates)} "
                        "other documents can serve as examples")
    # Seeded by the document itself: the same doc gets the same examples whatever the
    # order of the dataset or the `limit` of the run.
    return random.Random(f"fewshot:{doc_key}").sample(candidates, task.num_fewshot)


def _fewshot_block(task: TaskConfig, shots: Sequence[dict[str, Any]]) -> str:
    parts = [doc_to_text(task, s) + task.target_delimiter + _references(task, s)[0] for s in shots]
    return task.fewshot_delimiter.join(parts) + task.fewshot_delimiter if parts else ""


def _history(task: TaskConfig, doc: dict[str, Any]) -> list[Message]:
    """The document's earlier turns (`doc_to_history`), checked."""
    if task.doc_to_history is None:
        return []
    turns = doc.get(task.doc_to_history, [])
    if not isinstance(turns, list):
        raise TaskError(f"field 'doc_to_history': document field {task.doc_to_history!r} should be a list of "
                        f"{{role, content}} turns, got {type(turns).__name__}")
    out = []
    for i, turn in enumerate(turns):
        if (not isinstance(turn, dict) or turn.get("role") not in ("system", "user", "assistant")
                or not isinstance(turn.get("content"), str)):
            raise TaskError(f"field 'doc_to_history': turn {i} should be {{role: system|user|assistant, "
                            f"content: text}}, got {turn!r}")
        out.append(Message(turn["role"], turn["content"]))
    return out


def _chat_messages(task: TaskConfig, doc: dict[str, Any], shots: Sequence[dict[str, Any]]) -> tuple[Message, ...]:
    """The conversation a chat task sends, as lm-eval builds it: one system turn
    (`system_instruction`, then `description`, then the document's own system turn), the
    few-shot examples (as exchanges with `fewshot_as_multiturn`, else inside the user
    turn), the document's history, and the user turn."""
    history = _history(task, doc)
    system = [task.system_instruction, render(task.description, doc) if task.description else ""]
    if history and history[0].role == "system":
        system.append(history.pop(0).content)
    messages = [Message("system", "\n\n".join(p for p in system if p))] if any(system) else []
    user = doc_to_text(task, doc)
    if task.fewshot_as_multiturn:
        for shot in shots:
            messages += [Message("user", doc_to_text(task, shot)), Message("assistant", _references(task, shot)[0])]
    else:
        user = _fewshot_block(task, shots) + user
    return (*messages, *history, Message("user", user))


def build_requests(
    task: TaskConfig,
    docs: Sequence[dict[str, Any]],
    fewshot_docs: Sequence[dict[str, Any]] | None = None,
) -> list[Request]:
    """One `Request` per document, in order, with `doc_id` (its position) and `doc_hash`.

    Few-shot examples come from `fewshot_docs`, else from the other documents, chosen
    with a seed derived from the document (not lm-eval's sampler: prompts with
    num_fewshot > 0 differ from lm-eval's). A template that fails on a document raises
    `TaskError` naming the task, the document and the field."""
    pool: list[tuple[str, dict[str, Any]]] = []
    if task.num_fewshot:
        pool = [(doc_hash(d), d) for d in (fewshot_docs if fewshot_docs is not None else docs)]
    requests = []
    for doc_id, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise TaskError(f"task {task.task}: doc {doc_id}: expected a JSON object, got {type(doc).__name__}")
        key = doc_hash(doc)
        try:
            requests.append(_build_one(task, doc_id, key, doc, pool))
        except (jinja2.TemplateError, TaskError, KeyError, TypeError) as exc:
            message = exc.message if isinstance(exc, jinja2.TemplateError) else str(exc)
            raise TaskError(f"task {task.task}: doc {doc_id} (fields: {', '.join(sorted(doc))}): {message}") from None
    return requests


def _build_one(task: TaskConfig, doc_id: int, key: str, doc: dict[str, Any], pool) -> Request:
    if task.output_type == "loglikelihood_rolling":
        target = doc_to_target(task, doc)
        text = target[0] if isinstance(target, list) else str(target)
        return Request(doc_id, key, task.output_type, "", (text,), doc=doc)
    shots = _fewshot_docs(task, key, pool) if task.num_fewshot else []
    messages: tuple[Message, ...] = ()
    if task.apply_chat_template:
        messages = _chat_messages(task, doc, shots)
        prompt = render_plain(Conversation(messages=messages), add_generation_prompt=True)
    else:
        # Without a chat template, lm-eval puts the system instruction in front of the text.
        prompt = task.system_instruction + task.fewshot_delimiter if task.system_instruction else ""
        prompt += render(task.description, doc) if task.description else ""
        prompt += _fewshot_block(task, shots) + doc_to_text(task, doc)
    if task.output_type == "generate_until":
        return Request(doc_id, key, task.output_type, prompt, _references(task, doc), doc=doc, messages=messages)
    choices = doc_to_choice(task, doc)
    if not choices:
        raise TaskError("field 'doc_to_choice': the document has no choices")
    gold = _gold_indices(doc_to_target(task, doc), choices)
    # As lm-eval: after a chat template's assistant cue the answer starts bare, so a chat
    # task's continuations carry no target_delimiter (a base model's prompt ends in text).
    delimiter = "" if task.apply_chat_template else task.target_delimiter
    return Request(doc_id, key, task.output_type, prompt, tuple(choices[i] for i in gold), tuple(choices),
                   tuple(delimiter + c for c in choices), gold, doc=doc, messages=messages)


__all__ = [
    "GenerationKwargs", "LmEvalExport", "MetricConfig", "Request",
    "TaskConfig", "TaskError", "TaskMetadata", "build_requests", "doc_hash", "doc_to_choice", "doc_to_target",
    "doc_to_text", "export_lm_eval", "is_registered_dataset", "lm_eval_config", "load_docs", "load_task",
    "load_task_docs", "render", "task_from_records",
]
