"""Near-duplicate search for the dataset checks: MinHash + LSH (datasketch), confirmed exactly.

LSH only proposes candidate pairs; every pair is confirmed by the exact Jaccard of the
shingle sets (cheap: SFT records are short), so MinHash's estimation error can cost a
missed pair but never a wrong finding.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from datasketch import MinHash, MinHashLSH

from evaluators import _text


class ShingleIndex:
    """Word-shingle sets of many texts and their MinHash sketches, searchable by Jaccard."""

    def __init__(self, token_lists: Sequence[list[str]], *, shingle_size: int, num_perm: int, seed: int) -> None:
        self.num_perm = num_perm
        self.sets = [_text.shingles(tokens, shingle_size) for tokens in token_lists]
        encoded = ([s.encode("utf-8") for s in shingle_set] for shingle_set in self.sets)
        # One shared MinHash state, copied per text: permutations are built once, not per text.
        self.hashes = list(MinHash.generator(encoded, num_perm=num_perm, seed=seed))

    def similar_pairs(self, keys: Iterable[int], threshold: float) -> list[tuple[int, int, float]]:
        """Pairs (i, j, jaccard) with i < j, both in `keys`, whose shingle Jaccard ≥ threshold."""
        lsh = _lsh_index(threshold, self.num_perm)
        pairs = []
        for i in keys:
            if not self.sets[i]:
                continue
            for j in lsh.query(self.hashes[i]):
                similarity = _text.jaccard(self.sets[i], self.sets[j])
                if similarity >= threshold:
                    pairs.append((min(i, j), max(i, j), round(similarity, 3)))
            lsh.insert(i, self.hashes[i])
        return sorted(pairs)

    def matches_in(self, other: ShingleIndex, threshold: float) -> dict[int, list[tuple[float, int]]]:
        """For each text i of self, the texts j of `other` with Jaccard ≥ threshold, best first.

        Both indexes must share `num_perm` and seed (their sketches are then comparable).
        """
        lsh = _lsh_index(threshold, self.num_perm)
        for j, shingle_set in enumerate(other.sets):
            if shingle_set:
                lsh.insert(j, other.hashes[j])
        found: dict[int, list[tuple[float, int]]] = {}
        for i, shingle_set in enumerate(self.sets):
            if not shingle_set:
                continue
            scored = [(round(_text.jaccard(shingle_set, other.sets[j]), 3), j) for j in lsh.query(self.hashes[i])]
            scored = sorted((s for s in scored if s[0] >= threshold), key=lambda s: (-s[0], s[1]))
            if scored:
                found[i] = scored
        return found


def _lsh_index(threshold: float, num_perm: int) -> MinHashLSH:
    """An LSH index that proposes pairs somewhat below `threshold`, weighted towards recall.

    Extra candidates cost a little time and no precision (they are confirmed exactly),
    while a pair LSH misses is lost. datasketch cannot band for thresholds near 0 or 1,
    hence the clamp.
    """
    lsh_threshold = min(max(threshold - 0.1, 0.1), 0.9)
    return MinHashLSH(threshold=lsh_threshold, num_perm=num_perm, weights=(0.2, 0.8))


class UnionFind:
    """Groups of records joined by pairwise links (a ~ b, b ~ c → {a, b, c})."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        """The smallest-rooted representative of x's group."""
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        """Join a's and b's groups."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        """Every group of two or more, each sorted, ordered by first member."""
        members: dict[int, list[int]] = defaultdict(list)
        for x in self.parent:
            members[self.find(x)].append(x)
        return sorted(sorted(g) for g in members.values() if len(g) > 1)
