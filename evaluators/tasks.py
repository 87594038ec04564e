"""Benchmark tasks: YAML files close to lm-evaluation-harness, and the requests they make.

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

import ast
import difflib
import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import msgspec
import yaml

from evaluators.metrics import AGGREGATIONS, DEFAULT_METRICS, METRICS, OUTPUT_TYPES, OutputType, metrics_for
from evaluators.records import EOS, TURN_SEP, USER_PREFIX, Conversation, render_plain


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

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def metrics(self) -> list[MetricConfig]:
        """`metric_list`, or lm-eval's defaults for the output type when it is empty."""
        return self.metric_list or [MetricConfig(m) for m in DEFAULT_METRICS[self.output_type]]


_TASK_FIELDS = set(TaskConfig.__struct_fields__)
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
    names = [m.metric for m in task.metric_list]
    if len(set(names)) != len(names):
        twice = sorted(n for n in names if names.count(n) > 1)[0]
        raise TaskError(f"field 'metric_list': metric listed twice: {twice!r}")


# --- loading -----------------------------------------------------------------------------


def _key_lines(text: str) -> dict[str, int]:
    # Line (1-based) of each top-level key, so errors can point into the file.
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskError(f"{path}: cannot read task file: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
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
        version = metadata.pop("version", 1.0)
        raw["metadata"] = {"version": version, "extra": metadata}
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


def load_task(path: str | os.PathLike) -> TaskConfig:
    """Read a task YAML file (ours or lm-eval's spelling, with lm-eval's `include:`).

    A relative `dataset` path is resolved against the file's folder. Raises `TaskError`
    naming the file, the line and field, and what was expected, for invalid YAML, an
    unknown field, a template syntax error, an unknown metric or a bad value."""
    path = Path(path)
    raw, lines = _read_yaml(path)
    include = raw.pop("include", None)
    if include is not None:
        base, _ = _read_yaml(path.parent / str(include))
        base.pop("include", None)
        raw = {**base, **raw}

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
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise TaskError(f"{path}: cannot read dataset: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(doc, dict):
                raise TaskError(f"{path}:{number}: expected a JSON object, got {type(doc).__name__}")
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


# --- rendering ---------------------------------------------------------------------------


def _regex_replace(text: str, pattern: str, replacement: str = "", count: int = 0) -> str:
    return re.sub(pattern, replacement, text, count=count)


_ENV = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_ENV.filters["regex_replace"] = _regex_replace


@lru_cache(maxsize=512)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def render(template: str, doc: dict[str, Any]) -> str:
    """Render a Jinja template with the document's fields as variables (undefined
    variables are errors, not empty strings)."""
    return _compile(template).render(**doc)


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


def _fewshot_block(task: TaskConfig, doc_key: str, pool: Sequence[tuple[str, dict[str, Any]]]) -> str:
    # Sorted by hash, so the choice does not depend on the order of the dataset.
    candidates = [d for h, d in sorted(pool, key=lambda item: item[0]) if h != doc_key]
    if len(candidates) < task.num_fewshot:
        raise TaskError(f"task {task.task}: num_fewshot is {task.num_fewshot} but only {len(candidates)} "
                        "other documents can serve as examples")
    # Seeded by the document itself: the same doc gets the same examples whatever the
    # order of the dataset or the `limit` of the run.
    rng = random.Random(f"fewshot:{doc_key}")
    shots = rng.sample(candidates, task.num_fewshot)
    parts = [doc_to_text(task, s) + task.target_delimiter + _references(task, s)[0] for s in shots]
    return task.fewshot_delimiter.join(parts) + task.fewshot_delimiter


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
    prompt = render(task.description, doc) if task.description else ""
    if task.num_fewshot:
        prompt += _fewshot_block(task, key, pool)
    prompt += doc_to_text(task, doc)
    if task.output_type == "generate_until":
        return Request(doc_id, key, task.output_type, prompt, _references(task, doc), doc=doc)
    choices = doc_to_choice(task, doc)
    if not choices:
        raise TaskError("field 'doc_to_choice': the document has no choices")
    gold = _gold_indices(doc_to_target(task, doc), choices)
    return Request(doc_id, key, task.output_type, prompt, tuple(choices[i] for i in gold), tuple(choices),
                   tuple(task.target_delimiter + c for c in choices), gold, doc=doc)


# --- lm-eval export and tasks from records -----------------------------------------------


class LmEvalExport(msgspec.Struct, frozen=True):
    """Files written by `export_lm_eval`; `dropped_metrics` are ours that lm-eval lacks
    (kept in `metadata.arena_metric_list` so reloading the YAML restores them)."""

    yaml_path: str
    data_path: str
    dropped_metrics: list[str]


def lm_eval_config(task: TaskConfig, data_path: str) -> tuple[dict[str, Any], list[str]]:
    """The task as an lm-eval YAML mapping reading `data_path`, and the dropped metrics."""
    kept, dropped = [], []
    for m in task.metrics:
        (kept if METRICS[m.metric].in_lm_eval else dropped).append(m)
    if not kept:
        kept = [MetricConfig(DEFAULT_METRICS[task.output_type][0])]

    def entry(m: MetricConfig) -> dict[str, Any]:
        spec = METRICS[m.metric]
        return {"metric": m.metric, "aggregation": m.aggregation or spec.aggregation,
                "higher_is_better": spec.higher_is_better if m.higher_is_better is None else m.higher_is_better,
                **m.kwargs}

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
    if dropped:
        config["metadata"]["arena_metric_list"] = [
            {"metric": m.metric, **{k: v for k, v in (("aggregation", m.aggregation),
                                                      ("higher_is_better", m.higher_is_better)) if v is not None},
             **m.kwargs}
            for m in task.metrics]
    return config, [m.metric for m in dropped]


class _TaskDumper(yaml.SafeDumper):
    """Strings with line breaks as double-quoted scalars ("Q: {{q}}\\nA:"), the way task
    files are written by hand; plain YAML folding would turn them into blank lines."""


_TaskDumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style='"' if "\n" in s else None))


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
    yaml_path.write_text(yaml.dump(config, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True, width=1000),
                         encoding="utf-8")
    return LmEvalExport(str(yaml_path), str(data_path), dropped)


def task_from_records(
    name: str,
    records: Sequence[Conversation],
    *,
    dataset: str | None = None,
    metric_list: Sequence[str] = ("exact_match", "token_f1", "rouge_l"),
    max_gen_toks: int = 256,
    render_prompt: Callable[[Conversation], str] | None = None,
) -> tuple[TaskConfig, list[dict[str, Any]]]:
    """A generate_until task over conversations: prompt = the turns before the final
    answer, rendered (default: the plain `User:…</s>` format with `Assistant:` appended),
    target = the final answer. Returns the task and its documents ({"prompt", "answer"});
    the caller stores the documents where `dataset` (default `<name>.jsonl`) says.
    Records without an answer raise `TaskError`."""
    render_prompt = render_prompt or (
        lambda c: render_plain(Conversation(messages=c.prompt_messages), add_generation_prompt=True))
    docs = []
    for i, record in enumerate(records):
        if not record.answer:
            raise TaskError(f"task {name}: record {i} has no final assistant answer to use as the target")
        docs.append({"prompt": render_prompt(record), "answer": record.answer})
    task = TaskConfig(
        task=name,
        dataset=dataset or f"{name}.jsonl",
        doc_to_text="{{prompt}}",
        doc_to_target="{{answer}}",
        output_type="generate_until",
        metric_list=[MetricConfig(m) for m in metric_list],
        generation_kwargs=GenerationKwargs(until=[EOS, TURN_SEP + USER_PREFIX], max_gen_toks=max_gen_toks),
    )
    return task, docs


__all__ = [
    "GenerationKwargs", "LmEvalExport", "MetricConfig", "Request",
    "TaskConfig", "TaskError", "TaskMetadata", "build_requests", "doc_hash", "doc_to_choice", "doc_to_target",
    "doc_to_text", "export_lm_eval", "is_registered_dataset", "lm_eval_config", "load_docs", "load_task",
    "load_task_docs", "render", "task_from_records",
]
