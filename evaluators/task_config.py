"""Benchmark task files: the YAML close to lm-evaluation-harness, its validation and loading.

A task names its dataset (a JSONL path, or `name@version:split` of a dataset registered
with the service — resolved by a callback the caller passes), how a document becomes a
prompt and a target (Jinja templates over the document's fields, rendered the way lm-eval
renders them), what kind of model output it scores, and which metrics.

    task: capitals
    dataset: data/capitals.jsonl
    output_type: generate_until
    doc_to_text: "Q: What is the capital of {{country}}?\\nA:"
    doc_to_target: "{{capital}}"
    generation_kwargs: {until: ["\\n"], max_gen_toks: 16}
    metric_list:
      - {metric: exact_match, ignore_case: true, strip: true}
    metadata: {version: 1.0}

`load_task` also reads lm-eval's own spelling of a local JSON dataset (`dataset_path: json`
+ `dataset_kwargs.data_files` + `test_split`), which is what `export_lm_eval` writes.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import msgspec
import yaml

from evaluators import safe_regex
from evaluators.bounded_json import SURROGATE_ESCAPE, TooDeep, TooMany, check_depth, lone_surrogate, long_number, safe_yaml
from evaluators.encodings import not_utf8
from evaluators.metrics import AGGREGATIONS, DEFAULT_METRICS, METRICS, OUTPUT_TYPES, OutputType, metrics_for
from evaluators.task_templates import _compile


class TaskError(ValueError):
    """A task file or a document that cannot be used; the message names the file, the
    field (or document) and what was expected."""


# --- configuration -----------------------------------------------------------------------


class MetricConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """One `metric_list` entry; `kwargs` are the metric's options (e.g. `ignore_case`)."""

    metric: str
    aggregation: str | None = None
    higher_is_better: bool | None = None
    kwargs: dict[str, Any] = {}


class GenerationKwargs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How `generate_until` samples: stop strings, token budget, greedy unless `do_sample`."""

    until: list[str] = []
    max_gen_toks: int = 256
    temperature: float = 0.0
    do_sample: bool = False


class TaskMetadata(msgspec.Struct, frozen=True):
    """`version` goes into results' `versions`; `extra` keeps any other metadata keys."""

    version: float | int | str = 1.0
    extra: dict[str, Any] = {}


class TaskConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A benchmark task. Construct through `load_task` or directly: invalid values raise
    `TaskError` naming the field either way.

    Templates see the document's fields as variables. As in lm-eval, a template that is
    exactly a field name yields that field's value (so `doc_to_target: label` gives an
    int, `doc_to_choice: choices` a list). `loglikelihood_rolling` scores `doc_to_target`.

    Chat tasks, with lm-eval's meaning of its `--apply_chat_template`,
    `--system_instruction` and `--fewshot_as_multiturn`: with `apply_chat_template`,
    `doc_to_text` is the user turn, and the conversation is rendered with each
    candidate's own chat template (its base's, or the plain `User:…</s>` format); the
    system turn is `system_instruction` then `description`; few-shot examples go into the
    user turn, or each into a user/assistant exchange of its own with
    `fewshot_as_multiturn`. `doc_to_history` (ours, not lm-eval's) names a document field
    holding earlier turns, `[{"role", "content"}, …]`, put before the user turn: how a
    multi-turn record is asked as it was trained.
    """

    task: str
    dataset: str
    doc_to_target: str | int | list[str]
    doc_to_text: str = ""
    doc_to_choice: str | list[str] | None = None
    output_type: OutputType = "generate_until"
    metric_list: list[MetricConfig] = []
    generation_kwargs: GenerationKwargs = GenerationKwargs()
    num_fewshot: int = 0
    fewshot_delimiter: str = "\n\n"
    target_delimiter: str = " "
    description: str = ""
    metadata: TaskMetadata = TaskMetadata()
    apply_chat_template: bool = False
    system_instruction: str = ""
    fewshot_as_multiturn: bool = False
    doc_to_history: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def metrics(self) -> list[MetricConfig]:
        """`metric_list`, or lm-eval's defaults for the output type when it is empty."""
        return self.metric_list or [MetricConfig(m) for m in DEFAULT_METRICS[self.output_type]]


_TASK_FIELDS = set(TaskConfig.__struct_fields__)
#: Our chat fields: lm-eval has them as run flags, so an lm-eval export keeps them in metadata.
_CHAT_FIELDS = ("apply_chat_template", "system_instruction", "fewshot_as_multiturn", "doc_to_history")
# lm-eval keys we accept and drop: they do not change what is computed here.
_LM_EVAL_IGNORED = {"task_alias", "tag", "group", "should_decontaminate", "doc_to_decontamination_query",
                    "dataset_name", "training_split", "validation_split", "fewshot_split", "output_path"}
_LM_EVAL_DATASET_KEYS = {"dataset_path", "dataset_kwargs", "test_split"}
# lm-eval keys that would change what is computed, and that we do not implement.
_LM_EVAL_UNSUPPORTED = {"filter_list", "process_docs", "process_results", "fewshot_config", "gen_prefix",
                        "doc_to_image", "doc_to_audio", "unsafe_code", "multiple_inputs", "multiple_targets",
                        "scorer", "use_prompt"}
_REGISTERED_DATASET = re.compile(r"^[\w.\-]+@[\w.\-]+:[\w.\-]+$")


def is_registered_dataset(dataset: str) -> bool:
    """True for a `name@version:split` reference, False for a file path."""
    return bool(_REGISTERED_DATASET.match(dataset)) and not dataset.endswith((".jsonl", ".json"))


def _validate(task: TaskConfig) -> None:
    if not task.task or not re.fullmatch(r"[\w.\-]+", task.task):
        raise TaskError(f"field 'task': expected a name of letters, digits, '_', '-', '.', got {task.task!r}")
    if not task.dataset:
        raise TaskError("field 'dataset': expected a JSONL path or 'name@version:split', got ''")
    if task.num_fewshot < 0:
        raise TaskError(f"field 'num_fewshot': expected >= 0, got {task.num_fewshot}")
    if task.fewshot_as_multiturn and not task.apply_chat_template:
        raise TaskError("field 'fewshot_as_multiturn': needs apply_chat_template: true (as in lm-eval)")
    if task.doc_to_history is not None and not task.apply_chat_template:
        raise TaskError("field 'doc_to_history': earlier turns need apply_chat_template: true")
    if task.apply_chat_template and task.output_type == "loglikelihood_rolling":
        raise TaskError("field 'apply_chat_template': loglikelihood_rolling scores a whole text, which has no "
                        "chat turns; use it with generate_until or multiple_choice")
    if task.generation_kwargs.max_gen_toks < 1:
        raise TaskError(f"field 'generation_kwargs.max_gen_toks': expected >= 1, "
                        f"got {task.generation_kwargs.max_gen_toks}")
    if task.output_type == "multiple_choice" and task.doc_to_choice is None:
        raise TaskError("field 'doc_to_choice': required when output_type is multiple_choice")
    for field in ("doc_to_text", "doc_to_target", "doc_to_choice", "description"):
        value = getattr(task, field)
        for i, template in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(template, str):
                where = f"{field}[{i}]" if isinstance(value, list) else field
                try:
                    _compile(template)
                except jinja2.TemplateSyntaxError as exc:
                    raise TaskError(f"field '{where}': template syntax error at template line {exc.lineno}: "
                                    f"{exc.message}") from None
    for i, m in enumerate(task.metric_list):
        where = f"metric_list[{i}]"
        if m.metric not in METRICS:
            close = difflib.get_close_matches(m.metric, METRICS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TaskError(f"field '{where}.metric': unknown metric {m.metric!r}{hint}; "
                            f"metrics for {task.output_type}: {', '.join(metrics_for(task.output_type))}")
        spec = METRICS[m.metric]
        if spec.output_type != task.output_type:
            raise TaskError(f"field '{where}.metric': {m.metric!r} scores {spec.output_type} outputs, not "
                            f"{task.output_type}; use one of: {', '.join(metrics_for(task.output_type))}")
        if m.aggregation is not None and m.aggregation not in AGGREGATIONS:
            raise TaskError(f"field '{where}.aggregation': unknown aggregation {m.aggregation!r}; "
                            f"expected one of: {', '.join(sorted(AGGREGATIONS))}")
        unknown = set(m.kwargs) - spec.options
        if unknown:
            raise TaskError(f"field '{where}.{sorted(unknown)[0]}': not an option of {m.metric!r}; "
                            f"options: {', '.join(sorted(spec.options)) or '(none)'}")
        for option, value in m.kwargs.items():
            problem = _option_problem(spec.score, option, value)
            if problem:
                raise TaskError(f"field '{where}.{option}': {problem}")
    names = [m.metric for m in task.metric_list]
    if len(set(names)) != len(names):
        twice = sorted(n for n in names if names.count(n) > 1)[0]
        raise TaskError(f"field 'metric_list': metric listed twice: {twice!r}")


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


def _option_problem(score: Callable[..., float], option: str, value: Any) -> str | None:
    """What is wrong with a metric option's value, by the type of the metric's keyword
    (booleans, numbers, lists of regular expressions), or None: a wrong value fails here,
    when the task is loaded, not at the end of an eval."""
    import typing

    default = inspect.signature(score).parameters[option].default
    expected = typing.get_type_hints(score).get(option)
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {value!r}"
    if typing.get_origin(expected) in (list, tuple, typing.Sequence, collections.abc.Sequence):
        if not isinstance(value, list):
            return f"expected a list, got {type(value).__name__} {value!r:.60}"
        if option.startswith("regex"):
            return next((p for p in map(safe_regex.check_pattern, value) if p), None)
        return None if all(isinstance(v, str) for v in value) else "expected a list of strings"
    return None


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


