"""Near-duplicate search at scale: vectorised MinHash, LSH band keys, candidate pairs.

Each text becomes the set of hashes of its word shingles (`_text.shingles`, hashed instead
of joined); its MinHash sketch is the minimum of `rows × bands` hash functions over that
set, and a band key is one 64-bit hash of `rows` consecutive minima. Two texts sharing any
band key are a candidate pair, unless the low bytes of their minima (a b-bit MinHash
signature) put their Jaccard clearly below the threshold. Only the band keys and that
signature are kept (`bands` uint64 and `bands × rows` bytes per text), so a million texts
take ~300 MB, not the ~1 KB per text of a `datasketch.MinHash`.

Written by hand rather than with `datasketch.MinHash` because that computes a Mersenne-prime
modulus per shingle and permutation in uint64 (and per-text Python objects); the family here
is `(a·h + b) mod 2³²` over 32-bit shingle hashes (a odd, so each is a permutation of the
32-bit values), in numpy's uint32 lanes. Its recall against datasketch's on the same
records is measured by `bench/datachecks.py`. The banding itself is datasketch's: `lsh_shape` takes
`(bands, rows)` from `datasketch.MinHashLSH` for the same threshold, num_perm and weights.
LSH only proposes: every candidate is confirmed by the exact Jaccard of the shingle sets.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

_MIX = np.uint64(0x9E3779B97F4A7C15)
_token_cache: dict[str, int] = {}


def _token_hashes(tokens: list[str]) -> np.ndarray:
    """64-bit hashes of `tokens` (blake2b, so the same in every process and run), through a
    per-process cache: text repeats its words, so most tokens are dictionary look-ups."""
    cache = _token_cache
    if len(cache) > 2_000_000:  # bounded: a worker's cache never grows with N
        cache.clear()
    for token in set(tokens).difference(cache):
        cache[token] = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    return np.fromiter(map(cache.__getitem__, tokens), dtype=np.uint64, count=len(tokens))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shingle_hashes(token_lists: Sequence[list[str]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The hashed `size`-shingles of every token list, concatenated, and each list's start
    offset (len + 1 entries). A list of `size` tokens or fewer is one shingle; an empty one
    none — as `_text.shingles`."""
    flat, first, counts = token_windows(token_lists)
    return window_shingles(flat, first, counts, size)


def token_windows(token_lists: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The token hashes of every list, concatenated, with each list's first position and
    length in them: windows that `window_shingles` reads (a prefix of a list is a window too)."""
    counts = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    flat = _token_hashes([t for tokens in token_lists for t in tokens])
    return flat, np.cumsum(counts) - counts, counts


def window_shingles(flat: np.ndarray, first: np.ndarray, counts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`shingle_hashes` of the token windows `flat[first[i] : first[i] + counts[i]]`."""
    counts = np.asarray(counts, dtype=np.int64)
    n_shingles = np.where(counts == 0, 0, np.maximum(counts - size + 1, 1))
    out_starts = np.concatenate([[0], np.cumsum(n_shingles)])
    # Shingle k of window i starts at token first[i] + k and spans min(size, count) tokens.
    owner = np.repeat(np.arange(len(counts)), n_shingles)
    start = np.asarray(first, dtype=np.int64)[owner] + (np.arange(out_starts[-1]) - out_starts[owner])
    span = np.minimum(counts[owner], size)
    with np.errstate(over="ignore"):
        h = flat[start] if len(start) else np.empty(0, dtype=np.uint64)
        for k in range(1, size):
            more = span > k
            h = np.where(more, _mix(h * _MIX + flat[np.where(more, start + k, 0)]) if len(start) else h, h)
        h = _mix(h + span.astype(np.uint64))
    return h, out_starts


class MinHasher:
    """Band keys of shingle-hash sets under one seeded family of `bands × rows` hashes."""

    def __init__(self, *, bands: int, rows: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        n = bands * rows
        self.bands, self.rows = bands, rows
        self.a = rng.integers(0, 2**31, size=n, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        self.b = rng.integers(0, 2**32, size=n, dtype=np.uint32)
        self.band_mult = rng.integers(0, 2**63, size=rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)

    def sketch(self, hashes: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(texts, bands) uint64 band keys (all-zero rows for texts with no shingles) and the
        (texts, bands × rows) uint8 signature: the low byte of every minimum, a b-bit MinHash
        from which `plausible` reads the Jaccard of two texts."""
        n = len(starts) - 1
        hashes = (hashes >> np.uint64(32)).astype(np.uint32)  # the high half of a well-mixed hash
        keys = np.zeros((n, self.bands), dtype=np.uint64)
        signature = np.zeros((n, self.bands * self.rows), dtype=np.uint8)
        sizes = np.diff(starts)
        # Chunks of ~16k shingles keep the (hashes × shingles) matrix near 8 MB, in cache; a
        # longer text is taken in windows of that size (else one 50 MB record alone would
        # make a matrix of 128 × 50M minima).
        chunk: list[int] = []
        total = 0
        for i in np.flatnonzero(sizes > 0).tolist():
            if sizes[i] > _CHUNK_SHINGLES:
                self._fill_long(keys, signature, i, hashes, starts)
                continue
            chunk.append(i)
            total += int(sizes[i])
            if total >= _CHUNK_SHINGLES:
                self._fill(keys, signature, chunk, hashes, starts)
                chunk, total = [], 0
        if chunk:
            self._fill(keys, signature, chunk, hashes, starts)
        return keys, signature

    def _permuted(self, hashes: np.ndarray) -> np.ndarray:
        """(hashes × shingles) uint32: every hash of the family applied to every shingle."""
        with np.errstate(over="ignore"):
            # 32-bit lanes: half the memory traffic of uint64 over the (hashes × shingles) matrix,
            # laid out so that both the arithmetic and the per-text minimum run along contiguous
            # shingles (~9x faster than shingles × hashes, whose reduceat strides across rows).
            values = np.multiply(self.a[:, None], hashes[None, :])
            values += self.b[:, None]
        return values

    def _fill_long(self, keys: np.ndarray, signature: np.ndarray, i: int, hashes: np.ndarray, starts: np.ndarray) -> None:
        lo, hi = int(starts[i]), int(starts[i + 1])
        minima = None
        for at in range(lo, hi, _CHUNK_SHINGLES):
            window = self._permuted(hashes[at : min(at + _CHUNK_SHINGLES, hi)]).min(axis=1)
            minima = window if minima is None else np.minimum(minima, window)
        self._store(keys, signature, np.array([i]), minima[None, :])

    def _fill(self, keys: np.ndarray, signature: np.ndarray, texts: list[int], hashes: np.ndarray,
              starts: np.ndarray) -> None:
        idx = np.asarray(texts)
        lo, hi = starts[idx], starts[idx + 1]
        sel = np.concatenate([np.arange(a, b) for a, b in zip(lo.tolist(), hi.tolist())])
        offsets = np.concatenate([[0], np.cumsum(hi - lo)[:-1]])
        values = self._permuted(hashes[sel])
        minima = np.ascontiguousarray(np.minimum.reduceat(values, offsets, axis=1).T)  # (texts, bands × rows)
        self._store(keys, signature, idx, minima)

    def _store(self, keys: np.ndarray, signature: np.ndarray, idx: np.ndarray, minima: np.ndarray) -> None:
        """Texts `idx`'s signature bytes and band keys from their minima (texts, bands × rows)."""
        signature[idx] = minima.astype(np.uint8)
        with np.errstate(over="ignore"):
            per_band = minima.reshape(len(idx), self.bands, self.rows).astype(np.uint64) * self.band_mult
            keys[idx] = _mix(per_band.sum(axis=2, dtype=np.uint64)) | np.uint64(1)  # never 0: 0 means "no shingles"


#: Shingles per (hashes × shingles) block of `MinHasher.sketch`.
_CHUNK_SHINGLES = 16_384


def lsh_shape(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for a search that proposes pairs somewhat below `threshold`, weighted
    towards recall (datasketch's optimum for false-positive / false-negative weights 0.2 /
    0.8). Extra candidates cost a little time and no precision (they are confirmed exactly);
    a pair LSH misses is lost. datasketch cannot band near 0 or 1, hence the clamp."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=min(max(threshold - 0.1, 0.1), 0.9), num_perm=num_perm, weights=(0.2, 0.8))
    return lsh.b, lsh.r


#: A bucket with more members than this is a shared template, not a cluster of copies:
#: each member is paired with its BUCKET_CAP first (lowest-index) members only, so a bucket of
#: n costs n × BUCKET_CAP pairs instead of n²/2.
BUCKET_CAP = 16


def candidate_pairs(keys: np.ndarray, ids: np.ndarray | None = None, *, signature: np.ndarray | None = None,
                    threshold: float = 0.0, cap: int = BUCKET_CAP) -> np.ndarray:
    """Distinct (i, j), i < j, of rows of `keys` (restricted to `ids`) sharing a band key;
    rows with no shingles (key 0) never pair. Returns an (m, 2) int64 array, sorted.

    Work stays linear in the rows when many share a key (a long template common to
    thousands of records): a bucket of more than `cap` pairs each member with the bucket's
    `cap` lowest rows only. Two near-copies inside such a bucket still meet wherever they
    share a band key the template does not (their own words), or through a representative
    both are joined to. With a `signature` (`MinHasher.sketch`), pairs whose estimated
    Jaccard is clearly below `threshold` (`plausible`) are dropped here, vectorised, before
    any exact comparison."""
    rows = np.arange(len(keys)) if ids is None else np.asarray(ids, dtype=np.int64)
    found: list[np.ndarray] = []

    def keep(pairs: np.ndarray) -> None:
        if signature is not None and len(pairs):
            pairs = pairs[plausible(signature, pairs, threshold)]
        found.append(pairs)

    for band in range(keys.shape[1] if len(keys) else 0):
        k = keys[rows, band]
        live = k != 0
        r, k = rows[live], k[live]
        order = np.argsort(k, kind="stable")
        r, k = r[order], k[order]
        if len(k) < 2:
            continue
        boundaries = np.flatnonzero(np.diff(k)) + 1
        starts = np.concatenate([[0], boundaries])
        lengths = np.diff(np.concatenate([starts, [len(k)]]))
        small: list[np.ndarray] = []
        for s, n in zip(starts[lengths > 1].tolist(), lengths[lengths > 1].tolist()):
            members = np.sort(r[s : s + n])
            a, b = np.triu_indices(min(n, cap), 1)
            small.append(np.stack([members[a], members[b]], axis=1))
            for lo in range(cap, n, 8192):  # the rest of a template bucket, against its first `cap`
                rest = members[lo : lo + 8192]
                keep(np.stack([np.tile(members[:cap], len(rest)), np.repeat(rest, cap)], axis=1))
        if small:
            keep(np.concatenate(small))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def plausible(signature: np.ndarray, pairs: np.ndarray, threshold: float) -> np.ndarray:
    """Which `pairs` may have a Jaccard ≥ `threshold`, by their b-bit MinHash signatures:
    a pair at exactly the threshold matches in a share p = t + (1 - t)/256 of its k
    bytes (equal minima, or different ones whose low bytes agree); a pair matching in
    fewer than p − 4.5·√(p(1 − p)/k) is dropped (a pair at the threshold is lost with
    probability ~3·10⁻⁶; one above it, less)."""
    k = signature.shape[1]
    p = threshold + (1 - threshold) / 256
    floor = (p - 4.5 * np.sqrt(p * (1 - p) / k)) * k
    out = np.empty(len(pairs), dtype=bool)
    for lo in range(0, len(pairs), 65_536):  # bounded temporaries: 65k pairs × k bytes
        chunk = pairs[lo : lo + 65_536]
        out[lo : lo + 65_536] = (signature[chunk[:, 0]] == signature[chunk[:, 1]]).sum(axis=1) >= floor
    return out


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
