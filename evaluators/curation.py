"""Curation: the next round's dataset, with a reason for every record that leaves it.

`curate(records, drop=..., budget=...)` removes the records a caller chose to drop (from
dataset checks via `drop_flagged`, from attribution scores via `drop_top`) and, with a
budget, keeps a coreset of the rest chosen by `select_coreset`: k-means over sentence
embeddings, sampled per cluster in proportion to its size, so the smaller dataset still
covers every kind of example. Everything is deterministic for a seed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from scipy.cluster.vq import kmeans2

from evaluators.datachecks import CHECKS, CheckReport
from evaluators.records import Conversation, conversation_text

#: Checks whose findings `drop_flagged` acts on by default: records that are safe to
#: remove without a human decision. Conflicts, refusals, formats, lengths and
#: unsupported facts need someone to choose which side is right, so they are opt-in.
DEFAULT_DROP_CHECKS: tuple[str, ...] = ("exact_duplicate", "near_duplicate", "empty_or_garbled", "train_eval_overlap")


class RemovedRecord(msgspec.Struct, frozen=True):
    """A record left out of the next round, and why."""

    index: int
    reason: str
    record: Conversation


class CurationResult(msgspec.Struct, frozen=True):
    """The next-round dataset: kept records (in input order) and every removed one with its reason.

    `to_fix` lists kept records marked for a human to fix (index → note).
    """

    n_input: int
    kept_indices: tuple[int, ...]
    kept: tuple[Conversation, ...]
    removed: tuple[RemovedRecord, ...]
    to_fix: dict[int, str] = {}
    budget: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return msgspec.to_builtins(self)


def curate(
    records: Sequence[Conversation],
    *,
    drop: Mapping[int, str],
    budget: int | None = None,
    seed: int = 0,
    embeddings: np.ndarray | None = None,
    fix: Mapping[int, str] | None = None,
) -> CurationResult:
    """Remove `drop` (index → reason), then keep at most `budget` records by coreset selection.

    `embeddings` (one row per record, in `records` order) are used for the coreset; when
    absent and a budget applies they are computed with `evaluators.embeddings.embed`
    (which needs the bundled MiniLM model). `fix` marks kept records for fixing without
    removing them. Raises `ValueError` for an index outside `records`.
    """
    n = len(records)
    drop = {int(i): str(reason) for i, reason in drop.items()}  # numpy ints from drop_top & co.
    fix = {int(i): str(note) for i, note in (fix or {}).items()}
    for name, indices in (("drop", drop), ("fix", fix)):
        bad = sorted(i for i in indices if not 0 <= i < n)
        if bad:
            raise ValueError(f"{name} names record(s) {bad[:5]} outside the {n} records (indices are 0-based)")
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    if embeddings is not None and len(embeddings) != n:
        raise ValueError(f"embeddings has {len(embeddings)} rows for {n} records")

    removed = dict(drop)
    candidates = [i for i in range(n) if i not in removed]
    if budget is not None and len(candidates) > budget:
        if embeddings is None:
            from evaluators.embeddings import embed  # imported late: loads torch

            vectors = embed([conversation_text(records[i]) for i in candidates])
        else:
            vectors = np.asarray(embeddings)[candidates]
        chosen = set(select_coreset(vectors, budget, seed).tolist())
        for position, i in enumerate(candidates):
            if position not in chosen:
                removed[i] = f"coreset: not selected to fit the budget of {budget} records"
        candidates = [i for position, i in enumerate(candidates) if position in chosen]

    return CurationResult(
        n_input=n,
        kept_indices=tuple(candidates),
        kept=tuple(records[i] for i in candidates),
        removed=tuple(RemovedRecord(i, removed[i], records[i]) for i in sorted(removed)),
        to_fix={i: note for i, note in sorted(fix.items()) if i not in removed},
        budget=budget,
        seed=seed,
    )


def write_curation(result: CurationResult, directory: str | Path) -> dict[str, Path]:
    """Write `kept.jsonl` (chat `messages` records, ready to train on) and `removed.jsonl`
    (`index`, `reason`, `messages`) under `directory`; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    paths = {"kept": directory / "kept.jsonl", "removed": directory / "removed.jsonl"}
    with paths["kept"].open("wb") as out:
        for record in result.kept:
            out.write(encoder.encode({"messages": record.messages}) + b"\n")
    with paths["removed"].open("wb") as out:
        for item in result.removed:
            out.write(encoder.encode({"index": item.index, "reason": item.reason,
                                      "messages": item.record.messages}) + b"\n")
    return paths


# --------------------------------------------------------------------------- coreset


def select_coreset(embeddings: np.ndarray, budget: int, seed: int = 0, *, n_clusters: int | None = None) -> np.ndarray:
    """Indices (sorted) of `budget` rows chosen to cover the embedding space.

    Rows are L2-normalised and clustered by k-means (k = `n_clusters`, default
    min(budget, round(√n)), never more than the distinct rows). Each cluster gets at
    least one pick and the rest of the budget in proportion to its size (largest
    remainder). Within a cluster the member nearest its centroid comes first (the most
    typical example); further picks are drawn at random (seeded), so the coreset keeps
    the cluster's spread rather than only its centre. Same inputs and seed, same output.
    """
    data = np.asarray(embeddings, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (records × dimensions), got shape {data.shape}")
    n = len(data)
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    if budget >= n:
        return np.arange(n)
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    data = data / np.where(norms > 0, norms, 1.0)
    distinct = len(np.unique(data.round(6), axis=0))
    k = n_clusters if n_clusters is not None else max(1, round(math.sqrt(n)))
    k = max(1, min(k, budget, distinct))

    labels, centroids = _kmeans(data, k, seed)
    rng = np.random.default_rng(seed)
    clusters = [np.flatnonzero(labels == c) for c in range(len(centroids))]
    clusters = [(members, centroids[c]) for c, members in enumerate(clusters) if len(members)]
    quotas = _allocate(budget, [len(members) for members, _ in clusters])
    chosen: list[int] = []
    for (members, centroid), quota in zip(clusters, quotas):
        order = members[np.argsort(np.linalg.norm(data[members] - centroid, axis=1), kind="stable")]
        rest = rng.permutation(order[1:])
        chosen.extend([int(order[0])] + rest[: quota - 1].tolist())
    return np.sort(np.array(chosen, dtype=int))


def _kmeans(data: np.ndarray, k: int, seed: int, restarts: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels and centroids of the best of `restarts` k-means runs (lowest inertia).

    Each run seeds with greedy k-means++ and refines with scipy's kmeans2 (Lloyd's
    algorithm): scipy is already a dependency, and scikit-learn would add a large one for
    one call. The seeding is ours because kmeans2's plain k-means++ often leaves a small,
    distant cluster without a centre, and Lloyd cannot recover from that: the cluster is
    merged into a neighbour and the coreset misses it. The greedy variant (scikit-learn's
    default) draws several candidates per centre and keeps the one that lowers the
    potential most; the restarts make a miss vanishingly rare.
    """
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(restarts):
        start = data[_greedy_kmeans_pp(data, k, rng)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "one of the clusters is empty": handled by the caller
            centroids, labels = kmeans2(data, start, iter=20, minit="matrix")
        inertia = float(((data - centroids[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels, centroids)
    return best[1], best[2]


def _greedy_kmeans_pp(data: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Row indices of k initial centres (fewer when the rows run out of distinct points)."""
    n = len(data)
    trials = max(8, 2 + int(math.log(k)))
    centres = [int(rng.integers(n))]
    d2 = np.maximum(2.0 - 2.0 * data @ data[centres[0]], 0.0)  # unit rows: ||x - c||² = 2 - 2 x·c
    for _ in range(1, k):
        if d2.sum() <= 1e-12:
            break
        candidates = rng.choice(n, size=trials, p=d2 / d2.sum())
        cand_d2 = np.minimum(d2[:, None], np.maximum(2.0 - 2.0 * data @ data[candidates].T, 0.0))
        pick = int(np.argmin(cand_d2.sum(axis=0)))
        centres.append(int(candidates[pick]))
        d2 = cand_d2[:, pick]
    return centres


def _allocate(budget: int, sizes: list[int]) -> list[int]:
    """Split `budget` over clusters of `sizes`: one each, the rest proportional to the
    members beyond the first (largest remainder), never more than a cluster holds."""
    base = [1] * len(sizes)
    spare = [s - 1 for s in sizes]
    extra = budget - len(sizes)
    total_spare = sum(spare)
    if extra <= 0 or total_spare == 0:
        return base
    exact = [extra * s / total_spare for s in spare]
    floors = [math.floor(x) for x in exact]
    order = sorted(range(len(sizes)), key=lambda c: (-(exact[c] - floors[c]), c))
    for c in order[: extra - sum(floors)]:
        floors[c] += 1
    return [b + min(f, s) for b, f, s in zip(base, floors, spare)]


# ---------------------------------------------------------------- choosing what to drop


def drop_top(scores: Sequence[float] | np.ndarray, k: int, *, label: str = "attribution") -> dict[int, str]:
    """The `k` records with the highest scores (e.g. attribution to failures), index → reason.

    NaN scores are never picked; ties go to the lower index.
    """
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"scores must be one number per record, got shape {values.shape}")
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    valid = np.flatnonzero(~np.isnan(values))
    ranked = valid[np.lexsort((valid, -values[valid]))][:k]
    return {int(i): f"{label}: score {values[i]:.4g} is #{rank} of {len(values)} (top {k})"
            for rank, i in enumerate(ranked, start=1)}


def drop_flagged(report: CheckReport, checks: Iterable[str] = DEFAULT_DROP_CHECKS) -> dict[int, str]:
    """Index → reason for every record flagged by one of `checks` in a dataset-check report.

    Duplicate groups keep their first record (`details["keep"]`) and drop the others;
    every other finding drops all of its records. A record flagged twice gets both reasons.
    """
    checks = tuple(checks)
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}: expected some of {list(CHECKS)}")
    reasons: dict[int, list[str]] = {}
    for finding in report.findings:
        if finding.check not in checks:
            continue
        keep = finding.details.get("keep")
        for i in finding.record_indices:
            if i != keep:
                reasons.setdefault(i, []).append(f"{finding.check}: {finding.message}")
    return {i: "; ".join(r) for i, r in sorted(reasons.items())}
