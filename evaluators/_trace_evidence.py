"""The trace's evidence beyond gradients, and its quality metrics: TracIn influence, the
reference-conflict flag, the sentence-embedding baseline, AUROC and precision@k
(`evaluators.attribution` re-exports the public names; see its docstring for how they
combine)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import rankdata

from evaluators.gradients import AttributionError
from evaluators.records import Conversation, conversation_text, exchanges

if TYPE_CHECKING:
    from evaluators.attribution import Failure

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
