"""Benchmarks as jobs: a task over one or more candidates, results with lineage.

An eval is a job of kind `eval`; its id is the job id. `start_eval` checks everything
that can be checked at once (the task's templates on every document — for a task sent
over HTTP only the worker renders them —, the candidates, the limit), stores the task's documents content-addressed under
`<data dir>/evals/docs/`, and enqueues. The worker's `eval_job` registers the
candidates' adapters with the generation backend, runs `evaluators.runner.evaluate`
(all candidates in the same backend calls, so they share mixed-adapter batches),
writes lm-eval's layout per candidate under `<data dir>/evals/<eval id>/<candidate>/`
(`results_<date>.json` + `samples_<task>_<date>.jsonl`) and only then records the
`EvalRecord`, so a failed or cancelled eval leaves no record.

A task's dataset is a JSONL file, or `NAME@VERSION:SPLIT` of a registered dataset
(`test`: its held-out split, `train`: the rest, `all`), whose records become documents
`{"prompt", "answer", "question", "record"}`: the prompt in the plain chat format
(`User:…</s>\\n Assistant:`), which is also the format of the bases `arena base tiny`
builds, and base-independent, so candidates on different bases pair item by item.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import yaml

from evaluators.bounded_json import TooDeep, TooMany, check_depth, safe_yaml
from evaluators.records import Conversation
from evaluators.tasks import (
    TaskConfig,
    TaskError,
    build_requests,
    doc_hash,
    is_registered_dataset,
    load_docs,
    load_task,
    task_from_records,
)
from service import datasets
from service.config import Settings
from service.ids import check_id, under
from service.domain import Candidate, DatasetVersion, JobRecord, check_name
from service.errors import InvalidInput, NotFound
from service.jobs import enqueue

#: Splits a registered dataset reference may name.
SPLITS = ("test", "train", "all")
#: Worst samples kept in the record per candidate (the page shows them).
WORST_KEPT = 10


def eval_dir(settings: Settings, eval_id: str) -> Path:
    """Where an eval's files live (ids, never user strings, make paths)."""
    return under(settings.data_dir, "evals", check_id("eval", eval_id))


# --- tasks and their documents ---------------------------------------------------------------


def load_task_file(path: str | Path, overrides: dict[str, Any] | None = None) -> TaskConfig:
    """`evaluators.tasks.load_task` with its `TaskError` (file, line, field) as `InvalidInput`."""
    try:
        return load_task(path, overrides)
    except TaskError as exc:
        raise InvalidInput(str(exc)) from None


def chat_overrides(*, apply_chat_template: bool | None = None, system_instruction: str | None = None,
                   fewshot_as_multiturn: bool | None = None) -> dict[str, Any]:
    """lm-eval's run flags as task-field overrides (a None flag leaves the task's own field)."""
    return {k: v for k, v in (("apply_chat_template", apply_chat_template), ("system_instruction", system_instruction),
                              ("fewshot_as_multiturn", fewshot_as_multiturn)) if v is not None}


def parse_task_text(text: str, overrides: dict[str, Any] | None = None) -> TaskConfig:
    """A task from YAML text (the API's request body), errors naming `task:LINE: field`.

    The text goes through the same loader as a file, so the same checks and messages
    apply; a relative `dataset` path means nothing here (send `docs`, or name a
    registered dataset)."""
    try:
        check_depth(text)
        raw = safe_yaml(text)
    except (yaml.YAMLError, TooDeep, TooMany, RecursionError):
        raw = None  # the loader below reports where
    except UnicodeError as exc:
        raise InvalidInput(f"task: not valid text: {exc}") from None
    if isinstance(raw, dict) and "include" in raw:
        raise InvalidInput("task: field 'include': other files cannot be included in a task sent to the server")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "task.yaml"
        try:
            path.write_text(text, encoding="utf-8")
        except UnicodeError as exc:
            raise InvalidInput(f"task: not valid text: {exc}") from None
        try:
            return load_task(path, overrides)
        except TaskError as exc:
            raise InvalidInput(str(exc).replace(str(path), "task")) from None


def records_to_docs(records: Sequence[Conversation], indices: Sequence[int]) -> list[dict[str, Any]]:
    """Task documents of dataset records: `prompt` (plain chat format, ending `Assistant:`),
    `answer` (the final assistant turn), `question` (the last user turn) and `record`
    (the record's index in its dataset version, for tracing a failure back to it)."""
    try:
        _, docs = task_from_records("records", list(records))
    except TaskError as exc:
        raise InvalidInput(str(exc)) from None
    return [{**doc, "question": r.prompt, "record": i} for doc, r, i in zip(docs, records, indices)]


async def resolve_dataset_docs(store, settings: Settings, ref: str) -> tuple[DatasetVersion, str, list[dict[str, Any]]]:
    """(version, split, documents) of a `NAME@VERSION:SPLIT` reference."""
    name_version, _, split = ref.rpartition(":")
    if split not in SPLITS:
        raise InvalidInput(f"dataset {ref!r}: split {split!r} is not one of {', '.join(SPLITS)}")
    dsv = await store.resolve_dataset(name_version)
    records, _ = datasets.read_records(settings.data_dir, dsv.id)
    if split == "test":
        if dsv.split is None:
            raise InvalidInput(f"dataset {dsv.ref} has no held-out split; make one with `arena data split {dsv.ref}`")
        indices = list(dsv.split.test_indices)
    elif split == "train" and dsv.split is not None:
        indices = dsv.split.train_indices(len(records))
    else:
        indices = list(range(len(records)))
    return dsv, split, records_to_docs([records[i] for i in indices], indices)


def docs_content_id(docs: Sequence[dict[str, Any]]) -> str:
    """Content id of a document list: sha256 over the documents' lm-eval doc hashes, in order."""
    h = hashlib.sha256()
    for doc in docs:
        h.update(doc_hash(doc).encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def _docs_path(settings: Settings, docs_id: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{32}", docs_id):
        raise InvalidInput(f"bad documents id {docs_id!r}")
    return settings.data_dir / "evals" / "docs" / f"{docs_id}.jsonl"


def write_docs(settings: Settings, docs: Sequence[dict[str, Any]]) -> str:
    """Store documents content-addressed (once); return their id."""
    docs_id = docs_content_id(docs)
    path = _docs_path(settings, docs_id)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for doc in docs:
                fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
        tmp.replace(path)
    return docs_id


def read_docs(settings: Settings, docs_id: str) -> list[dict[str, Any]]:
    path = _docs_path(settings, docs_id)
    if not path.exists():
        raise NotFound(f"the eval's documents {docs_id} are gone from {path.parent}")
    return load_docs(path)


def task_hash(task: TaskConfig, docs_id: str) -> str:
    """What the task computes: its config without the dataset's location, and its documents."""
    config = msgspec.to_builtins(task)
    config.pop("dataset")
    return hashlib.sha256(json.dumps({"task": config, "docs": docs_id}, sort_keys=True).encode()).hexdigest()[:32]


class PreparedTask(msgspec.Struct):
    """A task with its documents stored and identified: what an eval job needs."""

    task: TaskConfig
    docs: list[dict[str, Any]]
    docs_id: str
    task_hash: str
    dataset: str  # NAME@N:SPLIT, a file path, or inline:<docs id>
    dataset_id: str


async def prepare_task(store, settings: Settings, task: TaskConfig, docs: list[dict[str, Any]] | None = None,
                       *, allow_files: bool = True, store_docs: bool = True, render_check: bool = True) -> PreparedTask:
    """Resolve the task's documents (`docs` given inline, a registered dataset, or — when
    `allow_files` — its JSONL file), check every document renders, and (`store_docs`)
    store them where the eval job reads them. Raises `InvalidInput` naming the task, the
    document and the field. Without `render_check` (a task sent over HTTP: its templates are
    untrusted) nothing is rendered here; the worker renders them and a failing template
    fails the job with the same message."""
    dataset = task.dataset
    dataset_id = ""
    if docs is not None:
        if not all(isinstance(d, dict) for d in docs):
            raise InvalidInput("docs: expected a list of JSON objects")
        dataset = "inline"
    elif is_registered_dataset(task.dataset):
        dsv, split, docs = await resolve_dataset_docs(store, settings, task.dataset)
        dataset, dataset_id = f"{dsv.ref}:{split}", dsv.id
    elif allow_files:
        try:
            docs = load_docs(task.dataset)
        except TaskError as exc:
            raise InvalidInput(str(exc)) from None
    else:
        raise InvalidInput(f"task {task.task}: dataset {task.dataset!r} is a file path, which the server does not "
                           "read; send the documents in `docs`, or name a registered dataset as NAME@VERSION:SPLIT")
    if not docs:
        raise InvalidInput(f"task {task.task}: dataset {dataset} has no documents")
    import anyio.to_thread

    try:  # every template on every document, now rather than in the job; off the event loop
        if render_check:
            await anyio.to_thread.run_sync(build_requests, task, docs)
    except (TaskError, ValueError, TypeError) as exc:
        raise InvalidInput(str(exc)) from None
    if store_docs:
        docs_id = await anyio.to_thread.run_sync(write_docs, settings, docs)
    else:
        docs_id = docs_content_id(docs)
    if dataset == "inline":
        dataset = f"inline:{docs_id}"
    return PreparedTask(task, docs, docs_id, task_hash(task, docs_id), dataset, dataset_id or docs_id)


# --- candidates --------------------------------------------------------------------------------


def backend_label(settings: Settings) -> str:
    """Which generation backend scores: part of an eval's identity."""
    return f"remote:{settings.generation_url}" if settings.generation_url else "in-process"


def eval_cache_key(settings: Settings, candidate: Candidate, task_hash_: str, limit: int | float | None) -> str:
    """Identity of one candidate's results on one task: its weights (run and adapter
    directory), the task hash, the limit and the backend. Greedy decoding makes a cached
    result equal to a rerun."""
    identity = [candidate.name, candidate.run_id, candidate.adapter_dir, candidate.created_at, task_hash_,
                limit, backend_label(settings)]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


def adapter_sha256(adapter_dir: str | Path) -> str:
    """sha256 of the adapter's weights file (`adapter_model.safetensors`, else `.bin`), or ''."""
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        path = Path(adapter_dir) / name
        if path.is_file():
            h = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            return h.hexdigest()
    return ""


def check_limit(limit: Any) -> int | float | None:
    """None, a count >= 1, or a fraction in (0, 1) (lm-eval's meaning of --limit)."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit):
        raise InvalidInput(f"limit: expected a count >= 1 or a fraction in (0, 1), got {limit!r}")
    if isinstance(limit, float) and limit.is_integer() and limit >= 1:
        limit = int(limit)
    if isinstance(limit, int) and limit >= 1 or isinstance(limit, float) and 0 < limit < 1:
        return limit
    raise InvalidInput(f"limit: expected a count >= 1 or a fraction in (0, 1), got {limit!r}")


async def check_candidates(store, names: Sequence[str]) -> list[Candidate]:
    """The named candidates (each once, each existing, each on a registered base)."""
    names = list(names)
    if not names:
        raise InvalidInput("candidates: name at least one candidate")
    if len(set(names)) != len(names):
        raise InvalidInput(f"candidates: each name once, got {', '.join(names)}")
    candidates = []
    for name in names:
        check_name(name, "candidate name")
        candidate = await store.get_candidate(name)
        await store.get_base(candidate.base)
        candidates.append(candidate)
    return candidates


async def start_eval(store, queue, settings: Settings, *, task: TaskConfig, candidates: Sequence[str],
                     limit: int | float | None = None, docs: list[dict[str, Any]] | None = None,
                     allow_files: bool = True, prepared: PreparedTask | None = None) -> JobRecord:
    """Check the task, the candidates and the limit; store the documents; enqueue the eval.
    The returned job's id is the eval id."""
    limit = check_limit(limit)
    await check_candidates(store, candidates)
    if task.output_type == "generate_until" and task.generation_kwargs.max_gen_toks > settings.max_new_tokens_cap:
        raise InvalidInput(f"task {task.task}: generation_kwargs.max_gen_toks={task.generation_kwargs.max_gen_toks} "
                           f"is over the service's limit of {settings.max_new_tokens_cap} (ARENA_MAX_NEW_TOKENS_CAP)")
    if settings.generation_url and task.output_type != "generate_until":
        raise InvalidInput(f"task {task.task}: {task.output_type} needs log-likelihoods, which the remote generation "
                           "backend (ARENA_GENERATION_URL) does not give; run it on a worker without a generation URL")
    # Over HTTP (no files) the templates are rendered by the worker only, never in the API process.
    prepared = prepared or await prepare_task(store, settings, task, docs, allow_files=allow_files, render_check=allow_files)
    params = {
        "task": msgspec.to_builtins(prepared.task), "docs_id": prepared.docs_id, "task_hash": prepared.task_hash,
        "dataset": prepared.dataset, "dataset_id": prepared.dataset_id, "candidates": list(candidates), "limit": limit,
    }
    return await enqueue(store, queue, settings, "eval", params, job_id=f"eval_{secrets.token_hex(8)}")
