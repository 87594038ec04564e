"""The checks that compare records: exact and near duplicates, conflicting answers, and
train/eval overlap, with what they share (do two texts say different things; is it the
same question)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from evaluators import _text, lang
from evaluators._checks_context import Check, _Context, _quote, _Record
from evaluators._minhash import UnionFind, candidate_pairs
from evaluators.records import Conversation

# ------------------------------------------------------------------- answer semantics


def _differ(a: str, b: str, threshold: float) -> bool:
    """Whether two texts (two answers, or two questions) say materially different things.

    Each naming a number or name the other never mentions ("Canberra" vs "Sydney"),
    opposite yes/no, or a negation on one side only: different. One text holding every
    word of the other is an elaboration ("Canberra." vs "The capital of Australia is
    Canberra."), not a difference. Otherwise they differ when their content words (not
    stopwords) have a Jaccard similarity below `threshold`.
    """
    ta, tb = _text.normalise_tokens(a), _text.normalise_tokens(b)
    if ta == tb:
        return False
    a_digits, b_digits = lang.zh_numerals_to_digits(a), lang.zh_numerals_to_digits(b)
    if (a_digits != a or b_digits != b) and _text.normalise_tokens(a_digits) == _text.normalise_tokens(b_digits):
        return False  # the same but for how a number is written: "30岁", "三十岁"
    mentioned_a = _text.words(a) | _text.numbers(a)
    mentioned_b = _text.words(b) | _text.numbers(b)
    if _text.has_key_fact_outside(a, mentioned_b) and _text.has_key_fact_outside(b, mentioned_a):
        return True
    if _text.polarity(ta) != _text.polarity(tb):
        return True
    if _text.negated(a, ta) != _text.negated(b, tb):
        return True
    if set(ta) <= set(tb) or set(tb) <= set(ta):
        return False
    ca, cb = _text.content_tokens(ta), _text.content_tokens(tb)
    if not ca or not cb:
        ca, cb = set(ta), set(tb)
    return _text.jaccard(ca, cb) < threshold


def _same_facts(a: _Record, b: _Record) -> bool:
    """Whether two similar prompts mention the same numbers and names ("capital of France"
    and "capital of Spain" are different questions however similar their words)."""
    return a.prompt_tokens == b.prompt_tokens or _text.key_facts(a.prompt) == _text.key_facts(b.prompt)


def _same_question(a: _Record, b: _Record, threshold: float) -> bool:
    """Whether two similar prompts ask the same thing: the same numbers and names, and
    last sentences (the question, after any context) that do not differ materially
    (`_differ` at `threshold`). "Where does the river rise / end?" are two questions, as
    are two questions over one shared context; "capital of Australia" and "capital city
    of Australia" are one."""
    if a.prompt_tokens == b.prompt_tokens:
        return True
    if not _same_facts(a, b):
        return False
    return not _differ(_text.last_sentence(a.question), _text.last_sentence(b.question), threshold)


# ------------------------------------------------------------------------ duplicates


def _exact_duplicates(ctx: _Context) -> Check:
    groups = _equal_groups(ctx.key_hash, ctx.has_content)
    findings = []
    for members in groups:
        keep = members[0]
        findings.append(ctx.finding(
            "exact_duplicate", "warning", members,
            f"{ctx.names(members)} are the same conversation after normalising case, whitespace, "
            f"punctuation and Traditional/Simplified Chinese; keep {ctx.name(keep)}",
            keep=keep,
        ))
    return findings, {"groups": len(findings), "extra_copies": sum(len(f.record_indices) - 1 for f in findings)}


def _equal_groups(hashes: np.ndarray, mask: np.ndarray | None = None) -> list[list[int]]:
    """Indices sharing a hash value (where `mask`), as sorted groups of two or more, ordered
    by first member. 64-bit hashes: a collision among a billion records is ~3% likely."""
    idx = np.arange(len(hashes)) if mask is None else np.flatnonzero(mask)
    h = hashes[idx]
    order = np.argsort(h, kind="stable")
    idx, h = idx[order], h[order]
    bounds = np.flatnonzero(np.diff(h)) + 1
    groups = [g.tolist() for g in np.split(idx, bounds) if len(g) > 1]
    return sorted(groups)


def _first_of_each(hashes: np.ndarray) -> np.ndarray:
    """The index of the first occurrence of each distinct hash, ascending."""
    _, first = np.unique(hashes, return_index=True)
    return np.sort(first)


def _join_confirmed(ctx: _Context, pairs: np.ndarray, tokens: Callable[[int], list[str]], threshold: float,
                    groups: UnionFind, same: Callable[[int, int], bool]) -> tuple[dict[tuple[int, int], float], int]:
    """Join in `groups` each candidate pair (i, j) whose exact shingle Jaccard (of
    `tokens(i)`) is ≥ threshold and `same(i, j)` holds. A pair already in one group is
    not compared again: a group of n copies costs about n comparisons, not n²/2. Returns
    the joining links {(i, j): similarity} and how many pairs were compared exactly."""
    size = ctx.config.shingle_size
    cache: dict[int, set[str]] = {}  # a template bucket's representatives recur in many pairs

    def shingles(i: int) -> set[str]:
        if i not in cache:
            if len(cache) > 10_000:
                cache.clear()
            cache[i] = _text.shingles(tokens(i), size)
        return cache[i]

    links, compared = {}, 0
    for i, j in pairs.tolist():
        if groups.find(i) == groups.find(j):
            continue
        compared += 1
        a, b = shingles(i), shingles(j)
        if a and b and (similarity := _text.jaccard(a, b)) >= threshold and same(i, j):
            groups.union(i, j)
            links[(i, j)] = round(similarity, 3)
    return links, compared


def _near_duplicates(ctx: _Context) -> Check:
    config = ctx.config
    representatives = _first_of_each(ctx.key_hash)  # exact copies are reported by exact_duplicate
    pairs = candidate_pairs(ctx.full_bands, representatives, signature=ctx.full_signature,
                            threshold=config.near_duplicate_threshold)
    ctx.prefetch(pairs.ravel())

    def same(i: int, j: int) -> bool:
        a, b = ctx.feature(i), ctx.feature(j)
        return (_same_question(a, b, config.content_similarity_threshold)
                and not _differ(a.answer, b.answer, config.content_similarity_threshold))

    groups = UnionFind()
    links, compared = _join_confirmed(ctx, pairs, lambda i: ctx.feature(i).full_tokens,
                                      config.near_duplicate_threshold, groups, same)
    by_group: dict[int, list[list]] = defaultdict(list)
    for (i, j), sim in sorted(links.items()):
        by_group[groups.find(i)].append([i, j, sim])
    findings = []
    for members in groups.groups():
        keep = members[0]
        pairs_in = by_group[groups.find(keep)]  # the links that joined the group (a spanning tree)
        findings.append(ctx.finding(
            "near_duplicate", "warning", members,
            f"{ctx.names(members)} are near-duplicates (word-shingle Jaccard "
            f"≥ {min(p[2] for p in pairs_in):.2f}) with the same answer; keep {ctx.name(keep)}",
            keep=keep, pairs=pairs_in,
        ))
    return findings, {"groups": len(findings), "candidate_pairs": len(pairs), "compared": compared}


def _conflicting_answers(ctx: _Context) -> Check:
    config = ctx.config
    owner = ctx.unit_owner  # one unit per exchange; owner[u] is its record
    answered = np.flatnonzero(ctx.unit_answered)
    groups = UnionFind()
    for members in _equal_groups(ctx.unit_prompt_hash, ctx.unit_answered):  # the same prompt, word for word
        for u in members[1:]:
            groups.union(members[0], u)
    # One unit per distinct prompt proposes pairs for all its copies: 10k records asking one
    # templated question would otherwise make one LSH bucket of 50M pairs.
    distinct = answered[_first_of_each(ctx.unit_prompt_hash[answered])]
    pairs = candidate_pairs(ctx.unit_bands, distinct, signature=ctx.unit_signature,
                            threshold=config.conflict_prompt_threshold)
    ctx.prefetch(owner[pairs.ravel()])
    _, compared = _join_confirmed(
        ctx, pairs, lambda u: ctx.unit_feature(u).prompt_tokens, config.conflict_prompt_threshold, groups,
        lambda u, v: _same_question(ctx.unit_feature(u), ctx.unit_feature(v), config.conflict_question_similarity))
    findings = []
    for members in groups.groups():
        ctx.prefetch(owner[members])
        feats = {u: ctx.unit_feature(u) for u in members}
        classes: list[list[int]] = []  # units grouped by answers that agree
        for u in members:
            for cls in classes:
                if not _differ(feats[cls[0]].answer, feats[u].answer, config.content_similarity_threshold):
                    cls.append(u)
                    break
            else:
                classes.append([u])
        if len(classes) < 2:
            continue
        records = sorted({int(owner[u]) for u in members})
        if len(classes) == 2 and len(members) == 2:
            a, b = members
            who = (f"{ctx.name(owner[a])} asks the same question twice" if owner[a] == owner[b]
                   else f"{ctx.name(owner[a])} and {ctx.name(owner[b])} ask the same question")
            message = f"{who} but answer differently: {_quote(feats[a].answer)} vs {_quote(feats[b].answer)}"
        else:
            message = "the same question is answered differently: " + "; ".join(
                f"{ctx.names(sorted({int(owner[u]) for u in cls}))} {'say' if len(cls) > 1 else 'says'} "
                f"{_quote(feats[cls[0]].answer)}"
                for cls in classes
            )
        findings.append(ctx.finding(
            "conflicting_answers", "error", records, message,
            prompt=feats[members[0]].question,
            answers=[{"index": int(owner[u]), "answer": feats[u].answer, "group": g}
                     for g, cls in enumerate(classes) for u in cls],
        ))
    return findings, {"groups": len(findings), "candidate_pairs": len(pairs), "compared": compared}


def _train_eval_overlap(ctx: _Context, eval_records: list[Conversation]) -> Check:
    from evaluators._checks_scan import Hashers, text_hash

    config = ctx.config
    eval_feats = [_Record(r) for r in eval_records]
    exact: dict[int, list[int]] = defaultdict(list)
    for j, feat in enumerate(eval_feats):
        if feat.prompt_tokens:
            exact[text_hash(feat.prompt_tokens)].append(j)
    hashers = Hashers(config)
    eval_keys, eval_signature = hashers.sketch(hashers.overlap, [f.prompt_tokens for f in eval_feats], config.shingle_size)
    # Eval prompts first, then the training prompts, searched as one set: in a bucket too
    # large to pair in full (a shared template), every training prompt still meets the
    # bucket's first eval prompts, and the work stays linear in the records.
    n_eval = len(eval_feats)
    pairs = candidate_pairs(np.concatenate([eval_keys, ctx.prompt_bands]),
                            signature=np.concatenate([eval_signature, ctx.prompt_signature]),
                            threshold=config.overlap_threshold)
    pairs = pairs[(pairs[:, 0] < n_eval) & (pairs[:, 1] >= n_eval)]
    candidates: dict[int, list[int]] = defaultdict(list)
    for j, i in pairs.tolist():
        candidates[i - n_eval].append(j)
    ctx.prefetch(sorted(candidates))
    eval_sets = {}
    findings = []
    compared = 0
    for i in sorted(set(np.flatnonzero(np.isin(ctx.prompt_hash, list(exact))).tolist()) | set(candidates)):
        feat = ctx.feature(i)
        if matches := exact.get(int(ctx.prompt_hash[i])) if feat.prompt_tokens else None:
            findings.append(ctx.finding(
                "train_eval_overlap", "error", [i],
                f"{ctx.name(i)}'s prompt is also eval record #{matches[0]}'s prompt (after normalising)",
                kind="exact", eval_indices=matches, similarity=1.0,
            ))
            continue
        mine = _text.shingles(feat.prompt_tokens, config.shingle_size)
        if not mine:
            continue
        scored = []
        compared += len(candidates.get(i, ()))
        for j in candidates.get(i, ()):
            if j not in eval_sets:
                eval_sets[j] = _text.shingles(eval_feats[j].prompt_tokens, config.shingle_size)
            scored.append((round(_text.jaccard(mine, eval_sets[j]), 3), j))
        scored = sorted((s for s in scored if s[0] >= config.overlap_threshold), key=lambda s: (-s[0], s[1]))
        if scored := [(s, j) for s, j in scored if _same_facts(feat, eval_feats[j])]:
            best, j = scored[0]
            findings.append(ctx.finding(
                "train_eval_overlap", "error", [i],
                f"{ctx.name(i)}'s prompt nearly copies eval record #{j}'s prompt (word-shingle Jaccard {best:.2f})",
                kind="near", eval_indices=[j for _, j in scored], similarity=best,
            ))
    return findings, {"eval_records": len(eval_records), "candidate_pairs": len(pairs), "compared": compared}
