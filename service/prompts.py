"""Arena prompts: from a file, a dataset's held-out split, or a task; each `ArenaPrompt`
has the text a reviewer sees and, where known, a gold reference (for the reference judge),
a category and a source (for the leaderboard's filters), and what the pool says of its
kind: `task_type` and `hard` (`service.prompt_categories` makes the battle's category tags).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from evaluators.bounded_json import TooDeep, check_depth
from service.errors import InvalidInput
from service.prompt_categories import check_pool_category, check_task_type, prompt_tags, task_type_name

#: Longest prompt accepted (characters): a pasted essay, not a file.
MAX_PROMPT_CHARS = 8000
_TEXT_KEYS = ("prompt", "text", "question", "instruction")
_REFERENCE_KEYS = ("reference", "answer", "completion", "output", "target")


class ArenaPrompt(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One prompt of the pool. `context` holds the turns before the user turn `text` (a
    system turn, earlier exchanges) as `{"role", "content"}` dicts: candidates answer in
    that conversation, and reviewers see it."""

    text: str
    reference: str | None = None
    category: str | None = None
    source: str | None = None
    context: list[dict[str, str]] = msgspec.field(default_factory=list)
    task_type: str | None = None
    hard: bool = False

    def tags(self) -> list[str]:
        """The category tags of a battle on this prompt (`service.prompt_categories`)."""
        return prompt_tags(self.text, task_type=self.task_type, hard=self.hard)

    def conversation(self):
        """What candidates answer: the context turns, then the user turn `text`."""
        from evaluators.records import Conversation, Message

        turns = (*(Message(t["role"], t["content"]) for t in self.context), Message("user", self.text))
        return Conversation(messages=turns)  # type: ignore[arg-type]


def prompt_context(turns: Any, where: str) -> list[dict[str, str]]:
    """The turns before a prompt's user turn, checked: system/user/assistant roles with
    string contents, at most `MAX_PROMPT_CHARS` characters together."""
    context = []
    for k, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, dict) else getattr(turn, "role", None)
        content = turn.get("content") if isinstance(turn, dict) else getattr(turn, "content", None)
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise InvalidInput(f"{where}: turn {k}: expected role system/user/assistant and a string content")
        context.append({"role": role, "content": content})
    if sum(len(t["content"]) for t in context) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"{where}: the turns before the prompt are over the limit of {MAX_PROMPT_CHARS} characters")
    return context


def check_prompt_text(text: Any, where: str = "prompt") -> str:
    """The prompt text, stripped; `InvalidInput` if it is not a non-empty string of at most
    `MAX_PROMPT_CHARS` characters."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{where}: expected a non-empty string")
    text = text.strip()
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"{where}: {len(text)} characters is over the limit of {MAX_PROMPT_CHARS}")
    return text


def parse_prompt_record(obj: Any, where: str, *, source: str | None = None, category: str | None = None) -> ArenaPrompt:
    """One prompt from a JSON object: text from `prompt`/`text`/`question`/`instruction`
    (+ `input`) or a chat `messages` list (its last user turn, the turns before it as
    `context`; a final assistant turn is the reference); reference from `reference`/`answer`/`completion`/`output`/`target`;
    optional `category`, `source`, `task_type` (also from a `meta` object) and `hard` (a boolean)."""
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(obj).__name__}")
    text = reference = None
    context: list[dict[str, str]] = []
    if isinstance(obj.get("messages"), list):
        messages = [m for m in obj["messages"] if isinstance(m, dict)]
        if messages and messages[-1].get("role") == "assistant":
            reference = messages[-1].get("content")
            messages = messages[:-1]
        last_user = _last_user([m.get("role") for m in messages])
        if last_user is not None:
            text, context = messages[last_user].get("content"), prompt_context(messages[:last_user], where)
    else:
        key = next((k for k in _TEXT_KEYS if k in obj), None)
        if key is None:
            raise InvalidInput(f"{where}: no prompt: expected one of the fields {', '.join(_TEXT_KEYS)} or messages")
        text = obj[key]
        if key == "instruction" and isinstance(obj.get("input"), str) and obj["input"].strip():
            text = f"{text}\n{obj['input']}"  # as the dataset reader (and LLaMA-Factory) joins them
        ref_key = next((k for k in _REFERENCE_KEYS if k in obj), None)
        reference = obj[ref_key] if ref_key else None
    if isinstance(reference, list):  # lm-eval style targets: keep the first
        reference = reference[0] if reference else None
    if reference is not None and not isinstance(reference, str):
        reference = str(reference)
    if "source" in obj and not isinstance(obj["source"], str):
        raise InvalidInput(f"{where}: field 'source' must be a string")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    hard = obj.get("hard", meta.get("hard", False))
    if not isinstance(hard, bool):
        raise InvalidInput(f"{where}: field 'hard' must be true or false")
    return ArenaPrompt(
        text=check_prompt_text(text, where),
        reference=reference.strip() if reference and reference.strip() else None,
        category=check_pool_category(obj.get("category") or category, where),
        source=obj.get("source") or source,
        context=context,
        task_type=check_task_type(obj.get("task_type", meta.get("task_type")), where),
        hard=hard,
    )


def parse_prompt_file(path: Path, *, category: str | None = None, source: str | None = None) -> list[ArenaPrompt]:
    """Prompts from a JSONL file (see `parse_prompt_record`) or a plain text file (one
    prompt per non-blank line). `source` defaults to the file name. Errors name the line."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not UTF-8 text") from None
    source = source or path.name
    lines = [(n, line) for n, line in enumerate(raw.splitlines(), start=1) if line.strip()]
    if not lines:
        raise InvalidInput(f"{path}: no prompts")
    prompts = []
    json_lines = lines[0][1].lstrip().startswith("{")
    for n, line in lines:
        where = f"{path}:{n}"
        if json_lines:
            try:
                check_depth(line)
                obj = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                raise InvalidInput(f"{where}: not valid JSON ({exc})") from None
            except TooDeep as exc:
                raise InvalidInput(f"{where}: nested deeper than {exc.limit} levels") from None
            prompts.append(parse_prompt_record(obj, where, source=source, category=category))
        else:
            prompts.append(ArenaPrompt(text=check_prompt_text(line, where), category=check_pool_category(category, where),
                                       source=source))
    return prompts


async def prompts_from_dataset(store, settings, ref: str, *, split: str = "test", category: str | None = None) -> list[ArenaPrompt]:
    """Prompts from a registered dataset (`NAME[@VERSION]`): its held-out split by default
    (`split="all"` for every record). Text is each record's last user turn, the turns
    before it its context, the reference its final assistant turn."""
    from service import datasets

    category = check_pool_category(category, "category")
    dsv = await store.resolve_dataset(ref)
    records, _ = datasets.read_records(settings.data_dir, dsv.id)
    if split == "test":
        if dsv.split is None:
            raise InvalidInput(f"dataset {dsv.ref} has no held-out split; make one with `arena data split {dsv.ref}` or use the whole set")
        records = [records[i] for i in dsv.split.test_indices]
    elif split != "all":
        raise InvalidInput(f"split {split!r}: expected 'test' (the held-out split) or 'all'")
    return [
        ArenaPrompt(text=check_prompt_text(r.prompt, f"{dsv.ref} record"), reference=r.answer or None, category=category,
                    source=dsv.ref, context=prompt_context(r.prompt_messages[: _last_user([m.role for m in r.prompt_messages]) or 0],
                                           f"{dsv.ref} record"),
                    task_type=task_type_name(r.metadata.get("task_type")),
                    hard=str(r.metadata.get("hard", "")).casefold() == "true")
        for r in records
        if r.prompt.strip()
    ]


def _last_user(roles: list) -> int | None:
    """The index of the last user turn (the prompt; the turns before it are its context)."""
    return max((k for k, role in enumerate(roles) if role == "user"), default=None)


async def prompts_from_task(store, settings, path: str | Path, *, category: str | None = None) -> list[ArenaPrompt]:
    """Prompts of a `generate_until` task (YAML): each document's rendered prompt, or a chat
    task's user turn with its system turn and history as context (the arena renders the
    conversation with each candidate's template), with its first reference answer.
    Category defaults to the task's name."""
    from evaluators.tasks import TaskError, build_requests
    from service.evals import load_task_file, prepare_task

    task = load_task_file(path)
    if task.output_type != "generate_until":
        raise InvalidInput(f"task {task.task}: output_type {task.output_type} has no prompts to answer; arena prompts need generate_until")
    prepared = await prepare_task(store, settings, task, store_docs=False)
    try:
        requests = build_requests(task, prepared.docs)
    except TaskError as exc:
        raise InvalidInput(str(exc)) from None
    return [
        ArenaPrompt(
            text=check_prompt_text(r.messages[-1].content if r.messages else r.prompt, f"task {task.task} doc {r.doc_id}"),
            reference=r.references[0] if r.references else None,
            category=check_pool_category(category or task.task, "category"),
            source=f"task:{task.task}",
            context=prompt_context(r.messages[:-1], f"task {task.task} doc {r.doc_id}"),
        )
        for r in requests
    ]
