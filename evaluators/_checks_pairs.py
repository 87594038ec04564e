"""The checks that compare records: exact and near duplicates, conflicting answers, and
train/eval overlap, with what they share (do two texts say different things; is it the
same question)."""

from __future__ import annotations

from collections import defaultdict

from evaluators import _text
from evaluators._checks_context import Check, _Context, _quote, _Record
from evaluators._similarity import UnionFind
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
    mentioned_a = _text.words(a) | _text.numbers(a)
    mentioned_b = _text.words(b) | _text.numbers(b)
    if _text.key_facts(a) - mentioned_b and _text.key_facts(b) - mentioned_a:
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
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, feat in enumerate(ctx.features):
        if any(content for _, content in feat.key):
            groups[feat.key].append(i)
    findings = []
    for members in sorted(g for g in groups.values() if len(g) > 1):
        keep = members[0]
        findings.append(ctx.finding(
            "exact_duplicate", "warning", members,
            f"{ctx.names(members)} are the same conversation after normalising case, whitespace and "
            f"punctuation; keep {ctx.name(keep)}",
            keep=keep,
        ))
    return findings, {"groups": len(findings), "extra_copies": sum(len(f.record_indices) - 1 for f in findings)}


def _near_duplicates(ctx: _Context) -> Check:
    feats, config = ctx.features, ctx.config
    first_of_key: dict[tuple, int] = {}
    for i, feat in enumerate(feats):
        first_of_key.setdefault(feat.key, i)
    representatives = sorted(first_of_key.values())  # exact copies are reported by exact_duplicate
    index = ctx.shingle_index([f.full_tokens for f in feats])
    groups, similarity = UnionFind(), {}
    for i, j, sim in index.similar_pairs(representatives, config.near_duplicate_threshold):
        if (_same_question(feats[i], feats[j], config.content_similarity_threshold)
                and not _differ(feats[i].answer, feats[j].answer, config.content_similarity_threshold)):
            groups.union(i, j)
            similarity[(i, j)] = sim
    findings = []
    for members in groups.groups():
        keep = members[0]
        pairs = [[i, j, s] for (i, j), s in sorted(similarity.items()) if i in members]
        findings.append(ctx.finding(
            "near_duplicate", "warning", members,
            f"{ctx.names(members)} are near-duplicates (word-shingle Jaccard "
            f"≥ {min(p[2] for p in pairs):.2f}) with the same answer; keep {ctx.name(keep)}",
            keep=keep, pairs=pairs,
        ))
    return findings, {"groups": len(findings)}


def _conflicting_answers(ctx: _Context) -> Check:
    config = ctx.config
    feats, owner = ctx.exchanges  # one unit per exchange; owner[u] is its record
    answered = [u for u, f in enumerate(feats) if f.answer.strip() and f.prompt_tokens]
    groups = UnionFind()
    by_prompt: dict[tuple[str, ...], int] = {}
    for u in answered:
        first = by_prompt.setdefault(tuple(feats[u].prompt_tokens), u)
        groups.union(first, u)
    for u, v, _ in ctx.exchange_prompt_index.similar_pairs(answered, config.conflict_prompt_threshold):
        if _same_question(feats[u], feats[v], config.conflict_question_similarity):
            groups.union(u, v)
    findings = []
    for members in groups.groups():
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
        records = sorted({owner[u] for u in members})
        if len(classes) == 2 and len(members) == 2:
            a, b = members
            who = (f"{ctx.name(owner[a])} asks the same question twice" if owner[a] == owner[b]
                   else f"{ctx.name(owner[a])} and {ctx.name(owner[b])} ask the same question")
            message = f"{who} but answer differently: {_quote(feats[a].answer)} vs {_quote(feats[b].answer)}"
        else:
            message = "the same question is answered differently: " + "; ".join(
                f"{ctx.names(sorted({owner[u] for u in cls}))} {'say' if len(cls) > 1 else 'says'} "
                f"{_quote(feats[cls[0]].answer)}"
                for cls in classes
            )
        findings.append(ctx.finding(
            "conflicting_answers", "error", records, message,
            prompt=feats[members[0]].question,
            answers=[{"index": owner[u], "answer": feats[u].answer, "group": g}
                     for g, cls in enumerate(classes) for u in cls],
        ))
    return findings, {"groups": len(findings)}


def _train_eval_overlap(ctx: _Context, eval_records: list[Conversation]) -> Check:
    feats, config = ctx.features, ctx.config
    eval_feats = [_Record(r) for r in eval_records]
    exact: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for j, feat in enumerate(eval_feats):
        if feat.prompt_tokens:
            exact[tuple(feat.prompt_tokens)].append(j)
    near = ctx.prompt_index.matches_in(
        ctx.shingle_index([f.prompt_tokens for f in eval_feats]), config.overlap_threshold
    )
    findings = []
    for i, feat in enumerate(feats):
        if matches := exact.get(tuple(feat.prompt_tokens)):
            findings.append(ctx.finding(
                "train_eval_overlap", "error", [i],
                f"{ctx.name(i)}'s prompt is also eval record #{matches[0]}'s prompt (after normalising)",
                kind="exact", eval_indices=matches, similarity=1.0,
            ))
        elif scored := [(s, j) for s, j in near.get(i, []) if _same_facts(feat, eval_feats[j])]:
            best, j = scored[0]
            findings.append(ctx.finding(
                "train_eval_overlap", "error", [i],
                f"{ctx.name(i)}'s prompt nearly copies eval record #{j}'s prompt (word-shingle Jaccard {best:.2f})",
                kind="near", eval_indices=[j for _, j in scored], similarity=best,
            ))
    return findings, {"eval_records": len(eval_records)}
