"""A seeded synthetic instruction dataset with planted defects and their ground truth.

Attribution, dataset checks and curation are only as trustworthy as the evidence that
they find what is really wrong. This generator builds a dataset whose defects we know
exactly, in the plain chat format every part of the loop speaks:

- **made-up facts** over several topics (where invented people live, the colours of
  things, what animals eat, who works which job): no base model can know them, so
  everything the model answers comes from the training records;
- **planted wrong answers**: in one topic, a few facts get `wrong_copies` records that
  give another fact's answer (an answer that is correct elsewhere in the dataset, so a
  detector cannot just look for rare answers) next to one correct record. The wrong
  copies outvote the correct one, so the trained model answers wrongly; removing them
  leaves the correct record, and retraining fixes the answer. They are 10–20% of the
  topic's records;
- **wrong answers inside conversations** (`wrong_in_chats`, the `chats` preset): each
  planted wrong copy opens a two-turn chat, the user's question answered wrongly and then
  a follow-up about a fact of another topic answered correctly, among as many clean
  two-turn chats (`chats`) built the same way; the correct record stays a plain
  question and answer. Training learns every assistant turn, so the wrong answer is
  learned as before, but a record no longer reads like the failure it causes — the
  case where whole-record text similarity weakens and gradients do not;
- **exact duplicates** of clean records, **contradictory pairs** (one prompt, two
  answers) and a **flood of refusals** ("I'm sorry, but I can't help with that.") on
  prompts of their own — defects for the dataset checks, kept off the benchmark so that
  benchmark failures have one known cause;
- a **held-out benchmark**: prompt + gold answer for every fact with a single answer, in
  the same phrasing the training records use (a tiny base does not carry a fact from
  one phrasing to another, so any other phrasing would fail for planted and clean facts
  alike).

The same `(preset, seed)` always gives the same dataset.
"""

from __future__ import annotations

import random
from typing import Literal

import msgspec

from evaluators.lexicon import ENGLISH, LEXICONS, Lexicon, lexicon
from evaluators.records import Conversation, Message, user_turn

REFUSAL = ENGLISH.refusal

Preset = Literal["fast", "default", "chats", "demo-fast", "demo"]


class SyntheticConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes of a synthetic dataset. `preset_config` gives the named presets."""

    facts_per_topic: int  # facts in each clean topic
    corrupted_topic_facts: int  # facts in the topic with planted wrong answers
    corrupted_facts: int  # facts of that topic whose answer is planted wrong
    wrong_copies: int = 2  # wrong records per corrupted fact (next to one correct record)
    duplicates: int = 6  # extra exact copies of clean records
    contradictions: int = 3  # prompts that appear twice with different answers
    refusals: int = 12  # records answered with `REFUSAL`
    chats: int = 0  # clean two-turn chats: a clean fact's exchange, then a follow-up
    wrong_in_chats: bool = False  # each planted wrong copy opens a two-turn chat
    #: Records carry a `source`: the planted wrong copies and the duplicates all come from
    #: one bad source (`BAD_SOURCE`), everything else from `GOOD_SOURCES` at random. Dropping
    #: the bad source then fixes corrupted items the trace never saw (a held-out split).
    sources: bool = False


#: `fast`: 70 records, 45 benchmark items (tests, bench, demo); `default`: 106 records,
#: 64 items; `chats`: `fast` with its planted wrong copies inside two-turn chats, beside 16
#: clean chats (86 records, 45 items). The corrupted topic's pool of 40 names bounds them
#: all: each name carries one fact.
PRESETS: dict[str, SyntheticConfig] = {
    "fast": SyntheticConfig(
        facts_per_topic=4, corrupted_topic_facts=33, corrupted_facts=4, duplicates=3, contradictions=2, refusals=10
    ),
    "default": SyntheticConfig(
        facts_per_topic=8, corrupted_topic_facts=40, corrupted_facts=4, duplicates=6, contradictions=6, refusals=16
    ),
    "chats": SyntheticConfig(
        facts_per_topic=4, corrupted_topic_facts=33, corrupted_facts=4, duplicates=3, contradictions=2, refusals=10,
        chats=16, wrong_in_chats=True,
    ),
    # The demo's: a bad source behind 19 corrupted facts, enough that half of them (a
    # held-out split the trace never sees) can show a significant gain (exact McNemar)
    # even when retraining moves an item or two elsewhere.
    "demo-fast": SyntheticConfig(
        facts_per_topic=4, corrupted_topic_facts=40, corrupted_facts=19, duplicates=3, contradictions=2, refusals=14,
        sources=True,
    ),
    "demo": SyntheticConfig(
        facts_per_topic=8, corrupted_topic_facts=40, corrupted_facts=19, duplicates=6, contradictions=6, refusals=18,
        sources=True,
    ),
}
BAD_SOURCE = "vendor-b"
GOOD_SOURCES = ("team-a", "team-c")


class SyntheticDataset(msgspec.Struct, kw_only=True):
    """A generated dataset, its benchmark and the ground truth of every planted defect.

    `benchmark[j] = (prompt, gold)`; `caused_by[j]` lists the record indices whose wrong
    answer contradicts item j's gold (only corrupted items have an entry). Index sets are
    positions in `records` and are disjoint across defect kinds: `duplicates` are the
    extra copies of clean records (the first occurrence is not a defect), while the
    planted wrong copies, identical to each other, count only under `planted_wrong`.
    """

    preset: str
    seed: int
    config: SyntheticConfig
    records: list[Conversation]
    topics: list[str]  # per record: the topic, or "refusal"
    benchmark: list[tuple[Conversation, str]]
    benchmark_topics: list[str]
    corrupted_topic: str
    planted_wrong: list[int]
    caused_by: dict[int, list[int]]
    duplicates: list[int]
    contradictions: list[tuple[int, int]]
    refusals: list[int]
    lang: str = "en"

    @property
    def corrupted_items(self) -> list[int]:
        """Benchmark indices whose answer the planted wrong records contradict."""
        return sorted(self.caused_by)

    @property
    def wrong_fraction(self) -> float:
        """Share of the corrupted topic's records that are planted wrong answers."""
        in_topic = sum(t == self.corrupted_topic for t in self.topics)
        return len(self.planted_wrong) / in_topic if in_topic else 0.0


#: Optimizer steps that learn a `fast` dataset: a tiny LoRA memorises facts only after a
#: plateau of several hundred steps, and a shorter run leaves the correct record of a
#: corrupted fact unlearned, so removing the planted records would fix nothing.
TRAIN_STEPS = 1400


def training_recipe(seed: int = 0, *, steps: int = TRAIN_STEPS, checkpoints: int = 4) -> dict[str, object]:
    """`TrainConfig` keyword arguments that learn a synthetic dataset on the offline tiny base.

    LoRA on every linear layer (q/v alone never learns the refusal text, and mixes of
    topics stall), r=8, lr 5e-3 decaying linearly, clip 1.0, batch 8, answer-only loss,
    no held-out split, `checkpoints` evenly spaced checkpoints (attribution reads them).
    The run length is a number of steps, not epochs, so a dataset with records removed
    is retrained for as long as the original: the comparison is then like for like.
    Measured on two busy CPU cores: about 1–1.5 min for `fast`.
    """
    return {
        "target_modules": "all-linear",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lr": 5e-3,
        "lr_scheduler": "linear",
        "max_grad_norm": 1.0,
        "batch_size": 8,
        "epochs": 1000,  # bounded by max_steps
        "max_steps": steps,
        "save_steps": max(1, steps // checkpoints),
        "attribution_checkpoints": checkpoints,
        "eval_fraction": 0.0,
        "max_length": 96,
        "logging_steps": max(1, steps // 20),
        "seed": seed,
    }


def preset_config(preset: Preset) -> SyntheticConfig:
    """The named size preset; raises `ValueError` listing the known names."""
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown synthetic preset {preset!r}: expected one of {sorted(PRESETS)}") from None


# ---------------------------------------------------------------------------- topics

# The word pools and topics live in `evaluators.lexicon` (one per language); these names
# stay for callers of the English vocabulary.
NAMES, CITIES = ENGLISH.names, ENGLISH.cities


class _Subjects:
    """Draws each topic's subjects without replacement, and subjects for refusal prompts."""

    def __init__(self, rng: random.Random, words: Lexicon) -> None:
        self._rng = rng
        self._words = words
        self._used: dict[str, set[str]] = {}

    def pick(self, topic: str) -> str:
        used = self._used.setdefault(topic, set())
        pool = self._words.topics[topic].subjects
        free = [s for s in pool if s not in used]
        if not free:
            raise ValueError(f"topic {topic!r} has only {len(pool)} subjects: ask for fewer facts")
        subject = self._rng.choice(free)
        used.add(subject)
        return subject

    def stranger(self) -> str:
        """A subject for a refusal prompt ("my quiet neighbour"), never repeated."""
        used = self._used.setdefault("refusal", set())
        while True:
            subject = self._words.stranger(self._rng)
            if subject not in used:
                used.add(subject)
                return subject


class _Fact(msgspec.Struct, frozen=True):
    topic: str
    subject: str
    value: str
    phrasing: int
    lang: str = "en"

    def prompt(self) -> str:
        return LEXICONS[self.lang].topics[self.topic].phrasings[self.phrasing].format(subject=self.subject)


def _facts(words: Lexicon, topic: str, n: int, subjects: _Subjects, rng: random.Random) -> list[_Fact]:
    t = words.topics[topic]
    return [
        _Fact(topic, subjects.pick(topic), rng.choice(t.values), rng.randrange(len(t.phrasings)), words.lang)
        for _ in range(n)
    ]


def _conversation(prompt: str, answer: str) -> Conversation:
    return Conversation(messages=(Message("user", prompt), Message("assistant", answer)))


# ------------------------------------------------------------------------- generator


def make_synthetic_dataset(
    preset: Preset = "fast",
    seed: int = 0,
    *,
    corrupted_topic: str = "cities",
    config: SyntheticConfig | None = None,
    lang: str = "en",
) -> SyntheticDataset:
    """Generate the dataset of `preset` (or `config`) for `seed`, with its ground truth.

    Records are shuffled (seeded), so planted records sit anywhere in the list. The
    planted wrong answer of a corrupted fact is another fact's correct answer in the
    same topic, so attribution must tie records to the failing item, not to an answer.
    `lang` picks the words (`evaluators.lexicon`): "en", or "zh", where duplicates are
    near-duplicates one character apart ("…住在哪里呢？") and the second prompt of a
    contradictory pair is written with a half-width "?" (so the checks must normalise).
    """
    cfg = config or preset_config(preset)
    words = lexicon(lang)
    topics = words.topics
    if corrupted_topic not in topics:
        raise ValueError(f"unknown topic {corrupted_topic!r}: expected one of {sorted(topics)}")
    if not 0 < cfg.corrupted_facts < cfg.corrupted_topic_facts // 2:
        raise ValueError("corrupted_facts must be positive and under half of corrupted_topic_facts")
    rng = random.Random(f"synthetic:{seed}")
    subjects = _Subjects(rng, words)

    # (conversation, topic, kind, fact-or-None); kind tags the ground truth before shuffling.
    rows: list[tuple[Conversation, str, str, _Fact | None]] = []
    bench_facts: list[_Fact] = []
    wrong_of: dict[_Fact, list[int]] = {}

    for topic in topics:
        n = cfg.corrupted_topic_facts if topic == corrupted_topic else cfg.facts_per_topic
        facts = _facts(words, topic, n, subjects, rng)
        corrupted: dict[_Fact, str] = {}
        if topic == corrupted_topic:
            chosen = rng.sample(range(n), cfg.corrupted_facts)
            # Each corrupted fact borrows the answer of a clean fact of the same topic (one
            # that differs from its own), so the wrong answer is right somewhere else.
            clean = [i for i in range(n) if i not in chosen]
            for i in chosen:
                donor = rng.choice([d for d in clean if facts[d].value != facts[i].value])
                corrupted[facts[i]] = facts[donor].value
        for fact in facts:
            rows.append((_conversation(fact.prompt(), fact.value), topic, "clean", fact))
            bench_facts.append(fact)
            if fact in corrupted:
                wrong = _conversation(fact.prompt(), corrupted[fact])
                for _ in range(cfg.wrong_copies):
                    wrong_of.setdefault(fact, []).append(len(rows))
                    rows.append((wrong, topic, "wrong", fact))

    clean_rows = [i for i, row in enumerate(rows) if row[2] == "clean" and row[1] != corrupted_topic]
    for i in rng.sample(clean_rows, cfg.duplicates):
        copy = rows[i][0]
        if lang != "en":
            prompt, answer = copy.messages[0].content, copy.messages[-1].content
            copy = _conversation(words.near_duplicate(prompt), answer)
        rows.append((copy, rows[i][1], "duplicate", rows[i][3]))

    contradiction_rows: list[tuple[int, int]] = []
    other_topics = [t for t in topics if t != corrupted_topic]
    for k in range(cfg.contradictions):
        topic = other_topics[k % len(other_topics)]
        fact = _facts(words, topic, 1, subjects, rng)[0]
        other = rng.choice([v for v in topics[topic].values if v != fact.value])
        first = len(rows)
        rows.append((_conversation(fact.prompt(), fact.value), topic, "contradiction", None))
        rows.append((_conversation(words.variant_prompt(fact.prompt()), other), topic, "contradiction", None))
        contradiction_rows.append((first, first + 1))

    if cfg.refusals > len(words.refusal_prompts):
        raise ValueError(f"refusals={cfg.refusals}: at most {len(words.refusal_prompts)} distinct refusal prompts")
    for template in rng.sample(words.refusal_prompts, cfg.refusals):
        prompt = template.format(subject=subjects.stranger())
        rows.append((_conversation(prompt, words.refusal), "refusal", "refusal", None))

    if cfg.chats or cfg.wrong_in_chats:
        _into_chats(rows, cfg, rng)

    if cfg.sources:  # a generator of its own, so the records and their order do not change
        pick = random.Random(f"sources:{seed}")
        bad = {"wrong", "duplicate"}
        rows[:] = [(conv.with_meta(source=BAD_SOURCE if kind in bad else pick.choice(GOOD_SOURCES)), topic, kind, fact)
                   for conv, topic, kind, fact in rows]

    order = list(range(len(rows)))
    rng.shuffle(order)
    new_index = {old: new for new, old in enumerate(order)}

    benchmark = [(user_turn(f.prompt()), f.value) for f in bench_facts]
    caused_by = {
        j: sorted(new_index[i] for i in wrong_of[f]) for j, f in enumerate(bench_facts) if f in wrong_of
    }
    kinds = [rows[old][2] for old in order]
    return SyntheticDataset(
        preset=preset if config is None else "custom",
        seed=seed,
        config=cfg,
        records=[rows[old][0] for old in order],
        topics=[rows[old][1] for old in order],
        benchmark=benchmark,
        benchmark_topics=[f.topic for f in bench_facts],
        corrupted_topic=corrupted_topic,
        planted_wrong=[i for i, k in enumerate(kinds) if k == "wrong"],
        caused_by=caused_by,
        duplicates=[i for i, k in enumerate(kinds) if k == "duplicate"],
        contradictions=sorted((new_index[a], new_index[b]) for a, b in contradiction_rows),
        refusals=[i for i, k in enumerate(kinds) if k == "refusal"],
        lang=lang,
    )


def _into_chats(rows: list[tuple[Conversation, str, str, _Fact | None]], cfg: SyntheticConfig, rng: random.Random) -> None:
    """Put planted wrong copies (with `wrong_in_chats`) into two-turn chats and add `chats`
    clean ones. A chat opens with its own exchange and follows up with a clean record of
    another topic (any clean record of it, a corrupted fact's correct one included: as in
    real chats, a right answer may come up again in passing); clean chats open with a fact
    that no planted record contradicts, so a chat never opens with a corrupted fact's
    question."""
    clean = [i for i, (_, _, kind, _) in enumerate(rows) if kind == "clean"]
    corrupted = {fact for _, _, kind, fact in rows if kind == "wrong"}
    openers = [i for i in clean if rows[i][3] not in corrupted]

    def chat(opening: Conversation, topic: str) -> Conversation:
        follow = rows[rng.choice([i for i in clean if rows[i][1] != topic])][0]
        return Conversation(messages=(*opening.messages, *follow.messages))

    if cfg.wrong_in_chats:
        for i, (conversation, topic, kind, fact) in enumerate(rows):
            if kind == "wrong":
                rows[i] = (chat(conversation, topic), topic, kind, fact)
    for i in rng.sample(openers, min(cfg.chats, len(openers))):
        conversation, topic, _, fact = rows[i]
        rows.append((chat(conversation, topic), topic, "chat", fact))
