"""Prompt categories: what kind of prompt a battle was on, so each category gets its own
board (as the public arena's "Chinese", "Longer Query", "Coding", "Hard Prompts" views).

A battle's categories are tags set when it is created, from its prompt alone (so showing
them never tells anything about the models), and kept with the battle and its vote:

- `task_type=NAME`: the pool record's `task_type` (or its dataset record's metadata) when
  set; else `task_type=coding` when the prompt holds a fenced code block (a cheap rule
  that is rarely wrong but misses code asked for in words); else no task type.
- `language=zh|ja|ko|latin|other`: `evaluators.lang.language` of the user turn, which
  tells scripts apart (Han, kana, Hangul, Latin); "latin" is a script, not English.
- `length=short|medium|long`: the user turn's length in `evaluators.lang.mixed_chars`
  units (each CJK character one unit, other scripts one unit a word, punctuation none),
  not a tokenizer's tokens: battles of candidates on different bases are bucketed alike.
  Under `SHORT_BELOW` units is short, from `LONG_FROM` long (the public arena's "longer
  query" is 500 tokens; 300 words are about 400 tokens), medium between.
- `hard`: only when the pool says so (`"hard": true`), or, for imported public battles,
  when the public arena's own labels mark at least 6 of its 7 "criteria_v0.1" (its
  "hard prompts" rule). Those labels come from an LLM; no rule here pretends to be one.

A vote counts into the board of each of its battle's tags, beside its pool `category`:
`/api/leaderboard?category=language=zh` is that board. Tags from files and pools are
untrusted: `check_task_type` and `check_tags` bound and validate them.
"""

from __future__ import annotations

import re
from typing import Any

from evaluators.lang import language, mixed_chars
from service.errors import InvalidInput

DIMENSIONS = ("task_type", "language", "length", "hard")
LANGUAGES = ("zh", "ja", "ko", "latin", "other")
LENGTHS = ("short", "medium", "long")
#: Length buckets, in `mixed_chars` units of the user turn.
SHORT_BELOW = 30
LONG_FROM = 300
#: The public arena's hard prompts: at least this many of its 7 criteria.
HARD_CRITERIA = 6
#: Longest task type name, longest pool category, and most tags one battle may carry.
MAX_NAME_CHARS = 40
MAX_CATEGORY_CHARS = 64
MAX_TAGS = 8
_NAME = re.compile(r"[^\W_][\w.+-]*")  # letters or digits of any script first; no spaces, '=', controls
_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)


def length_bucket(text: str) -> str:
    """"short", "medium" or "long" by `mixed_chars` units (see the module doc)."""
    units = len(mixed_chars(text))
    return "short" if units < SHORT_BELOW else "long" if units >= LONG_FROM else "medium"


def infer_task_type(text: str) -> str | None:
    """"coding" when the prompt holds a fenced code block, else None (no guess)."""
    return "coding" if _FENCE.search(text) else None


def check_task_type(value: Any, where: str) -> str | None:
    """A task type from a pool or a file, normalised (case-folded, spaces as `_`): a name of
    letters, digits and `_.+-`, at most `MAX_NAME_CHARS`; None when empty. `InvalidInput`
    (naming `where`) otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: task_type must be a string")
    name = "_".join(value.split()).casefold()
    if len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
        raise InvalidInput(f"{where}: task_type {value[:60]!r}: expected a name of letters, digits and _.+- "
                           f"of at most {MAX_NAME_CHARS} characters")
    return name


def task_type_name(value: Any) -> str | None:
    """A task type from a dataset record's metadata (written for other uses, so made into a
    name rather than refused): case-folded, each run of other characters as `_`, cut to
    `MAX_NAME_CHARS`; None when nothing is left."""
    if not isinstance(value, str):
        return None
    name = re.sub(r"[^\w.+-]+", "_", value.casefold()).strip("_.+-")[:MAX_NAME_CHARS].rstrip("_.+-")
    return name if name and _NAME.fullmatch(name) else None


def prompt_tags(text: str, *, task_type: str | None = None, hard: bool = False) -> list[str]:
    """The category tags of a prompt whose user turn is `text` (see the module doc)."""
    tags = []
    task = task_type or infer_task_type(text)
    if task:
        tags.append(f"task_type={task}")
    tags += [f"language={language(text)}", f"length={length_bucket(text)}"]
    if hard:
        tags.append("hard")
    return tags


def parse_tag(text: str) -> tuple[str, str] | None:
    """(dimension, value) when `text` is a category tag (`hard`, or `DIMENSION=VALUE` with a
    known dimension), None when it is not one (a pool category). `InvalidInput` when it
    names a dimension with a value that dimension never has."""
    if text == "hard":
        return "hard", ""
    dimension, sep, value = text.partition("=")
    if not sep or dimension not in DIMENSIONS:
        return None
    allowed = {"language": LANGUAGES, "length": LENGTHS}.get(dimension)
    if dimension == "hard" or (allowed is not None and value not in allowed) or (
            dimension == "task_type" and (len(value) > MAX_NAME_CHARS or not _NAME.fullmatch(value) or value != value.casefold())):
        expected = {"language": "|".join(LANGUAGES), "length": "|".join(LENGTHS), "task_type": "a lower-case name",
                    "hard": "nothing: the tag is just `hard`"}[dimension]
        raise InvalidInput(f"category {text[:80]!r}: {dimension} takes {expected}")
    return dimension, value


def check_tags(tags: Any, where: str) -> list[str]:
    """Tags from an untrusted record (an imported vote): a list of at most `MAX_TAGS`
    distinct valid tags, in order. `InvalidInput` naming `where` otherwise."""
    if not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(isinstance(t, str) for t in tags):
        raise InvalidInput(f"{where}: categories: expected a list of at most {MAX_TAGS} tags")
    for tag in tags:
        if parse_tag(tag) is None:
            raise InvalidInput(f"{where}: categories: {tag[:80]!r} is not a category tag "
                               "(task_type=NAME, language=..., length=..., hard)")
    return list(dict.fromkeys(tags))


def check_pool_category(value: Any, where: str) -> str | None:
    """A pool's free `category`: a string of at most `MAX_CATEGORY_CHARS` printable characters
    that is not a category tag (those are set by the fields `task_type` and `hard`). Pool
    categories and tags share one namespace of boards, so a pool category `hard` would put
    its prompts on the hard-prompts board: refused like `language=zh`."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: field 'category' must be a string")
    if len(value) > MAX_CATEGORY_CHARS or not value.isprintable():
        raise InvalidInput(f"{where}: category: expected at most {MAX_CATEGORY_CHARS} printable characters")
    if value == "hard":
        raise InvalidInput(f"{where}: category 'hard' is the hard-prompts tag; set \"hard\": true in the record "
                           "for a hard prompt, or name the category otherwise")
    if parse_tag(value) is not None:
        raise InvalidInput(f"{where}: category {value!r} is a category tag; set `task_type` or `hard` in the record instead")
    return value


# --- public battles -----------------------------------------------------------------------


def battle_tags(battle) -> list[str]:
    """The tags of a FastChat battle (`arena.battles.Battle`). One exported here (it has
    `conv_metadata["arena"]`) has the tags the service counted it under: its `categories`
    (checked), none when it has no such list (a vote logged before tags existed, counted
    on the overall board only). Any other file's battle (a public dump) gets tags computed
    from its first user turn, with `hard` and task types from the public arena's
    `category_tag` labels (`math_v0.1`, `creative_writing_v0.1`, `if_v0.1` score >= 4 as
    its "instruction following")."""
    ours = battle.conv_metadata.get("arena") if isinstance(battle.conv_metadata, dict) else None
    if isinstance(ours, dict) and ours:
        return check_tags(ours["categories"], "conv_metadata.arena") if ours.get("categories") is not None else []
    text = _first_user_turn(battle.conversation_a or battle.conversation_b or [])
    labels = battle.category_tag if isinstance(battle.category_tag, dict) else {}
    tasks = [name for name, key, flag in (("math", "math_v0.1", "math"), ("creative_writing", "creative_writing_v0.1", "creative_writing"))
             if isinstance(labels.get(key), dict) and labels[key].get(flag) is True]
    follow = labels.get("if_v0.1")
    if isinstance(follow, dict) and isinstance(follow.get("score"), (int, float)) and follow["score"] >= 4:
        tasks.append("instruction_following")
    criteria = labels.get("criteria_v0.1")
    hard = isinstance(criteria, dict) and sum(v is True for v in criteria.values()) >= HARD_CRITERIA
    tags = [f"task_type={t}" for t in tasks]
    if text:
        tags += [t for t in prompt_tags(text) if not (tasks and t.startswith("task_type="))]
    if hard:
        tags.append("hard")
    return list(dict.fromkeys(tags))


def _first_user_turn(turns) -> str:
    for turn in turns:
        if getattr(turn, "role", None) == "user":
            content = turn.content
            if isinstance(content, list):  # parts: keep the text ones
                content = " ".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content
                                   if isinstance(p, (str, dict)))
            return content if isinstance(content, str) else ""
    return ""
