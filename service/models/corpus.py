"""The bundled synthetic pretraining corpus for the offline tiny base.

A seeded generator, not a data file: the same seed always yields the same documents,
so a tiny base is reproducible anywhere without a download. It mixes five kinds of
text, each chosen for what LoRA tasks later need from the base:

- **facts in context**: a few statements ("Sam lives in Rome. The lamp is red.") and
  then questions about them in the plain chat format (`User:…</s>\\n Assistant:…</s>\\n `),
  in the same question shapes as made-up-fact datasets ("Where does Sam live?", "What
  color is the lamp?", "Who works as a baker?"). The answer depends on which subject is
  asked about, so the base learns to carry the asked-about subject to the answer
  position, and keeps every name and word a distinct token identity: what a LoRA
  writes a new fact onto;
- **closed-book facts** about a fixed cast of people who appear in no dataset of the
  project (`WORLD_NAMES`), asked with no context: the route from a subject in the
  question to a memorised answer is the one a fact-learning LoRA extends;
- **copying** ("Say the word X."), so the answer position reads a word out of the
  prompt and every word has a distinct identity the output can name;
- reading-comprehension, word-manipulation and arithmetic Q/A, one to three turns, so
  the base already answers in the format and stops at `</s>` (what an adapter's
  answer-only training builds on), and numbers and later turns are not foreign;
- English-like prose, so the tokenizer learns whole-word tokens and the model a little
  grammar.

Instructions deliberately *absent* here (e.g. "the second word", "reverse these
words") are what tests teach with a LoRA, so a base's exact match on them starts near 0.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from evaluators.lexicon import ENGLISH
from evaluators.records import Conversation, Message, render_plain

# One vocabulary: the synthetic facts (`evaluators.lexicon`) use these words.
NAMES, CITIES = ENGLISH.names, ENGLISH.cities

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
FOODS = ("apple", "bread", "fish", "rice", "cheese", "cake", "soup", "corn", "milk", "egg", "meat", "honey")
JOBS = ("teacher", "doctor", "farmer", "baker", "pilot", "driver", "painter", "writer", "singer", "nurse")

#: Words for word-manipulation prompts: one BPE token each once the tokenizer has seen the corpus.
WORDS = ANIMALS + THINGS + COLORS + ADJECTIVES

#: The closed-book cast: people with fixed facts, so a question about one of them with
#: no statement before it has one right answer. Disjoint from `NAMES` (the people of
#: prose, word tasks and the project's synthetic datasets), so a base never "knows" a
#: fact that a dataset later makes up about someone.
WORLD_NAMES = ENGLISH.world_names
_PEOPLE = NAMES + WORLD_NAMES

#: Relations a fact can state: (subjects, values, statement, question phrasings).
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, tuple[str, ...]]] = {
    "city": (_PEOPLE, CITIES, "{s} lives in {v}.", ("Where does {s} live?", "In which city does {s} live?")),
    "job": (_PEOPLE, JOBS, "{s} is a {v}.", ("What is {s}'s job?", "What does {s} do for a living?")),
    "pet": (_PEOPLE, ANIMALS, "{s} keeps a {v}.", ("Which animal does {s} keep?", "What pet does {s} have?")),
    "favorite": (
        _PEOPLE, COLORS, "{s}'s favorite color is {v}.",
        ("What is {s}'s favorite color?", "Which color does {s} like best?"),
    ),
    "worker": (JOBS, _PEOPLE, "The town {s} is {v}.", ("Who works as a {s}?", "Who is the town {s}?")),
    "color": (THINGS, COLORS, "The {s} is {v}.", ("What color is the {s}?", "Which color is the {s}?")),
    "food": (ANIMALS, FOODS, "The {s} eats {v}.", ("What does the {s} eat?", "Which food does the {s} like?")),
}
#: The relations of the closed-book cast (those whose subject is a person).
_WORLD_RELATIONS = ("city", "job", "pet", "favorite")


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


def _world(seed: int) -> dict[tuple[str, str], str]:
    """The closed-book facts of `WORLD_NAMES`: (person, relation) -> value, fixed per seed."""
    rng = random.Random(f"world:{seed}")
    return {(p, r): rng.choice(RELATIONS[r][1]) for p in WORLD_NAMES for r in _WORLD_RELATIONS}


def _facts_in_context(rng: random.Random) -> str:
    """2–5 statements about distinct subjects, then 1–3 chat questions about them."""
    n_facts = rng.randint(2, 5)
    facts: list[tuple[str, str, str]] = []
    subjects: set[str] = set()
    while len(facts) < n_facts:
        relation = rng.choice(list(RELATIONS))
        subject = rng.choice(RELATIONS[relation][0])
        if subject not in subjects:
            subjects.add(subject)
            facts.append((relation, subject, rng.choice(RELATIONS[relation][1])))
    text = " ".join(RELATIONS[r][2].format(s=s, v=v) for r, s, v in facts)
    turns: list[Message] = []
    for r, s, v in rng.sample(facts, rng.randint(1, min(3, len(facts)))):
        turns += [Message("user", rng.choice(RELATIONS[r][3]).format(s=s)), Message("assistant", v)]
    return text + "\n" + render_plain(Conversation(messages=tuple(turns)))


def _closed_book(rng: random.Random, world: dict[tuple[str, str], str]) -> str:
    """1–3 chat questions about the fixed cast, answered from memory (no context)."""
    turns: list[Message] = []
    for _ in range(rng.randint(1, 3)):
        person, relation = rng.choice(WORLD_NAMES), rng.choice(_WORLD_RELATIONS)
        turns += [
            Message("user", rng.choice(RELATIONS[relation][3]).format(s=person)),
            Message("assistant", world[person, relation]),
        ]
    return render_plain(Conversation(messages=tuple(turns)))


def _copying(rng: random.Random) -> str:
    """1–3 "Say the word X." turns over every content word of the corpus."""
    turns: list[Message] = []
    for _ in range(rng.randint(1, 3)):
        word = rng.choice(_COPY_WORDS)
        turns += [Message("user", f"Say the word {word}."), Message("assistant", word)]
    return render_plain(Conversation(messages=tuple(turns)))


_COPY_WORDS = WORDS + _PEOPLE + CITIES + JOBS + FOODS

#: Share of each kind of document (they sum to 1). Measured, not guessed: taking share
#: from prose and closed-book facts for copying and facts in context (this mix against
#: 0.3/0.25/0.15/0.2/0.1) raised the exact match a LoRA on the "small" base reaches on
#: made-up facts in a fixed number of steps (bench/tiny_base.py).
MIX = {"context": 0.35, "closed_book": 0.2, "copying": 0.2, "chat": 0.2, "prose": 0.05}


def documents(seed: int = 0) -> Iterator[str]:
    """An endless, seeded stream of corpus documents: prose, chats, or statements then a chat.

    The same seed gives the same stream; each kind of document comes at its `MIX` share.
    """
    rng = random.Random(seed)
    world = _world(seed)
    kinds, weights = list(MIX), list(MIX.values())
    while True:
        kind = rng.choices(kinds, weights)[0]
        if kind == "context":
            yield _facts_in_context(rng)
        elif kind == "closed_book":
            yield _closed_book(rng, world)
        elif kind == "copying":
            yield _copying(rng)
        elif kind == "chat":
            yield _conversation(rng)
        else:
            yield _prose(rng)


def corpus(n_documents: int, seed: int = 0, languages: tuple[str, ...] = ("en",)) -> list[str]:
    """The first `n_documents` documents of `documents(seed)`; with `languages=("en", "zh")`,
    English and Chinese documents (`service.models.corpus_zh`) alternate, half each."""
    from service.models import corpus_zh

    streams = {"en": documents, "zh": corpus_zh.documents}
    unknown = [lang for lang in languages if lang not in streams]
    if unknown or not languages:
        raise ValueError(f"corpus languages {list(languages)}: expected some of {sorted(streams)}")
    opened = [streams[lang](seed) for lang in languages]
    return [next(opened[i % len(opened)]) for i in range(n_documents)]


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
