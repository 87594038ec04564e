"""Benchmark task files: the YAML close to lm-evaluation-harness, and its validation (reading
the files is `evaluators.task_files`).

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
import re
from collections.abc import Callable
from typing import Any

import jinja2
import msgspec

from evaluators import safe_regex
from evaluators.metrics import AGGREGATIONS, DEFAULT_METRICS, METRICS, OutputType, metrics_for
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
