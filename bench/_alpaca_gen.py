"""A synthetic Alpaca file for `bench/datachecks.py`: realistic lengths, varied text, and a
known set of planted exact and near duplicates (so recall is measurable).

Text is drawn word by word from a Zipf-distributed vocabulary of ~20k pseudo-words with a
few hundred frequent function words on top, so common bigrams recur across records (as
"of the" does in real data) while no two records share a template: LSH meets the
background collisions it meets on real data. Lengths follow Alpaca's: instructions of 4–30
words, an `input` on 40% of records (10–120 words), outputs lognormal around 60 words
(capped at 600). 5% of records are Chinese (words drawn by their frequency in jieba's bundled
dictionary).

Planted: `exact` copies (case and punctuation changed, which the checks normalise away)
and `near` copies whose answer has a few words substituted, inserted or deleted (the
question unchanged, so the near_duplicate check's "same question, same answer" rule holds)
— each pair (original, copy) is listed in the returned `planted` dict.

`generate_templated` writes the other shape real instruction data takes: every record the
same long instruction wrapper around a short slot and a short answer (word-bigram Jaccard
≈ 0.4 between two records: below the threshold, yet each LSH band made of template
shingles only is shared by a large part of the file), with the same planted copies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou", "ee")]
_FUNCTION = ("the of and to a in is that for it as with was on be by this are or from at an which "
             "can you not have but we they more one all their will there so if about what when your "
             "also into use than these other how some its may first most only time like over such "
             "make each many then them would our well way even new because any used between both").split()


def _vocabulary(rng: np.random.Generator, size: int = 20_000) -> list[str]:
    words = set()
    while len(words) < size:
        n = int(rng.integers(1, 4))
        words.add("".join(_SYLLABLES[k] for k in rng.integers(0, len(_SYLLABLES), n)))
    pseudo = sorted(words)
    rng.shuffle(pseudo)
    return _FUNCTION + pseudo


def _chinese_words(limit: int = 60_000) -> tuple[np.ndarray, np.ndarray]:
    """The `limit` most frequent words of jieba's bundled dictionary and their counts."""
    import jieba

    rows = []
    with open(Path(jieba.__file__).parent / "dict.txt", encoding="utf-8") as f:
        for line in f:
            word, freq, *_ = line.split()
            rows.append((int(freq), word))
    rows.sort(reverse=True)
    rows = rows[:limit]
    return np.array([w for _, w in rows], dtype=object), np.array([c for c, _ in rows], dtype=float)


class _Text:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.vocab = np.array(_vocabulary(self.rng))
        ranks = np.arange(1, len(self.vocab) + 1)
        p = 1.0 / ranks**1.07
        self.p = p / p.sum()
        han, freq = _chinese_words()
        self.han, self.ph = han, freq / freq.sum()

    def _draw(self, pool: str, n: int) -> np.ndarray:
        """`n` tokens from a pre-drawn Zipf stream (one `choice` per 1M tokens, not per text)."""
        stream, at = getattr(self, pool, (np.empty(0, dtype=object), 0))
        if at + n > len(stream):
            values, p = (self.vocab, self.p) if pool == "_words" else (self.han, self.ph)
            stream, at = self.rng.choice(values, size=max(1_000_000, n), p=p).astype(object), 0
        setattr(self, pool, (stream, at + n))
        return stream[at : at + n]

    def words(self, n: int) -> str:
        tokens = list(self._draw("_words", n))
        ends = np.flatnonzero(self.rng.random(n) < 0.1)
        for k in ends:
            tokens[k] += "."
        for k in [0, *(ends + 1)]:
            if k < n:
                tokens[k] = tokens[k].capitalize()
        return " ".join(tokens).rstrip(".") + "."

    def han_text(self, n: int) -> str:
        """About `n` characters of Chinese: words drawn by their frequency in jieba's dictionary."""
        chars = list(self._draw("_han", max(1, n // 2)))
        for k in np.flatnonzero(self.rng.random(len(chars)) < 0.1):
            chars[k] += "，" if self.rng.random() < 0.6 else "。"
        return "".join(chars).rstrip("。，") + "。"

    def record(self) -> dict:
        rng = self.rng
        if rng.random() < 0.05:
            return {"instruction": self.han_text(int(rng.integers(8, 40))), "input": "",
                    "output": self.han_text(min(int(rng.lognormal(np.log(90), 0.8)), 900) + 5)}
        return {"instruction": self.words(int(rng.integers(4, 31))).rstrip(".") + "?",
                "input": self.words(int(rng.integers(10, 121))) if rng.random() < 0.4 else "",
                "output": self.words(min(int(rng.lognormal(np.log(60), 0.8)), 600) + 3)}

    def near_copy(self, record: dict) -> dict:
        """The record with 1 edit per ~25 words of its answer (substitution, insertion or
        deletion of one word): word-bigram Jaccard ≈ 0.8, well above the 0.7 threshold."""
        rng = self.rng
        out = record["output"]
        cjk = not out.isascii()
        tokens = list(out) if cjk else out.split()
        for _ in range(max(1, len(tokens) // (60 if cjk else 25))):
            k = int(rng.integers(0, len(tokens)))
            new = self.han_text(2)[0] if cjk else str(rng.choice(self.vocab[len(_FUNCTION):], p=None))
            op = rng.integers(0, 3)
            if op == 0:
                tokens[k] = new
            elif op == 1:
                tokens.insert(k, new)
            elif len(tokens) > 3:
                del tokens[k]
        return {**record, "output": ("" if cjk else " ").join(tokens)}


def exact_copy(record: dict) -> dict:
    """The record with case and trailing punctuation changed (the same after normalising)."""
    return {k: (v.upper().rstrip(".?。") + "!" if v else v) if k != "input" else v for k, v in record.items()}


TEMPLATE = ("Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request, and keep the response short and to the "
            "point. Instruction:")


class _Templated(_Text):
    def record(self) -> dict:
        rng = self.rng
        return {"instruction": f"{TEMPLATE} {self.words(int(rng.integers(6, 13))).rstrip('.')}?", "input": "",
                "output": self.words(int(rng.integers(10, 25)))}


def generate_templated(path: Path, n: int, *, seed: int = 0) -> dict:
    """`generate`, with every record the same long wrapper around a short slot and answer."""
    return generate(path, n, seed=seed, text=_Templated(seed))


def generate(path: Path, n: int, *, seed: int = 0, near_share: float = 0.01, exact_share: float = 0.005,
             text: _Text | None = None) -> dict:
    """Write `n` Alpaca records to `path` (JSONL); return the planted pairs by kind,
    as (original index, copy index) lists."""
    text = text or _Text(seed)
    rng = np.random.default_rng(seed + 1)
    n_near, n_exact = int(n * near_share), int(n * exact_share)
    n_base = n - n_near - n_exact
    planted: dict[str, list[list[int]]] = {"near": [], "exact": []}
    # Copies land after their originals, at random later positions (across any block boundary).
    kinds = np.array(["base"] * n_base + ["near"] * n_near + ["exact"] * n_exact)
    rng.shuffle(kinds[1:])
    pool: list[tuple[int, dict]] = []  # a reservoir of originals a copy may copy (bounded memory at 1M)
    seen = 0
    with open(path, "w", encoding="utf-8") as f:
        for i, kind in enumerate(kinds):
            if kind == "base" or not pool:
                record = text.record()
                seen += 1
                if len(pool) < 20_000:
                    pool.append((i, record))
                elif (k := int(rng.integers(0, seen))) < len(pool):
                    pool[k] = (i, record)
            else:
                j, source = pool[int(rng.integers(0, len(pool)))]
                record = text.near_copy(source) if kind == "near" else exact_copy(source)
                planted[str(kind)].append([j, i])
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return planted
