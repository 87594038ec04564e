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

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import torch
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
from evaluators.records import Conversation, Message, conversation_text, exchanges

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


# ---------------------------------------------------------------------------- metrics


def auroc(scores: Sequence[float] | np.ndarray, positives: Sequence[int]) -> float:
    """Area under the ROC curve of `scores` for finding the indices in `positives`
    (ties count half; NaN when either class is empty)."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.zeros(len(s), dtype=bool)
    pos[list(positives)] = True
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_k(scores: Sequence[float] | np.ndarray, positives: Sequence[int], k: int | None = None) -> float:
    """Fraction of the `k` top-scored indices that are in `positives` (k defaults to |positives|)."""
    k = len(positives) if k is None else k
    if k <= 0:
        return float("nan")
    top = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    return float(len(set(top.tolist()) & set(positives)) / k)


# ---------------------------------------------------------------------------- scoring


def influence(train: Sequence[np.ndarray], queries: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """TracIn influence `(n_train, n_queries)`: checkpoint-weighted sum of feature cosines."""
    n = train[0].shape[0]
    m = queries[0].shape[0] if queries else 0
    total = np.zeros((n, m), dtype=np.float64)
    if m == 0:
        return total
    for t, q, w in zip(train, queries, weights):
        total += w * (t.astype(np.float64) @ q.astype(np.float64).T)
    return total


def _normalise_text(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _names_differ(a: str, b: str) -> bool:
    """Each of two prompts names a key fact (a name, a number, a Chinese noun:
    `evaluators._text.key_facts`) that the other's text does not contain."""
    from evaluators._text import key_facts

    la, lb = a.lower(), b.lower()
    return any(f not in lb for f in key_facts(a)) and any(f not in la for f in key_facts(b))


def reference_conflicts(
    train_records: Sequence[Conversation],
    failures: Sequence[Failure],
    *,
    prompt_similarity: np.ndarray | None = None,
    threshold: float = 0.97,
) -> list[list[int]]:
    """For each failure with a gold answer, the training records that answer the failing
    prompt otherwise than the gold: any exchange of the record (a multi-turn record may
    teach the wrong answer in any of its turns, not only the last) whose user turn matches
    the failing prompt (same words, or embedding cosine >= `threshold` when
    `prompt_similarity` is given: one row per exchange, records' exchanges in order, one
    column per failure) and whose assistant turn disagrees with the gold. An embedding match
    is not taken when each prompt names something the other never mentions (`_names_differ`):
    an English-centric model puts "张伟住在哪里？" and "周杰住在哪里？" together."""
    owners: list[int] = []
    pairs: list[tuple[str, str]] = []
    raw: list[str] = []
    for i, record in enumerate(train_records):
        for prompt, answer in exchanges(record):
            owners.append(i)
            raw.append(prompt)
            pairs.append((_normalise_text(prompt), _normalise_text(answer)))
    if prompt_similarity is not None and prompt_similarity.shape != (len(pairs), len(failures)):
        raise AttributionError(
            f"prompt_similarity has shape {prompt_similarity.shape}: expected one row per exchange and one "
            f"column per failure, {(len(pairs), len(failures))}"
        )
    out: list[list[int]] = []
    for j, failure in enumerate(failures):
        if failure.gold is None:
            out.append([])
            continue
        prompt, gold = _normalise_text(failure.prompt.prompt), _normalise_text(failure.gold)
        hits: set[int] = set()
        for e, (p, a) in enumerate(pairs):
            same = p == prompt or (
                prompt_similarity is not None and prompt_similarity[e, j] >= threshold
                and not _names_differ(raw[e], failure.prompt.prompt)
            )
            if same and a != gold and gold not in a:
                hits.add(owners[e])
        out.append(sorted(hits))
    return out


def embedding_scores(train_embeddings: np.ndarray, failure_embeddings: np.ndarray) -> np.ndarray:
    """Nearest-neighbour baseline: each record's highest cosine to any failure."""
    if failure_embeddings.shape[0] == 0:
        return np.zeros(train_embeddings.shape[0])
    return (train_embeddings @ failure_embeddings.T).max(axis=1).astype(np.float64)


def _embed_or_none(texts: list[str]) -> np.ndarray | None:
    try:
        from evaluators.embeddings import EmbedderUnavailable, embed
    except ImportError:
        return None
    try:
        return embed(texts)
    except EmbedderUnavailable:
        return None


def _record_text(record: Conversation) -> str:
    """A record's questions and answers, in order (system turns left out: a prompt shared by
    every record would only pull all of them together)."""
    pairs = exchanges(record)
    return "\n".join(f"{q}\n{a}" for q, a in pairs) if pairs else conversation_text(record)


def _embedding_evidence(
    train_records: Sequence[Conversation], failures: Sequence[Failure]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """`(nearest-neighbour scores, exchange-prompt similarity (n_exchanges, n_failures))`,
    or Nones when the embedding model is unavailable (the trace goes on without them).
    A record is embedded whole, every exchange of it; a failure as its prompt's last user
    turn and its output (for a one-exchange record, the same shape of text)."""
    texts = [_record_text(r) for r in train_records]
    texts += [f"{f.prompt.prompt}\n{f.output}" for f in failures]
    prompts = [p for r in train_records for p, _ in exchanges(r)] + [f.prompt.prompt for f in failures]
    vectors = _embed_or_none(texts + prompts)
    if vectors is None:
        return None, None
    n, nf = len(train_records), len(failures)
    prompt_vectors = vectors[n + nf :]
    ne = len(prompt_vectors) - nf
    return embedding_scores(vectors[:n], vectors[n : n + nf]), prompt_vectors[:ne] @ prompt_vectors[ne:].T


# ---------------------------------------------------------------------------- checkpoints


def checkpoint_step(path: str | Path) -> int:
    """The training step of a checkpoint directory (`checkpoint-N`, else its trainer_state.json)."""
    path = Path(path)
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    if match:
        return int(match.group(1))
    state = path / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text()).get("global_step", 0))
    raise AttributionError(f"{path}: not a checkpoint (expected checkpoint-N or a trainer_state.json)")


def _lr_at(path: Path, step: int) -> float | None:
    """The learning rate logged closest before `step` in the checkpoint's trainer_state.json."""
    state = path / "trainer_state.json"
    if not state.is_file():
        return None
    logged = [
        (e["step"], e["learning_rate"])
        for e in json.loads(state.read_text()).get("log_history", [])
        if "learning_rate" in e
    ]
    before = [lr for s, lr in logged if s <= step]
    return float(before[-1]) if before else None


def load_checkpoint_model(base_dir: str | Path, adapter_dir: str | Path) -> tuple[Any, Any]:
    """`(model, tokenizer)`: the base at `base_dir` with the LoRA adapter of `adapter_dir`
    loaded trainable (so its parameters get gradients), eager attention, float32, eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    model.eval()
    return model, tokenizer


def _load_adapter_weights(model: Any, adapter_dir: Path) -> None:
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    result = set_peft_model_state_dict(model, load_peft_weights(str(adapter_dir), device="cpu"))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise AttributionError(f"{adapter_dir}: adapter weights do not fit the first checkpoint's adapter: {unexpected[:3]}")


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
            _load_adapter_weights(model, path)
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
        raw = np.array([_lr_at(p, s) or 0.0 for p, s in zip(paths, steps)])
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
