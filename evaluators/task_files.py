"""Reading task files and their documents: `load_task` (YAML, lm-eval's spelling of a local
JSON dataset included, errors that name the file, line and field), `load_docs` and
`load_task_docs`. The fields and their validation are `evaluators.task_config`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import yaml

from evaluators.bounded_json import SURROGATE_ESCAPE, TooDeep, TooMany, check_depth, lone_surrogate, long_number, safe_yaml
from evaluators.encodings import not_utf8
from evaluators.metrics import OUTPUT_TYPES
from evaluators.task_config import (
    _CHAT_FIELDS,
    _LM_EVAL_DATASET_KEYS,
    _LM_EVAL_IGNORED,
    _LM_EVAL_UNSUPPORTED,
    _TASK_FIELDS,
    TaskConfig,
    TaskError,
    is_registered_dataset,
)


# --- loading -----------------------------------------------------------------------------


def _key_lines(text: str) -> dict[str, int]:
    # Line (1-based) of each top-level key, so errors can point into the file.
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _read_text(path: Path, what: str) -> str:
    """The file as UTF-8 text; `TaskError` saying where it is not (and what it reads as)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TaskError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TaskError(not_utf8(str(path), raw, exc, option=None)) from None


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    text = _read_text(path, "task file")
    try:
        check_depth(text)
        raw = safe_yaml(text)
    except TooDeep as exc:
        raise TaskError(f"{path}:{exc.line}: nested deeper than {exc.limit} levels") from None
    except TooMany as exc:
        raise TaskError(f"{path}:{exc.line}: YAML aliases expand to more than {exc.limit:,} values") from None
    except RecursionError:  # block-style nesting, which has no brackets to count
        raise TaskError(f"{path}: nested too deeply to read") from None
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        if "!function" in str(exc):
            raise TaskError(f"{path}:{line}: '!function' (Python code in a task) is not supported; "
                            "write the field as a Jinja template") from None
        raise TaskError(f"{path}:{line}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise TaskError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: expected a mapping of task fields, got {type(raw).__name__}")
    for key in raw:
        if not isinstance(key, str):
            raise TaskError(f"{path}: field names are text; got {key!r}")
    return raw, _key_lines(text)


def _normalise_raw(raw: dict[str, Any], base_dir: Path, where: Callable[[str], str]) -> dict[str, Any]:
    """Map lm-eval spellings onto ours and split free-form keys out of metric entries."""
    raw = {k: v for k, v in raw.items() if k not in _LM_EVAL_IGNORED}
    repeats = raw.pop("repeats", 1)
    if repeats != 1:
        raise TaskError(f"{where('repeats')}: only repeats: 1 is supported, got {repeats!r}")
    if raw.keys() & _LM_EVAL_DATASET_KEYS:
        if "dataset" in raw:
            raise TaskError(f"{where('dataset_path')}: give either 'dataset' or lm-eval's 'dataset_path', not both")
        if raw.get("dataset_path") != "json":
            raise TaskError(f"{where('dataset_path')}: only local JSON datasets (dataset_path: json) can be "
                            f"imported, got {raw.get('dataset_path')!r}")
        split = raw.pop("test_split", "test")
        files = (raw.pop("dataset_kwargs", None) or {}).get("data_files")
        raw.pop("dataset_path")
        if isinstance(files, dict):
            files = files.get(split)
        if isinstance(files, list) and len(files) == 1:
            files = files[0]
        if not isinstance(files, str):
            raise TaskError(f"{where('dataset_kwargs')}: expected dataset_kwargs.data_files.{split} to name one "
                            f"JSONL file, got {files!r}")
        raw["dataset"] = files
    unsupported = sorted(set(raw) & _LM_EVAL_UNSUPPORTED)
    if unsupported:
        raise TaskError(f"{where(unsupported[0])}: lm-eval's {unsupported[0]!r} is not supported in arena tasks; "
                        "express the prompt and target with doc_to_text / doc_to_target templates")
    unknown = sorted(set(raw) - _TASK_FIELDS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], _TASK_FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TaskError(f"{where(unknown[0])}: unknown field {unknown[0]!r}{hint}; "
                        f"expected one of: {', '.join(sorted(_TASK_FIELDS))}")
    metadata = raw.get("metadata")
    if isinstance(metadata, dict):
        metadata = dict(metadata)
        arena_metrics = metadata.pop("arena_metric_list", None)
        if arena_metrics is not None:
            # Written by export_lm_eval: the full list, including metrics lm-eval lacks.
            raw["metric_list"] = arena_metrics
        arena_chat = metadata.pop("arena_chat", None)
        if isinstance(arena_chat, dict):
            # Written by export_lm_eval: lm-eval takes these as command-line flags, not task keys.
            raw.update({k: v for k, v in arena_chat.items() if k in _CHAT_FIELDS and k not in raw})
        version = metadata.pop("version", 1.0)
        raw["metadata"] = {"version": version, "extra": metadata}
    generation = raw.get("generation_kwargs")
    if isinstance(generation, dict) and "max_new_tokens" in generation:
        # Hugging Face's name for lm-eval's max_gen_toks: what users write from habit.
        generation = dict(generation)
        value = generation.pop("max_new_tokens")
        if "max_gen_toks" in generation and generation["max_gen_toks"] != value:
            raise TaskError(f"{where('generation_kwargs')}: max_new_tokens={value!r} and max_gen_toks="
                            f"{generation['max_gen_toks']!r} disagree; give one (max_gen_toks is lm-eval's name)")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TaskError(f"{where('generation_kwargs')}: max_new_tokens={value!r}: expected an integer >= 1")
        generation["max_gen_toks"] = value
        raw["generation_kwargs"] = generation
    metric_list = raw.get("metric_list")
    if isinstance(metric_list, list):
        entries = []
        for i, entry in enumerate(metric_list):
            if isinstance(entry, str):
                entry = {"metric": entry}
            if not isinstance(entry, dict) or "metric" not in entry:
                raise TaskError(f"{where('metric_list')}: metric_list[{i}]: expected a mapping with a 'metric' key, "
                                f"got {entry!r}")
            known = {k: entry[k] for k in ("metric", "aggregation", "higher_is_better") if k in entry}
            kwargs = {k: v for k, v in entry.items() if k not in known and k != "kwargs"}
            kwargs.update(entry.get("kwargs") or {})
            entries.append({**known, "kwargs": kwargs})
        raw["metric_list"] = entries
    dataset = raw.get("dataset")
    if isinstance(dataset, str) and dataset and not is_registered_dataset(dataset) and not os.path.isabs(dataset):
        raw["dataset"] = str((base_dir / dataset).resolve())
    return raw


def load_task(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TaskConfig:
    """Read a task YAML file (ours or lm-eval's spelling, with lm-eval's `include:`).

    `overrides` replace fields before anything is checked (lm-eval's run flags such as
    `apply_chat_template`). A relative `dataset` path is resolved against the file's
    folder. Raises `TaskError` naming the file, the line and field, and what was
    expected, for invalid YAML, an unknown field, a template syntax error, an unknown
    metric or a bad value."""
    path = Path(path)
    raw, lines = _read_yaml(path)
    include = raw.pop("include", None)
    if include is not None:
        base, _ = _read_yaml(path.parent / str(include))
        base.pop("include", None)
        raw = {**base, **raw}
    raw.update(overrides or {})

    def where(field: str) -> str:
        top = field.split(".")[0].split("[")[0]
        return f"{path}:{lines[top]}: field '{field}'" if top in lines else f"{path}: field '{field}'"

    raw = _normalise_raw(raw, path.parent, where)
    try:
        return msgspec.convert(raw, TaskConfig)
    except msgspec.ValidationError as exc:
        cause = exc.__cause__
        if isinstance(cause, TaskError):
            field = re.match(r"field '([^']+)'", str(cause))
            message = str(cause).split(": ", 1)[1] if field else str(cause)
            raise TaskError(f"{where(field.group(1)) if field else path}: {message}") from None
        match = re.match(r"(.*) - at `\$\.?(.*)`$", str(exc))
        if match:
            field, message = match.group(2), match.group(1)
            if field == "output_type":
                message += f"; expected one of: {', '.join(OUTPUT_TYPES)}"
            raise TaskError(f"{where(field)}: {message}") from None
        raise TaskError(f"{path}: {exc}") from None


def load_docs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Documents of a JSONL file, one JSON object per non-blank line; a bad line raises
    `TaskError` naming file and line."""
    path = Path(path)
    docs = []
    for number, line in enumerate(_read_text(path, "dataset").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            check_depth(line)
            doc = json.loads(line)
        except TooDeep as exc:
            raise TaskError(f"{path}:{number}: nested deeper than {exc.limit} levels") from None
        except json.JSONDecodeError as exc:
            raise TaskError(f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        except ValueError:  # the other error json.loads raises: a number past Python's digit limit
            raise TaskError(f"{path}: {long_number(line, number)}") from None
        if not isinstance(doc, dict):
            raise TaskError(f"{path}:{number}: expected a JSON object, got {type(doc).__name__}")
        if SURROGATE_ESCAPE.search(line) and (problem := lone_surrogate(doc)):
            raise TaskError(f"{path}:{number}: {problem}")
        docs.append(doc)
    return docs


def load_task_docs(
    task: TaskConfig, resolve: Callable[[str], list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """The task's documents: read from its JSONL path, or from `resolve(dataset)` for a
    `name@version:split` reference (the service passes its dataset registry)."""
    if is_registered_dataset(task.dataset):
        if resolve is None:
            raise TaskError(f"task {task.task}: dataset {task.dataset!r} is a registered dataset reference, "
                            "but no resolver was given")
        return resolve(task.dataset)
    return load_docs(task.dataset)


