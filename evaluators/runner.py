"""Run a task for several candidates on one model backend, and report like lm-eval.

Every candidate's requests go to the backend in the same call (one call per chunk of
documents when `chunk_docs` is set), interleaved document by document, so a backend that
serves many adapters on one base fills its batches with a mix of adapters.

Results come back per candidate as an `EvalResult`: aggregates with standard errors,
every sample with its per-sample scores, `to_lm_eval_json()` in lm-eval's results shape
and `sample_rows()` in the shape of lm-eval's `samples_<task>_<date>.jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np

from evaluators.metrics import (
    METRICS,
    ChoiceOutcome,
    GenerationOutcome,
    Outcome,
    RollingOutcome,
    aggregate,
    score_sample,
)
from evaluators.records import Conversation, Message
from evaluators.tasks import Request, TaskConfig, build_requests, lm_eval_config

#: The adapter name that means "the base model, no adapter" (PEFT's own spelling).
BASE_ADAPTER = "__base__"


class GenRequest(msgspec.Struct, frozen=True):
    """Generate from `prompt` with `adapter`; stop at any of `stop` (the returned text
    excludes the stop string); temperature 0 means greedy. With `messages` (a chat
    task), the backend renders that conversation with the adapter's chat template and
    `prompt` is only its rendering for the logs."""

    adapter: str
    prompt: str
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    messages: tuple[Message, ...] = ()


class ModelBackend(Protocol):
    """What the runner needs from a model server. Each method answers a list of requests,
    in order; a list may mix adapters. Log-likelihoods are natural-log sums over the
    continuation's tokens; `is_greedy` says whether greedy decoding would produce it.
    A loglikelihood context is text, or (chat tasks) a `Conversation` the backend renders
    with the adapter's chat template. `apply_chat_template(adapter, messages)` (optional,
    as lm-eval's LM has it) returns the text a conversation becomes for that adapter;
    without it the logs show the plain rendering."""

    def generate(self, requests: list[GenRequest]) -> list[str]: ...

    def loglikelihood(self, requests: list[tuple[str, str | Conversation, str]]) -> list[tuple[float, bool]]: ...

    def loglikelihood_rolling(self, requests: list[tuple[str, str]]) -> list[float]: ...


Progress = Callable[[int, int], None]


# --- results -----------------------------------------------------------------------------


class MetricValue(msgspec.Struct, frozen=True):
    """One metric's aggregate over the run; `stderr` is None when not estimable (one sample)."""

    value: float
    stderr: float | None
    higher_is_better: bool
    aggregation: str
    stderr_method: str


class SampleResult(msgspec.Struct, frozen=True):
    """One document's outcome for one candidate.

    `response` is the generated text, the chosen choice (multiple_choice) or '' (rolling);
    `scores` the per-sample metric values; `weights` the words/bytes of ratio metrics."""

    doc_id: int
    doc_hash: str
    prompt: str
    references: tuple[str, ...]
    response: str
    scores: dict[str, float]
    weights: dict[str, float]
    doc: dict[str, Any]
    raw: Any = None
    messages: tuple[Message, ...] = ()


class EvalResult(msgspec.Struct, frozen=True):
    """A task's results for one candidate."""

    task: str
    candidate: str
    config: TaskConfig
    metrics: dict[str, MetricValue]
    samples: list[SampleResult]
    n_original: int
    limit: int | float | None = None

    @property
    def n_effective(self) -> int:
        """How many documents were evaluated (after `limit`)."""
        return len(self.samples)

    def to_lm_eval_json(self, config_extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """lm-eval's results shape: `results[task]["<metric>,none"]`, `"<metric>_stderr,none"`
        ("N/A" when not estimable), plus `configs`, `versions`, `n-shot`,
        `higher_is_better`, `n-samples` and `config` (`config_extra` merged into it)."""
        return lm_eval_results_json([self], config_extra)

    def sample_rows(self) -> list[dict[str, Any]]:
        """Per-sample rows as lm-eval logs them (doc_id, doc, target, arguments, resps,
        filtered_resps, doc_hash, prompt_hash, target_hash, metric values; ratio metrics
        as [value, weight]) plus `prompt`, `response` and `candidate`."""
        return [_sample_row(self, s) for s in self.samples]

    def write(self, out_dir: str | os.PathLike, config_extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
        """Write `results_<date>.json` and `samples_<task>_<date>.jsonl` into `out_dir`, the
        layout `regression.load_lm_eval_results` (and lm-eval tooling) reads."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().isoformat().replace(":", "-")
        results_path = out / f"results_{stamp}.json"
        samples_path = out / f"samples_{self.task}_{stamp}.jsonl"
        results_path.write_text(json.dumps(self.to_lm_eval_json(config_extra), indent=2, ensure_ascii=False),
                                encoding="utf-8")
        with samples_path.open("w", encoding="utf-8") as fh:
            for row in self.sample_rows():
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        return results_path, samples_path


def _json_number(x: float) -> float | str:
    return "N/A" if x is None or not math.isfinite(x) else x


def lm_eval_results_json(results: Sequence[EvalResult], config_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Several tasks' results for ONE candidate as one lm-eval results document."""
    candidates = {r.candidate for r in results}
    if len(candidates) > 1:
        raise ValueError(f"one results document holds one candidate's tasks, got {sorted(candidates)}")
    doc: dict[str, Any] = {k: {} for k in ("results", "group_subtasks", "configs", "versions", "n-shot",
                                           "higher_is_better", "n-samples")}
    for r in results:
        entry: dict[str, Any] = {"alias": r.task}
        for name, m in r.metrics.items():
            entry[f"{name},none"] = _json_number(m.value)
            entry[f"{name}_stderr,none"] = _json_number(m.stderr)
        doc["results"][r.task] = entry
        doc["group_subtasks"][r.task] = []
        doc["configs"][r.task] = lm_eval_config(r.config, r.config.dataset)[0]
        doc["versions"][r.task] = r.config.metadata.version
        doc["n-shot"][r.task] = r.config.num_fewshot
        doc["higher_is_better"][r.task] = {n: m.higher_is_better for n, m in r.metrics.items()}
        doc["n-samples"][r.task] = {"original": r.n_original, "effective": r.n_effective}
    limits = {r.limit for r in results}
    doc["config"] = {
        "model": "adapter-arena",
        "model_args": {"candidate": next(iter(candidates), None)},
        "limit": limits.pop() if len(limits) == 1 else None,
        **(config_extra or {}),
    }
    doc["date"] = time.time()
    return doc


def text_hash(text: str) -> str:
    """sha256 of `text` as lm-eval hashes prompts and targets (`prompt_hash`, `target_hash`)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sample_row(result: EvalResult, s: SampleResult) -> dict[str, Any]:
    target: Any = s.references[0] if len(s.references) == 1 else list(s.references)
    row: dict[str, Any] = {
        "doc_id": s.doc_id,
        "doc": s.doc,
        "target": target,
        "arguments": s.raw["arguments"] if isinstance(s.raw, dict) else [],
        "resps": s.raw["resps"] if isinstance(s.raw, dict) else [],
        "filtered_resps": s.raw["filtered_resps"] if isinstance(s.raw, dict) else [],
        "filter": "none",
        "metrics": list(s.scores),
        "doc_hash": s.doc_hash,
        "prompt_hash": text_hash(s.prompt),
        "target_hash": text_hash(str(target)),
        "task": result.task,
        "candidate": result.candidate,
        "prompt": s.prompt,
        "response": s.response,
    }
    if s.messages:
        # The conversation sent, beside its rendering: a trace takes the failure's gradient in
        # exactly this context, and compares its user turn with the training records'.
        row["messages"] = [{"role": m.role, "content": m.content} for m in s.messages]
    for name, value in s.scores.items():
        row[name] = [value, s.weights[name]] if name in s.weights else value
    return row


# --- running -----------------------------------------------------------------------------


def _call_in_chunks(fn: Callable[[list], list], groups: list[list], chunk_docs: int | None,
                    progress: Progress | None, what: str) -> list[list]:
    """Call `fn` on the flattened groups (one group = one document's requests for every
    candidate), `chunk_docs` documents per call; return the answers regrouped."""
    step = chunk_docs or max(len(groups), 1)
    answers: list[list] = []
    for start in range(0, len(groups), step):
        chunk = groups[start:start + step]
        flat = [item for group in chunk for item in group]
        out = list(fn(flat))
        if len(out) != len(flat):
            raise RuntimeError(f"backend {what} returned {len(out)} answers for {len(flat)} requests")
        i = 0
        for group in chunk:
            answers.append(out[i:i + len(group)])
            i += len(group)
        if progress is not None:
            progress(min(start + step, len(groups)), len(groups))
    return answers


def _truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


# Each runner returns, per candidate, per request: (outcome, response text, raw log record,
# the prompt text as that candidate saw it).
Answer = tuple[Outcome, str, dict[str, Any], str]


def _prompt_text(model: ModelBackend, adapter: str, r: Request) -> str:
    """The text `adapter` is given for `r`: a chat request rendered with its template."""
    render = getattr(model, "apply_chat_template", None)
    if not r.messages or render is None:
        return r.prompt
    return str(render(adapter, r.messages))


def _run_generate(task, requests, model, candidates, chunk_docs, progress) -> dict[str, list[Answer]]:
    gen = task.generation_kwargs
    temperature = gen.temperature if gen.do_sample else 0.0
    stop = tuple(gen.until)
    groups = [[GenRequest(c, _prompt_text(model, c, r), gen.max_gen_toks, stop, temperature, r.messages)
               for c in candidates] for r in requests]
    answers = _call_in_chunks(model.generate, groups, chunk_docs, progress, "generate")
    out: dict[str, list[Answer]] = {c: [] for c in candidates}
    for r, sent, per_candidate in zip(requests, groups, answers):
        for g, text in zip(sent, per_candidate):
            response = _truncate_at_stop(str(text), stop)
            raw = {"arguments": [[g.prompt, msgspec.to_builtins(gen)]], "resps": [[str(text)]],
                   "filtered_resps": [response]}
            out[g.adapter].append((GenerationOutcome(response, r.references), response, raw, g.prompt))
    return out


def _run_multiple_choice(task, requests, model, candidates, chunk_docs, progress) -> dict[str, list[Answer]]:
    def context(r: Request) -> str | Conversation:
        return Conversation(messages=r.messages) if r.messages else r.prompt

    groups = [[(c, context(r), cont) for c in candidates for cont in r.continuations] for r in requests]
    answers = _call_in_chunks(model.loglikelihood, groups, chunk_docs, progress, "loglikelihood")
    out: dict[str, list[Answer]] = {c: [] for c in candidates}
    for r, flat in zip(requests, answers):
        k = len(r.continuations)
        for j, c in enumerate(candidates):
            pairs = [(float(ll), bool(greedy)) for ll, greedy in flat[j * k:(j + 1) * k]]
            lls = tuple(p[0] for p in pairs)
            outcome = ChoiceOutcome(lls, tuple(p[1] for p in pairs), r.choices, r.gold)
            prompt = _prompt_text(model, c, r)
            raw = {"arguments": [[prompt, cont] for cont in r.continuations], "resps": [[list(p)] for p in pairs],
                   "filtered_resps": [list(p) for p in pairs], "gold": list(r.gold)}
            out[c].append((outcome, r.choices[int(np.argmax(lls))], raw, prompt))
    return out


def _run_rolling(task, requests, model, candidates, chunk_docs, progress) -> dict[str, list[Answer]]:
    groups = [[(c, r.references[0]) for c in candidates] for r in requests]
    answers = _call_in_chunks(model.loglikelihood_rolling, groups, chunk_docs, progress, "loglikelihood_rolling")
    out: dict[str, list[Answer]] = {c: [] for c in candidates}
    for r, per_candidate in zip(requests, answers):
        for c, ll in zip(candidates, per_candidate):
            raw = {"arguments": [[r.references[0]]], "resps": [[float(ll)]], "filtered_resps": [float(ll)]}
            out[c].append((RollingOutcome(float(ll), r.references[0]), "", raw, r.prompt))
    return out


_RUNNERS = {
    "generate_until": _run_generate,
    "multiple_choice": _run_multiple_choice,
    "loglikelihood_rolling": _run_rolling,
}


def _apply_limit(n: int, limit: int | float | None) -> int:
    if limit is None:
        return n
    if isinstance(limit, float) and 0.0 < limit <= 1.0:
        return math.ceil(n * limit)
    if limit < 0 or int(limit) != limit:
        raise ValueError(f"limit: expected a count >= 0 or a fraction in (0, 1], got {limit!r}")
    return min(n, int(limit))


def evaluate(
    task: TaskConfig,
    docs: Sequence[dict[str, Any]],
    model: ModelBackend,
    candidates: list[str],
    limit: int | float | None = None,
    progress: Progress | None = None,
    *,
    fewshot_docs: Sequence[dict[str, Any]] | None = None,
    chunk_docs: int | None = None,
    bootstrap_rounds: int = 1000,
) -> dict[str, EvalResult]:
    """Evaluate every candidate (an adapter name; `BASE_ADAPTER` is the bare base) on the
    first `limit` documents (a count, or a fraction in (0, 1] as in lm-eval).

    All candidates' requests share each backend call; with `chunk_docs`, one call per
    that many documents, and `progress(done_docs, total_docs)` after each call (raise
    from it to cancel). Few-shot examples come from `fewshot_docs`, else from all `docs`."""
    if not candidates:
        raise ValueError("candidates: expected at least one adapter name")
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"candidates: each name once, got {candidates}")
    n = _apply_limit(len(docs), limit)
    if n == 0:
        raise ValueError(f"task {task.task}: no documents to evaluate ({len(docs)} given, limit={limit!r})")
    requests = build_requests(task, list(docs[:n]), fewshot_docs if fewshot_docs is not None else docs)
    answers = _RUNNERS[task.output_type](task, requests, model, list(candidates), chunk_docs, progress)
    return {c: _score(task, c, requests, answers[c], len(docs), limit, bootstrap_rounds) for c in candidates}


def _score(task: TaskConfig, candidate: str, requests: list[Request], answers: list[Answer],
           n_original: int, limit, bootstrap_rounds: int) -> EvalResult:
    samples = []
    for r, (outcome, response, raw, prompt) in zip(requests, answers):
        scores, weights = {}, {}
        for m in task.metrics:
            value, weight = score_sample(m.metric, outcome, m.kwargs)
            scores[m.metric] = value
            if METRICS[m.metric].weight is not None:
                weights[m.metric] = weight
        samples.append(SampleResult(r.doc_id, r.doc_hash, prompt, r.references, response, scores, weights,
                                    r.doc, raw, r.messages))
    metrics = {}
    for m in task.metrics:
        spec = METRICS[m.metric]
        values = [s.scores[m.metric] for s in samples]
        weights = [s.weights.get(m.metric, 1.0) for s in samples]
        agg = aggregate(m.aggregation or spec.aggregation, values, weights, bootstrap_rounds=bootstrap_rounds)
        higher = spec.higher_is_better if m.higher_is_better is None else m.higher_is_better
        stderr = agg.stderr if math.isfinite(agg.stderr) else None
        metrics[m.metric] = MetricValue(agg.value, stderr, higher, m.aggregation or spec.aggregation,
                                        agg.stderr_method)
    return EvalResult(task.task, candidate, task, metrics, samples, n_original, limit)
