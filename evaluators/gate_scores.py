"""The per-sample scores the regression gate (`evaluators.regression`) compares: from a
runner result (`scores_from_result`) or an lm-eval output directory written with
`--log_samples` (`load_lm_eval_results`), keyed by the document's content (`doc_key`) so
that both runs join item by item."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
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
    #: Per item: sha256 of the prompt the model was given (lm-eval's `prompt_hash`) and its
    #: first characters; empty where the run did not log them.
    prompts: dict[str, tuple[str, str]] = {}


# What pyarrow's JSON reader parses as a timestamp (ISO 8601: a date, then optionally an
# hour, minutes and seconds after "T" or " ", and a "Z" or +hh[[:]mm] offset once a time is there).
_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2})(?::(\d{2})(?::(\d{2}))?)?"
                        r"(Z|([+-])(\d{2})(?::?(\d{2}))?)?)?")


def _timestamp(text: str) -> str:
    """`text` as lm-eval logs it when HF datasets read it as a timestamp (`str(datetime)`,
    in UTC: "2024-01-05T10:00+02:00" -> "2024-01-05 08:00:00"); other text as it is."""
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        return text
    y, mo, d, h, mi, s, _, sign, oh, om = m.groups()
    try:
        at = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
        if sign:
            at -= (1 if sign == "+" else -1) * timedelta(hours=int(oh), minutes=int(om or 0))
    except (ValueError, OverflowError):
        return text
    return str(at)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return _timestamp(value)
    return value


def doc_key(doc: Any) -> str:
    """A document's identity for pairing items across runs: its content, as HF `datasets`
    leaves it. lm-eval reads an exported task through `datasets`, which makes the
    documents one table: a key missing from one document becomes null there, and a
    column mixing ints and floats becomes floats, and a column of ISO-8601 date strings
    becomes timestamps (logged as "2024-01-05 00:00:00"). lm-eval's `doc_hash` hashes that
    form, so it differs from ours for such documents (5 of a 25-item task paired); this key
    drops null members, writes integral floats as ints, date strings as lm-eval logs
    timestamps, and sorts keys, so both forms agree."""
    text = json.dumps(_canonical(doc), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    keys = _item_keys([doc_key(s.doc) for s in result.samples])
    metrics = {}
    for name, m in result.metrics.items():
        values = {k: s.scores[name] for k, s in zip(keys, result.samples)}
        weights = {k: s.weights[name] for k, s in zip(keys, result.samples) if name in s.weights}
        metrics[name] = MetricScores(name, m.higher_is_better, m.aggregation, values, weights)
    from evaluators.runner import text_hash

    prompts = {k: (text_hash(s.prompt), s.prompt[:_EXCERPT]) for k, s in zip(keys, result.samples)}
    return TaskScores(result.task, metrics, next(iter(result.metrics)), prompts=prompts)


def other_prompts(baseline: TaskScores, candidate: TaskScores) -> list[tuple[str, str, str]]:
    """Items both runs logged whose prompts differ: (key, the baseline's prompt, the
    candidate's), excerpts. Empty when the runs asked the same prompts, or did not say."""
    return [(k, baseline.prompts[k][1], text) for k, (digest, text) in candidate.prompts.items()
            if k in baseline.prompts and baseline.prompts[k][0] != digest]


# --- reading lm-eval output --------------------------------------------------------------

_EXCERPT = 160
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
    """Per-sample scores of every task in ONE model's lm-eval output: the folder lm-eval
    wrote for it (`<output_path>/<model>/`, holding `results_<date>.json` and
    `samples_<task>_<date>.jsonl`), a folder above it holding only that one, or a results
    file. The newest run per task wins. Runs written by `EvalResult.write` read the same way.

    A folder holding several models' runs is refused (ValueError naming them): lm-eval
    writes each model into its own sub-folder, and taking the newest would gate a
    candidate against itself when a CI job writes both runs under one path.

    Rows with several filters: `filter_name`, else the only one, else "none". Metrics
    logged as [value, weight] pairs need a known aggregation (lm-eval's perplexities and
    bits per byte); others of that form are skipped. Output of another shape raises
    ValueError naming the file (and line)."""
    root = Path(path)
    if not root.exists():
        raise ValueError(f"{root}: no such lm-eval output directory or results file")
    folder = root if root.is_dir() else root.parent
    sample_files = sorted(folder.rglob("samples_*.jsonl") if root.is_dir() else folder.glob("samples_*.jsonl"),
                          key=_stamp)
    if not sample_files:
        raise ValueError(f"{root}: no samples_<task>_<date>.jsonl files (run lm_eval with --log_samples)")
    folders = sorted({str(f.parent) for f in sample_files})
    if len(folders) > 1:
        raise ValueError(f"{root} holds the runs of {len(folders)} models ({', '.join(folders)}): "
                         f"pass the folder of the one to compare")
    run = Path(folders[0])
    results = {file: _results_doc(file) for file in ([root] if root.is_file() else sorted(run.glob("results_*.json"),
                                                                                           key=_stamp))}
    latest: dict[str, Path] = {}
    for file in sample_files:  # sorted by date: later files replace earlier ones
        latest[file.name[len("samples_"):file.name.rfind("_")]] = file
    out = {}
    for task, file in latest.items():
        doc = _results_for(task, file, results)
        entry = doc.get("results", {}).get(task, {}) if doc else {}
        higher = (doc.get("higher_is_better") or {}).get(task, {}) if doc else {}
        order = [k.split(",")[0] for k in entry if "," in k and "_stderr," not in k]
        asked = None
        if doc and "chat_template" in doc:  # the run's chat options (its flags, not the task's YAML)
            asked = {"apply_chat_template": bool(doc.get("chat_template")),
                     "system_instruction": doc.get("system_instruction") or ""}
        scores = _read_samples(task, file, filter_name, higher if isinstance(higher, dict) else {}, order)
        out[task] = msgspec.structs.replace(scores, asked=asked)
    return out


def _results_doc(file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{file}: not a readable lm-eval results file: {exc}") from None
    # Each of these is an object or absent; null counts as absent (an empty list, false or
    # "" is another shape, not an empty object: `.values()` on it is a traceback, exit 1).
    shape = ("results", "higher_is_better", "config")
    if not isinstance(doc, dict) or any(doc.get(k) is not None and not isinstance(doc[k], dict) for k in shape):
        raise ValueError(f"{file}: not an lm-eval results file (expected an object with a 'results' object)")
    doc = {**doc, **{k: {} for k in shape if doc.get(k) is None}}
    if any(not isinstance(v, dict) for v in doc.get("results", {}).values()):
        raise ValueError(f"{file}: not an lm-eval results file ('results' maps each task to an object)")
    return doc


def _results_for(task: str, samples: Path, results: dict[Path, dict[str, Any]]) -> dict[str, Any] | None:
    """The results document of the run that wrote `samples` (lm-eval stamps both files
    alike), else the newest that reports `task`. A folder where different models ran
    the task is refused: its newest samples may belong to either."""
    having = {f: d for f, d in results.items() if task in (d.get("results") or {})}
    models = {json.dumps((d.get("config") or {}).get("model_args"), sort_keys=True, default=str)
              for d in having.values()}
    if len(models) > 1:
        raise ValueError(f"{samples.parent}: runs of task {task} by {len(models)} different models "
                         f"(config.model_args differ across {', '.join(f.name for f in having)}); "
                         f"keep one model's runs in the folder")
    same = [d for f, d in having.items() if _stamp(f) == _stamp(samples)]
    return same[0] if same else (list(having.values())[-1] if having else None)


def _read_samples(task: str, file: Path, filter_name: str | None, higher: dict[str, bool],
                  order: list[str]) -> TaskScores:
    rows = []
    try:
        with file.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{file}:{number}: invalid JSON: {exc.msg}") from None
                except RecursionError:
                    raise ValueError(f"{file}:{number}: nested too deeply to be an lm-eval sample") from None
                if not isinstance(row, dict) or not (isinstance(row.get("doc"), dict) or "doc_hash" in row):
                    raise ValueError(f"{file}:{number}: not an lm-eval sample (expected an object with "
                                     f"'doc' or 'doc_hash')")
                if not isinstance(row.get("filter", "none"), str):
                    raise ValueError(f"{file}:{number}: 'filter' is not a string")
                rows.append(row)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: cannot read: {exc}") from None
    filters = sorted({r.get("filter", "none") for r in rows})
    chosen = filter_name or (filters[0] if len(filters) == 1 else "none")
    if chosen not in filters:
        raise ValueError(f"{file}: filter {chosen!r} not found; filters in file: {', '.join(filters) or 'none'}")
    rows = sorted((r for r in rows if r.get("filter", "none") == chosen),
                  key=lambda r: r["doc_id"] if isinstance(r.get("doc_id"), int) else 0)
    try:
        keys = _item_keys([doc_key(r["doc"]) if isinstance(r.get("doc"), dict) else str(r["doc_hash"]) for r in rows])
    except RecursionError:
        raise ValueError(f"{file}: a document nested too deeply to be an lm-eval sample's") from None
    listed = [r["metrics"] if isinstance(r.get("metrics"), list) else [k for k in r if k not in _ROW_FIELDS]
              for r in rows]
    names = list(dict.fromkeys(n for names in listed for n in names if isinstance(n, str)))
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
    prompts = {key: (row["prompt_hash"], _row_prompt(row)[:_EXCERPT]) for key, row in zip(keys, rows)
               if isinstance(row.get("prompt_hash"), str)}
    return TaskScores(task, metrics, primary, prompts=prompts)


def _row_prompt(row: dict[str, Any]) -> str:
    """The prompt of a sample row: ours (`prompt`), else the first request's context, in
    lm-eval's file shape (`arguments.gen_args_0.arg_0`) or its in-memory one."""
    if isinstance(row.get("prompt"), str):
        return row["prompt"]
    args = row.get("arguments")
    first = args.get("gen_args_0") if isinstance(args, dict) else None
    if isinstance(first, dict) and isinstance(first.get("arg_0"), str):
        return first["arg_0"]
    if isinstance(args, list) and args and isinstance(args[0], list) and args[0] and isinstance(args[0][0], str):
        return args[0][0]
    return ""
