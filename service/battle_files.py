"""Export and import of the votes log as FastChat battles.

An export moves our fields (`service.battles`' module doc) into `conv_metadata["arena"]`
and adds FastChat's style counts there, so files stay FastChat-compatible (its style
control runs on them) and an import restores them exactly. An import logs and counts the
battles as observations; a record our checks refuse is named by its place in the file.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from arena.battles import Battle, validate_battles
from arena.style_metadata import with_conv_metadata
from service.errors import InvalidInput

#: Our fields in a logged vote, kept in `conv_metadata["arena"]` on export.
OUR_FIELDS = (
    "board", "reviewer", "battle_id", "choice", "reason", "category", "source", "categories", "battle_tstamp",
    "time_to_vote_s", "judgement", "order", "consistent",
)

#: Skipped records an import names (the count says how many in all).
IMPORT_ERRORS_SHOWN = 20


def to_battle(vote: dict[str, Any]) -> Battle:
    """A logged vote as a FastChat `Battle`, our fields in `conv_metadata["arena"]` (its
    `categories` always, `[]` for a vote with none), and
    FastChat's style counts (`sum_assistant_a_tokens`, `header_count_a`, ...) computed from
    the answers when the vote does not carry them, so FastChat's own style control runs on
    the export."""
    ours = {k: vote[k] for k in OUR_FIELDS if vote.get(k) is not None}
    # A vote logged before battles had tags is on the overall board only: said explicitly
    # (`[]`), so a reader of the file (`arena ratings --category`, an import) does not
    # compute tags the service never counted.
    ours.setdefault("categories", [])
    fastchat = {k: v for k, v in vote.items() if k not in OUR_FIELDS and k != "prompt"}
    meta = dict(fastchat.get("conv_metadata") or {})
    if ours:
        meta["arena"] = ours
    fastchat["conv_metadata"] = meta or None
    battle = msgspec.convert({k: v for k, v in fastchat.items() if v is not None}, Battle)
    return msgspec.structs.replace(battle, conv_metadata=with_conv_metadata(battle))


def from_battle(battle: Battle, *, board: str | None = None, tags: list[str] | None = None) -> tuple[str, dict[str, Any]]:
    """(board, logged vote) for an imported battle: our fields restored from
    `conv_metadata["arena"]`; the reviewer is that, else FastChat's `judge`, else "import";
    its category tags ours (checked) or, for a public battle, made from its prompt and its
    `category_tag` labels (`prompt_categories.battle_tags`), unless `tags` gives them (as
    computed for this battle before)."""
    from service.prompt_categories import battle_tags, check_pool_category

    record = msgspec.to_builtins(battle)
    meta = dict(record.pop("conv_metadata", None) or {})
    ours = meta.pop("arena", None) or {}
    if not isinstance(ours, dict):
        ours = {}
    if meta:
        record["conv_metadata"] = meta
    record.update({k: v for k, v in ours.items() if k in OUR_FIELDS})
    if record.get("category") is not None:  # counted as a pool category: checked as one
        record["category"] = check_pool_category(record["category"], "conv_metadata.arena")
    record.pop("categories", None)
    tags = battle_tags(battle) if tags is None else tags
    if tags:
        record["categories"] = tags
    record.setdefault("reviewer", battle.judge or "import")
    target = board or record.pop("board", None) or "human"
    record.pop("board", None)
    if target not in ("human", "judge"):
        raise InvalidInput(f"board {target!r}: expected 'human' or 'judge'")
    return target, record


async def export_battles(store, *, boards: Iterable[str] = ("human", "judge"), include_excluded: bool = False) -> list[Battle]:
    """Every logged vote of `boards`, oldest first, as FastChat battles (excluded reviewers'
    votes left out unless `include_excluded`)."""
    boards = set(boards)
    excluded = set() if include_excluded else await store.excluded_reviewers()
    out = []
    async for _, vote in store.iter_votes():
        if vote.get("board", "human") in boards and vote.get("reviewer") not in excluded:
            out.append(to_battle(vote))
    return out


async def import_battles(store, records: list[Any], *, board: str | None = None, skip_invalid: bool = False) -> dict[str, Any]:
    """Validate FastChat battles (dicts or `Battle`s, e.g. a request's body) and log them;
    see `import_loaded`."""
    from arena.battles import BattleFormatError

    try:
        loaded = validate_battles(records, skip_invalid=skip_invalid)
    except BattleFormatError as exc:
        raise InvalidInput(str(exc)) from None
    return await import_loaded(store, loaded, board=board, skip_invalid=skip_invalid)


def _vote_of(battle: Battle, board: str | None, tags: list[str] | None = None) -> tuple[str, dict[str, Any], int]:
    """(board, logged vote, how many votes it counts as) of an imported battle; raises
    `InvalidInput` for what our checks refuse, the store's own included (a model name with
    a control character), so a refusal is named by its place in the file before anything
    is logged."""
    from service.store.arena import count_field

    target, vote = from_battle(battle, board=board, tags=tags)
    count_field(vote["model_a"], vote["model_b"], vote["winner"])
    return target, vote, int(vote.pop("weight", None) or 1)


async def import_loaded(store, loaded, *, board: str | None = None, skip_invalid: bool = False,
                        source: str | None = None) -> dict[str, Any]:
    """Log + count the battles of `loaded` (`arena.battles.BattleFile`) as observations (no
    battle, no rate limit). A battle with a `weight` is logged as that many votes (the
    counters count votes, as the judging job logs a strong graded verdict). A record our
    checks refuse (a bad `categories` list, a pool category that is a tag, a bad board) is
    named by its position in the file, as the reader names its own errors: all-or-nothing
    (`InvalidInput`, nothing logged), or with `skip_invalid` skipped like those. Returns
    counts (of votes logged), `skipped` and the first `errors` (one line each)."""
    from arena.battles import BattleFormatError

    grouped: dict[str, list[dict[str, Any]]] = {}
    refused = []
    for k, battle in enumerate(loaded.battles):
        try:
            target, vote, repeat = _vote_of(battle, board)
        except InvalidInput as exc:
            refused.append(loaded.located(k, exc.message))
            continue
        grouped.setdefault(target, []).extend([vote] * repeat)
    if refused and not skip_invalid:
        raise InvalidInput(str(BattleFormatError(refused, source)))
    for target, votes in grouped.items():
        await store.record_observations(votes, board=target)
    return _imported({b: len(v) for b, v in grouped.items()}, [*loaded.skipped, *refused])


async def import_file(store, path: str | Path, *, board: str | None = None, skip_invalid: bool = False,
                      progress: Callable[[str, int, int | None], None] | None = None) -> dict[str, Any]:
    """`import_loaded` for a battles file, holding one batch of it at a time
    (`arena.battle_stream`; a public dump's conversations are gigabytes): a first pass
    reads and checks every record, logging nothing, so a malformed or refused record
    stops the import before anything is logged (unless `skip_invalid`); a second pass
    logs the battles batch by batch. Raises `BattleFormatError` or `OSError` as the reader.
    `progress(phase, battles done, battles in all or None)` is called after each batch,
    phase "checking" then "logging"."""
    from arena.battle_stream import BattleBatches
    from arena.battles import BattleFormatError

    batches = BattleBatches(path, skip_invalid=skip_invalid)
    refused, seen = [], 0
    # Each battle's tags (computed from its prompt, the check's main cost) are kept for the
    # logging pass as the number of their combination: 2 bytes a battle.
    combinations: dict[tuple[str, ...], int] = {}
    tagged = array("H")
    for batch in batches:
        for k, battle in enumerate(batch):
            try:
                _, vote, _ = _vote_of(battle, board)
            except InvalidInput as exc:
                refused.append(batches.located(k, exc.message))
                vote = {}
            if len(combinations) < 65535:
                tagged.append(combinations.setdefault(tuple(vote.get("categories", ())), len(combinations)))
        seen += len(batch)
        if progress is not None:
            progress("checking", seen, None)
    if refused and not skip_invalid:
        raise InvalidInput(str(BattleFormatError(refused, str(path))))
    malformed, bad = batches.skipped, {e.index for e in refused}
    logged: dict[str, int] = {}
    done = 0
    tags = [list(combination) for combination in combinations]
    tags_of = (tags[tagged[i]] if i < len(tagged) else None for i in itertools.count())  # None: computed again
    for batch in batches:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for k, (battle, known) in enumerate(zip(batch, tags_of)):
            if bad and batches.located(k, "").index in bad:
                continue
            target, vote, repeat = _vote_of(battle, board, known)
            grouped.setdefault(target, []).extend([vote] * repeat)
        for target, votes in grouped.items():
            logged[target] = logged.get(target, 0) + await store.record_observations(votes, board=target)
        done += len(batch)
        if progress is not None:
            progress("logging", done, seen)
    return _imported(logged, [*malformed, *refused])


def _imported(logged: dict[str, int], skipped: list) -> dict[str, Any]:
    """An import's answer: votes logged (in all and by board), records skipped, the first errors."""
    skipped = sorted(skipped, key=lambda e: e.index)
    return {"imported": sum(logged.values()), "skipped": len(skipped),
            "errors": [e.describe() for e in skipped[:IMPORT_ERRORS_SHOWN]], "by_board": logged}
