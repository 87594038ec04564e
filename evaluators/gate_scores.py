"""The per-sample scores the regression gate (`evaluators.regression`) compares: from a
runner result (`scores_from_result`) or an lm-eval output directory written with
`--log_samples` (`load_lm_eval_results`), keyed by `doc_hash` so that both runs join item
by item."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from evaluators.metrics import METRICS

if TYPE_CHECKING:
    from evaluators.runner import EvalResult


# --- per-sample scores -------------------------------------------------------------------


class MetricScores(msgspec.Struct, frozen=True):
    """One metric's per-sample values keyed by doc hash (the k-th repeat of a hash within
    a run is keyed `<hash>#k`); `weights` is empty when every weight is 1."""

    metric: str
    higher_is_better: bool
    aggregation: str
    values: dict[str, float]
    weights: dict[str, float] = {}


class TaskScores(msgspec.Struct, frozen=True):
    """Per-sample scores of one task's run; `primary_metric` is the one gated by default."""

    task: str
    metrics: dict[str, MetricScores]
    primary_metric: str
    #: How lm-eval asked the prompts, from its results file (`apply_chat_template`,
    #: `system_instruction`); None when not known (our runs, lm-eval versions before 0.4.3).
    asked: dict[str, Any] | None = None


def _item_keys(hashes: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for h in hashes:
        k = seen.get(h, 0)
        seen[h] = k + 1
        keys.append(h if k == 0 else f"{h}#{k}")
    return keys


def scores_from_result(result: EvalResult) -> TaskScores:
    """The per-sample scores of a runner result, ready for `compare`."""
    keys = _item_keys([s.doc_hash for s in result.samples])
    metrics = {}
    for name, m in result.metrics.items():
        values = {k: s.scores[name] for k, s in zip(keys, result.samples)}
        weights = {k: s.weights[name] for k, s in zip(keys, result.samples) if name in s.weights}
        metrics[name] = MetricScores(name, m.higher_is_better, m.aggregation, values, weights)
    return TaskScores(result.task, metrics, next(iter(result.metrics)))


# --- reading lm-eval output --------------------------------------------------------------

_STAMP = re.compile(r"_(\d{4}-\d\d-\d\dT[\d\-.]+)\.jsonl?$")
_ROW_FIELDS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics", "doc_hash",
               "prompt_hash", "target_hash", "task", "task_name", "candidate", "prompt", "response", "gold"}


def _stamp(path: Path) -> str:
    match = _STAMP.search(path.name)
    return match.group(1) if match else ""


def _sample_value(value: Any) -> tuple[float, float] | None:
    if isinstance(value, bool):
        return float(value), 1.0
    if isinstance(value, (int, float)):
        return float(value), 1.0
    if isinstance(value, list) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value):
        return float(value[0]), float(value[1])
    return None


def load_lm_eval_results(path: str | os.PathLike, filter_name: str | None = None) -> dict[str, TaskScores]:
    """Per-sample scores of every task in an lm-eval output directory (searched
    recursively for `results_*.json` and `samples_<task>_*.jsonl`; the newest file per
    task wins), keyed by task. Runs written by `EvalResult.write` read the same way.

    Rows with several filters: `filter_name`, else the only one, else "none". Metrics
    logged as [value, weight] pairs need a known aggregation (lm-eval's perplexities and
    bits per byte); others of that form are skipped. Raises ValueError naming the file
    when no samples are found or a line is not JSON."""
    root = Path(path)
    if not root.exists():
        raise ValueError(f"{root}: no such lm-eval output directory or results file")
    results_files = sorted(root.rglob("results_*.json"), key=_stamp) if root.is_dir() else [root]
    sample_files = sorted((root if root.is_dir() else root.parent).rglob("samples_*.jsonl"), key=_stamp)
    if not sample_files:
        raise ValueError(f"{root}: no samples_<task>_<date>.jsonl files (run lm_eval with --log_samples)")
    higher: dict[str, dict[str, bool]] = {}
    order: dict[str, list[str]] = {}
    asked: dict[str, dict[str, Any]] = {}
    for file in results_files:
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{file}: not a readable lm-eval results file: {exc}") from None
        for task, entry in (doc.get("results") or {}).items():
            order[task] = [k.split(",")[0] for k in entry if "," in k and "_stderr," not in k]
            higher[task] = {**higher.get(task, {}), **(doc.get("higher_is_better") or {}).get(task, {})}
            if "chat_template" in doc:  # the run's chat options (its flags, not the task's YAML)
                asked[task] = {"apply_chat_template": bool(doc.get("chat_template")),
                               "system_instruction": doc.get("system_instruction") or ""}
    latest: dict[str, Path] = {}
    for file in sample_files:  # sorted by date: later files replace earlier ones
        task = file.name[len("samples_"):file.name.rfind("_")]
        latest[task] = file
    return {task: msgspec.structs.replace(_read_samples(task, file, filter_name, higher.get(task, {}), order.get(task, [])),
                                          asked=asked.get(task))
            for task, file in latest.items()}


def _read_samples(task: str, file: Path, filter_name: str | None, higher: dict[str, bool],
                  order: list[str]) -> TaskScores:
    rows = []
    with file.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{file}:{number}: invalid JSON: {exc.msg}") from None
    filters = sorted({r.get("filter", "none") for r in rows})
    chosen = filter_name or (filters[0] if len(filters) == 1 else "none")
    if chosen not in filters:
        raise ValueError(f"{file}: filter {chosen!r} not found; filters in file: {', '.join(filters)}")
    rows = sorted((r for r in rows if r.get("filter", "none") == chosen), key=lambda r: r.get("doc_id", 0))
    keys = _item_keys([str(r["doc_hash"]) for r in rows])
    names = list(dict.fromkeys(n for r in rows for n in (r.get("metrics") or [k for k in r if k not in _ROW_FIELDS])))
    metrics = {}
    for name in names:
        values, weights = {}, {}
        for key, row in zip(keys, rows):
            parsed = _sample_value(row.get(name))
            if parsed is not None:
                values[key] = parsed[0]
                if parsed[1] != 1.0 or isinstance(row.get(name), list):
                    weights[key] = parsed[1]
        known = METRICS.get(name)
        if not values or (weights and known is None):
            continue
        aggregation = known.aggregation if known else "mean"
        hib = higher.get(name, known.higher_is_better if known else True)
        metrics[name] = MetricScores(name, bool(hib), aggregation, values, weights)
    if not metrics:
        raise ValueError(f"{file}: no per-sample metric values found")
    primary = next((m for m in order if m in metrics), next(iter(metrics)))
    return TaskScores(task, metrics, primary)
