"""Trace failures back to the training records that caused them (TracIn / LESS family).

`trace_failures` scores every training record of a candidate against a set of failures
(the model's own bad outputs) and passes (outputs it got right):

1. **Gradient features** (`evaluators.gradients`): at each saved checkpoint, the
   projected per-example gradient of every training record, preconditioned with the
   checkpoint's Adam state, and of every failure's own output, teacher-forced — the
   direction that pushed the model to say it. Training features are kept in a
   `FeatureStore`, so a new failure costs one gradient per checkpoint.
2. **Influence**: cosine of record and output features, weighted and summed over the
   checkpoints (TracIn). A record's **gradient score** is its strongest influence on any
   failure minus `contrast_weight` (½) times its strongest influence on any pass. The
   contrast is what separates a record that caused a failure from one that merely shares
   an answer, a template or a topic with it: those push the passes just as hard. Half
   weight, not full: the strongest pass influence is a max over few, noisy items, and at
   full weight it also sinks real causes that happen to share context with one pass —
   on over-refusals traced to a refusal flood (`bench/attribution.py`) full weight fell
   to AUROC 0.92 from 0.95, while planted wrong answers stay at 1.0 either way.
3. With gold answers, two more pieces of evidence are added to the gradient score: the
   record's strongest **opposition to a gold answer** (most negative influence on a gold
   output), and a **reference conflict** flag — the record's prompt matches a failing
   prompt but its answer disagrees with the gold — worth `conflict_boost` standard
   deviations of the gradient score: evidence added, never a replacement ranking.
4. Per failure: the records that pushed towards it most, the records that most opposed
   its correct answer, and the conflicting records.

Preconditioning defaults to `g / (√v̂ + eps)` (Adam's per-coordinate step size, from the
checkpoint's second moment). LESS's full Adam update `m̂ / (√v̂ + eps)` is available as
"adam", but its momentum term is the same running-average gradient in every record's
feature, and on the planted-defect benchmark (`bench/attribution.py`) that shared
direction let records sharing a failure's answer outrank the records that caused it.

Two baselines are reported beside the score, for the report and the bench: the nearest
neighbour of each record among the failures in sentence-embedding space, and the
record's training loss at the last checkpoint (high loss = suspicious).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
from scipy.stats import rankdata

from evaluators.feature_store import FeatureKey, FeatureStore, parameters_hash, record_hash
from evaluators.gradients import (
    AttributionError,
    Precondition,
    ProjectionKind,
    RandomProjector,
    compute_features,
    load_adam_state,
    tokenize_examples,
    trainable_parameters,
)
from evaluators._checkpoints import checkpoint_step, load_adapter_weights, load_checkpoint_model, lr_at
from evaluators._trace_evidence import (
    _embedding_evidence,
    auroc,
    embedding_scores,
    influence,
    precision_at_k,
    reference_conflicts,
)
from evaluators.records import Conversation, Message

__all__ = [
    "AttributionError",
    "AttributionResult",
    "Failure",
    "FailureTrace",
    "RecordScore",
    "auroc",
    "checkpoint_step",
    "embedding_scores",
    "influence",
    "load_checkpoint_model",
    "precision_at_k",
    "reference_conflicts",
    "trace_failures",
]


#: How much of a record's strongest influence on a pass is subtracted (see the module doc).
CONTRAST_WEIGHT = 0.5


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """A prompt, what the model answered, and the gold answer when one is known.

    Passes (outputs the model got right) use the same type, with `output` the good answer.
    """

    prompt: Conversation
    output: str
    gold: str | None = None
    id: str = ""

    def with_answer(self, answer: str) -> Conversation:
        """The prompt with `answer` as the assistant turn (what a gradient is taken of)."""
        return Conversation(messages=(*self.prompt.prompt_messages, Message("assistant", answer)))


class RecordScore(msgspec.Struct, frozen=True, kw_only=True):
    """One training record's evidence. `score` ranks records (higher = more to blame)."""

    index: int
    score: float
    gradient_score: float
    reference_conflict: bool
    embedding_score: float  # NaN when the embedding model is unavailable
    loss: float
    loss_rank: int  # 1 = highest training loss
    top_failures: list[int]  # failures this record pushed towards most, strongest first


class FailureTrace(msgspec.Struct, frozen=True, kw_only=True):
    """What one failure traces back to."""

    failure: int
    top_records: list[int]
    top_scores: list[float]
    opposing_records: list[int]  # most against the gold answer (empty without gold)
    opposing_scores: list[float]
    conflicting_records: list[int]  # same prompt, answer disagrees with gold


class AttributionResult(msgspec.Struct, kw_only=True):
    """Scores for every training record (`records[i].index == i`) and a trace per failure."""

    records: list[RecordScore]
    ranking: list[int]  # record indices, most to blame first
    failures: list[FailureTrace]
    checkpoints: list[int]
    checkpoint_weights: list[float]
    projection_kind: str
    projection_layout: str
    projection_dim: int
    projection_seed: int
    precondition: str
    reused_training_features: bool  # every checkpoint's training features came from the store
    timings: dict[str, float]

    def column(self, name: str) -> np.ndarray:
        """One `RecordScore` field for all records, in record order, as an array."""
        return np.array([getattr(r, name) for r in self.records], dtype=np.float64)


# ---------------------------------------------------------------------------- tracing


class _Features(msgspec.Struct):
    train: list[np.ndarray]  # per checkpoint, (n_train, dim)
    queries: list[np.ndarray]  # per checkpoint, (n_queries, dim)
    last_losses: np.ndarray  # training losses at the last checkpoint
    reused: bool
    train_s: float
    query_s: float


def _features_at_checkpoints(
    model: Any,
    tokenizer: Any,
    projector: RandomProjector,
    paths: list[Path],
    steps: list[int],
    train_records: Sequence[Conversation],
    queries: list[Conversation],
    store: FeatureStore | None,
    key: FeatureKey,
    *,
    precondition: Precondition,
    chunk_size: int,
    max_length: int,
    progress: Callable[[str, int, int], None] | None,
) -> _Features:
    """Training features (from the store when it has them) and query features, per checkpoint.
    `model` holds the first checkpoint's adapter; the others are loaded into it in turn."""
    query_tokens = tokenize_examples(tokenizer, queries, max_length)
    train_tokens = None
    out = _Features(train=[], queries=[], last_losses=np.zeros(0), reused=True, train_s=0.0, query_s=0.0)
    for n, (path, step) in enumerate(zip(paths, steps)):
        if n:
            load_adapter_weights(model, path)
        t0 = time.perf_counter()
        batch = store.get(key, step) if store is not None else None
        if batch is None:
            out.reused = False
            if train_tokens is None:
                train_tokens = tokenize_examples(tokenizer, train_records, max_length)
            adam = load_adam_state(path, trainable_parameters(model)) if precondition != "none" else None
            report = (lambda d, t, s=step: progress(f"train@{s}", d, t)) if progress else None
            batch = compute_features(
                model, tokenizer, train_tokens, projector, adam=adam, mode=precondition, chunk_size=chunk_size,
                progress=report,
            )
            if store is not None:
                batch = store.put(key, step, batch)  # scored as stored (float16), like a later trace
        out.train_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        out.queries.append(compute_features(model, tokenizer, query_tokens, projector, chunk_size=chunk_size).features)
        out.query_s += time.perf_counter() - t0
        out.train.append(batch.features)
        out.last_losses = batch.losses.astype(np.float64)
    return out


def trace_failures(
    base_dir: str | Path,
    checkpoints: Sequence[str | Path],
    train_records: Sequence[Conversation],
    failures: Sequence[Failure],
    passes: Sequence[Failure] = (),
    store_dir: str | Path | None = None,
    *,
    projection_dim: int = 4096,
    projection_seed: int = 0,
    projection_kind: ProjectionKind = "rademacher",
    projection_layout: Literal["blocks", "dense"] = "blocks",
    precondition: Precondition = "rsqrt_v",
    checkpoint_weights: Literal["uniform", "lr"] = "uniform",
    oppose_weight: float = 1.0,
    contrast_weight: float = CONTRAST_WEIGHT,
    conflict_boost: float = 1.0,
    conflict_threshold: float = 0.97,
    embeddings: bool = True,
    top_k: int = 10,
    chunk_size: int = 16,
    max_length: int = 512,
    progress: Callable[[str, int, int], None] | None = None,
) -> AttributionResult:
    """Score every training record for how much it caused `failures` (see the module doc).

    `checkpoints` are Trainer checkpoint directories (adapter weights + optimizer.pt), in
    any order; each contributes with weight 1/n ("uniform") or proportional to its
    logged learning rate ("lr"). `passes` are prompts the model answered well (their
    `output` the good answer): the contrast set, weighted `contrast_weight`; without
    passes there is no contrast.
    Failures with a `gold` add opposition and reference-conflict evidence. With
    `store_dir`, training features are read from / written to a `FeatureStore` there
    (one directory per candidate and dataset version). `progress(stage, done, total)`
    reports training-feature extraction. `embeddings=False` skips the sentence-embedding
    baseline (its scores are then NaN, and conflicts need identical prompts). Raises
    `AttributionError` on unusable inputs.
    """
    if not checkpoints:
        raise AttributionError("no checkpoints given: attribution needs at least one saved checkpoint")
    if not train_records:
        raise AttributionError("no training records to score")
    if not failures:
        raise AttributionError("no failures to trace")
    if precondition not in ("adam", "rsqrt_v", "none"):
        raise AttributionError(f"precondition {precondition!r}: expected 'rsqrt_v', 'adam' or 'none'")
    if checkpoint_weights not in ("uniform", "lr"):
        raise AttributionError(f"checkpoint_weights {checkpoint_weights!r}: expected 'uniform' or 'lr'")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    paths = sorted((Path(c) for c in checkpoints), key=checkpoint_step)
    steps = [checkpoint_step(p) for p in paths]
    model, tokenizer = load_checkpoint_model(base_dir, paths[0])
    params = trainable_parameters(model)
    projector = RandomProjector(
        {n: p.numel() for n, p in params.items()},
        dim=projection_dim,
        seed=projection_seed,
        kind=projection_kind,
        layout=projection_layout,
    )
    key = FeatureKey(
        projection_kind=projection_kind,
        projection_layout=projection_layout,
        projection_dim=projection_dim,
        projection_seed=projection_seed,
        precondition=precondition,
        parameters_sha256=parameters_hash({n: tuple(p.shape) for n, p in params.items()}),
        max_length=max_length,
        record_sha256=[record_hash(r) for r in train_records],
    )
    store = FeatureStore(store_dir) if store_dir is not None else None
    queries = [f.with_answer(f.output) for f in failures] + [p.with_answer(p.output) for p in passes]
    with_gold = [j for j, f in enumerate(failures) if f.gold is not None]
    queries += [failures[j].with_answer(failures[j].gold or "") for j in with_gold]
    timings["load_s"] = time.perf_counter() - started

    feats = _features_at_checkpoints(
        model, tokenizer, projector, paths, steps, train_records, queries, store, key,
        precondition=precondition, chunk_size=chunk_size, max_length=max_length, progress=progress,
    )
    timings["train_features_s"] = feats.train_s
    timings["query_features_s"] = feats.query_s

    t0 = time.perf_counter()
    if checkpoint_weights == "lr":
        raw = np.array([lr_at(p, s) or 0.0 for p, s in zip(paths, steps)])
        weights = raw / raw.sum() if raw.sum() > 0 else np.full(len(paths), 1 / len(paths))
    else:
        weights = np.full(len(paths), 1 / len(paths))
    nf, np_ = len(failures), len(passes)
    to_fail = influence(feats.train, [q[:nf] for q in feats.queries], weights)
    to_pass = influence(feats.train, [q[nf : nf + np_] for q in feats.queries], weights)
    to_gold = influence(feats.train, [q[nf + np_ :] for q in feats.queries], weights)
    pass_max = to_pass.max(axis=1) if np_ else np.zeros(len(train_records))
    gradient_score = to_fail.max(axis=1) - contrast_weight * pass_max
    last_losses = feats.last_losses

    emb_score, prompt_similarity = _embedding_evidence(train_records, failures) if embeddings else (None, None)
    if emb_score is None:
        emb_score = np.full(len(train_records), np.nan)
    conflicts = reference_conflicts(
        train_records, failures, prompt_similarity=prompt_similarity, threshold=conflict_threshold
    )
    flagged = np.zeros(len(train_records), dtype=bool)
    for hits in conflicts:
        flagged[hits] = True
    # With gold answers, pushing against the gold is evidence too: the strongest opposition
    # (most negative influence on a gold output) adds to the score; support never subtracts.
    opposition = np.clip(-to_gold.min(axis=1), 0.0, None) if with_gold else np.zeros(len(train_records))
    spread = float(gradient_score.std()) or 1.0
    score = gradient_score + oppose_weight * opposition + conflict_boost * spread * flagged
    loss_rank = rankdata(-last_losses, method="min").astype(int)

    records = [
        RecordScore(
            index=i,
            score=float(score[i]),
            gradient_score=float(gradient_score[i]),
            reference_conflict=bool(flagged[i]),
            embedding_score=float(emb_score[i]),
            loss=float(last_losses[i]),
            loss_rank=int(loss_rank[i]),
            top_failures=np.argsort(-to_fail[i], kind="stable")[: min(3, nf)].tolist(),
        )
        for i in range(len(train_records))
    ]
    traces = []
    gold_col = {j: c for c, j in enumerate(with_gold)}
    for j in range(nf):
        contrast = to_fail[:, j] - contrast_weight * pass_max
        top = np.argsort(-contrast, kind="stable")[:top_k]
        if j in gold_col:
            against = to_gold[:, gold_col[j]]
            opposing = np.argsort(against, kind="stable")[:top_k]
            opposing = opposing[against[opposing] < 0]
        else:
            against, opposing = np.zeros(0), np.zeros(0, dtype=int)
        traces.append(
            FailureTrace(
                failure=j,
                top_records=top.tolist(),
                top_scores=[float(contrast[i]) for i in top],
                opposing_records=opposing.tolist(),
                opposing_scores=[float(against[i]) for i in opposing],
                conflicting_records=conflicts[j],
            )
        )
    timings["scoring_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    return AttributionResult(
        records=records,
        ranking=np.argsort(-score, kind="stable").tolist(),
        failures=traces,
        checkpoints=steps,
        checkpoint_weights=[float(w) for w in weights],
        projection_kind=projection_kind,
        projection_layout=projection_layout,
        projection_dim=projection_dim,
        projection_seed=projection_seed,
        precondition=precondition,
        reused_training_features=feats.reused,
        timings={k: round(v, 3) for k, v in timings.items()},
    )
