"""The bundled synthetic pretraining corpus for the offline tiny base.

A seeded generator, not a data file: the same seed always yields the same documents,
so a tiny base is reproducible anywhere without a download. It mixes three kinds of
text, each chosen for what LoRA tasks later need from the base:

- English-like sentences about people, places, animals, things and numbers, so the
  tokenizer learns whole-word tokens and the model a little grammar;
- reading-comprehension and word-manipulation Q/A in the plain chat format
  (`User:…</s>\\n Assistant:…</s>\\n `), so the base already copies words out of a prompt
  and stops at `</s>` (what an adapter's answer-only training builds on);
- small arithmetic and multi-turn conversations, so numbers and later turns are not
  foreign.

Instructions deliberately *absent* here (e.g. "the second word", "reverse these
words") are what tests teach with a LoRA, so a base's exact match on them starts near 0.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from evaluators.records import Conversation, Message, render_plain

NAMES = (
    "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack",
    "Karen", "Liam", "Maria", "Noah", "Olivia", "Peter", "Quinn", "Rosa", "Sam", "Tara",
    "Umar", "Vera", "Will", "Xena", "Yusuf", "Zoe", "Anna", "Ben", "Clara", "Dan",
    "Eva", "Felix", "Gina", "Hugo", "Ivy", "Jonas", "Kira", "Leo", "Mila", "Nina",
)
CITIES = (
    "Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Oslo", "Lisbon", "Dublin",
    "Athens", "Warsaw", "Cairo", "Tokyo", "Seoul", "Lima", "Quito", "Delhi", "Sydney", "Boston",
)
ANIMALS = (
    "cat", "dog", "horse", "bird", "fish", "mouse", "lion", "tiger", "bear", "wolf",
    "fox", "owl", "duck", "goat", "sheep", "cow", "frog", "snake", "rabbit", "deer",
)
THINGS = (
    "book", "lamp", "chair", "table", "cup", "door", "window", "car", "boat", "tree",
    "stone", "river", "apple", "bread", "clock", "phone", "key", "bag", "shoe", "hat",
    "ball", "box", "pen", "road", "song", "letter", "garden", "house", "bridge", "coin",
)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLORS = ("red", "blue", "green", "yellow", "black", "white", "brown", "pink", "gray", "orange")
ADJECTIVES = (
    "big", "small", "old", "new", "happy", "quiet", "fast", "slow", "bright", "dark",
    "warm", "cold", "soft", "loud", "clean", "tall", "short", "young", "kind", "strange",
)
VERBS = (
    "sees", "likes", "finds", "takes", "moves", "opens", "holds", "wants", "paints", "reads",
    "builds", "carries", "watches", "follows", "cleans", "sells", "buys", "draws", "keeps", "loses",
)
JOBS = ("teacher", "doctor", "farmer", "baker", "pilot", "driver", "painter", "writer", "singer", "nurse")

#: Words for word-manipulation prompts: one BPE token each once the tokenizer has seen the corpus.
WORDS = ANIMALS + THINGS + COLORS + ADJECTIVES


def _sentence(rng: random.Random) -> str:
    name, name2 = rng.sample(NAMES, 2)
    kind = rng.randrange(8)
    if kind == 0:
        return f"{name} lives in {rng.choice(CITIES)}."
    if kind == 1:
        return f"The {rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)} {rng.choice(VERBS)} the {rng.choice(THINGS)}."
    if kind == 2:
        n = rng.randint(2, 20)
        return f"{name} has {n} {rng.choice(THINGS)}s and {rng.choice(NUMBER_WORDS[2:])} {rng.choice(THINGS)}s."
    if kind == 3:
        return f"{name} is a {rng.choice(JOBS)} and {name2} is a {rng.choice(JOBS)}."
    if kind == 4:
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        return f"{a} plus {b} is {a + b}."
    if kind == 5:
        return f"The {rng.choice(THINGS)} is {rng.choice(COLORS)} and very {rng.choice(ADJECTIVES)}."
    if kind == 6:
        return f"{name} {rng.choice(VERBS)} a {rng.choice(ADJECTIVES)} {rng.choice(THINGS)} in {rng.choice(CITIES)}."
    return f"{name} and {name2} went to {rng.choice(CITIES)} with a {rng.choice(ANIMALS)}."


def _prose(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))


def _qa_turn(rng: random.Random) -> tuple[str, str]:
    """One (question, answer) pair; the answer is always recoverable from the question."""
    kind = rng.randrange(9)
    words = rng.sample(WORDS, rng.randint(2, 5))
    name = rng.choice(NAMES)
    if kind == 0:
        city = rng.choice(CITIES)
        return f"{name} lives in {city}. Where does {name} live?", city
    if kind == 1:
        job = rng.choice(JOBS)
        return f"{name} is a {job}. What is {name}'s job?", job
    if kind == 2:
        color, thing = rng.choice(COLORS), rng.choice(THINGS)
        return f"{name} has a {color} {thing}. What color is the {thing}?", color
    if kind == 3:
        return f"Repeat: {' '.join(words)}", " ".join(words)
    if kind == 4:
        return f"What is the first word in: {' '.join(words)}?", words[0]
    if kind == 5:
        return f"What is the last word in: {' '.join(words)}?", words[-1]
    if kind == 6:
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        return f"What is {a} plus {b}?", str(a + b)
    if kind == 7:
        return f"How many words are in: {' '.join(words)}?", str(len(words))
    return f"Say the word {words[0]}.", words[0]


def _conversation(rng: random.Random) -> str:
    turns: list[Message] = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        q, a = _qa_turn(rng)
        turns += [Message("user", q), Message("assistant", a)]
    return render_plain(Conversation(messages=tuple(turns)))


def documents(seed: int = 0) -> Iterator[str]:
    """An endless, seeded stream of corpus documents (prose or plain-format chats).

    The same seed gives the same stream; about 70% of the documents are chats.
    """
    rng = random.Random(seed)
    while True:
        yield _conversation(rng) if rng.random() < 0.7 else _prose(rng)


def corpus(n_documents: int, seed: int = 0) -> list[str]:
    """The first `n_documents` documents of `documents(seed)`."""
    stream = documents(seed)
    return [next(stream) for _ in range(n_documents)]


#: Rule-based word tasks the corpus never shows: a base starts near 0 exact match on
#: them, and a LoRA that learns the rule answers *unseen* word lists (held-out records).
#: "count_words" is learnable on the "small" base in seconds (it builds on the corpus's
#: word counting); the copying tasks need a base pretrained past the point where copying
#: emerges (~700+ steps), so here they serve as arbitrary training data.
WORD_TASKS = {
    "count_words": ("Count the words, answer in letters: {words}", lambda w: NUMBER_WORDS[len(w)]),
    "second_word": ("Which word comes second in: {words}?", lambda w: w[1]),
    "reverse": ("Reverse the order of: {words}", lambda w: " ".join(reversed(w))),
}


def word_task(kind: str, n: int, seed: int = 0, *, min_words: int = 3, max_words: int = 5) -> list[Conversation]:
    """`n` single-turn `Conversation`s of the rule-based word task `kind` (see `WORD_TASKS`).

    Word lists are drawn without repetition within a record from `WORDS`; different
    seeds give (almost surely) disjoint lists, which is how tests build held-out sets.
    """
    if kind not in WORD_TASKS:
        raise ValueError(f"word task {kind!r}: expected one of {sorted(WORD_TASKS)}")
    template, answer = WORD_TASKS[kind]
    rng = random.Random(f"{kind}:{seed}")
    out = []
    for _ in range(n):
        words = rng.sample(WORDS, rng.randint(min_words, max_words))
        prompt = template.format(words=" ".join(words))
        out.append(Conversation(messages=(Message("user", prompt), Message("assistant", answer(words)))))
    return out
