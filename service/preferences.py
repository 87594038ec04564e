"""Votes as preference data: the logged battles become `prompt / chosen / rejected` pairs
in TRL's conversational format, the input of a DPO run (`service.dpo`).

A vote `a` or `b` gives one pair: the prompt (every turn before the answers), the
preferred answer as `chosen`, the other as `rejected`. A tie says nothing about which
answer is better, and a both-bad vote names no good answer, so both are left out; a
both-bad battle whose reviewer wrote a correction that an admin accepted
(`service.corrections`) gives two pairs, the correction preferred to each answer. Votes of
excluded reviewers are left out, as everywhere.

A pair file is JSON Lines, one pair a line:
`{"prompt": [{"role": "user", "content": ...}], "chosen": [{"role": "assistant", ...}],
"rejected": [...], "board": "human", "battle_id": ..., "question_id": ...,
"model_chosen": ..., "model_rejected": ..., "origin": "vote"}` — TRL's columns plus where
each pair came from; TRL reads the first three.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from evaluators.records import Message
from service.errors import InvalidInput

#: Why a logged vote gave no pair, or fewer than it could, by the name `export_preferences`
#: counts it under ("empty_or_same": an answer was empty, or the chosen text equals the
#: rejected one, as when a correction repeats one of a both-bad battle's answers).
SKIP_REASONS = ("tie", "both_bad", "no_answers", "prompts_differ", "empty_or_same")


class PreferencePair(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One preference: `chosen` is the better answer to `prompt` than `rejected`."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    board: str = "human"
    battle_id: str | None = None
    question_id: str | None = None
    model_chosen: str | None = None
    model_rejected: str | None = None
    origin: Literal["vote", "correction"] = "vote"

    def __post_init__(self) -> None:
        if not self.prompt or self.prompt[-1].role != "user":
            raise ValueError("prompt: expected a list of messages ending with a user turn")
        for side in ("chosen", "rejected"):
            turns = getattr(self, side)
            if len(turns) != 1 or turns[0].role != "assistant" or not turns[0].content.strip():
                raise ValueError(f"{side}: expected one non-empty assistant message")
        if self.chosen[0].content == self.rejected[0].content:
            raise ValueError("chosen and rejected are the same answer")


# --- from votes -------------------------------------------------------------------------


def preference_pairs(vote: Mapping[str, Any], *, correction: str | None = None) -> tuple[list[PreferencePair], str | None]:
    """The pairs one logged vote gives, and, when it gives none or fewer than it could, why
    (one of `SKIP_REASONS`).

    `correction` is an accepted corrected answer for the vote's battle: with it a both-bad
    vote gives two pairs (the correction preferred to each answer); other votes ignore it."""
    choice = _choice(vote.get("winner"))
    if choice == "tie" or (choice == "both_bad" and not correction):
        return [], choice
    conv_a, conv_b = vote.get("conversation_a") or [], vote.get("conversation_b") or []
    if not conv_a or not conv_b or conv_a[-1].get("role") != "assistant" or conv_b[-1].get("role") != "assistant":
        return [], "no_answers"
    prompt_a = [_message(m) for m in conv_a[:-1]]
    if prompt_a != [_message(m) for m in conv_b[:-1]] or not prompt_a or prompt_a[-1].role != "user":
        return [], "prompts_differ"  # multi-turn battles whose earlier answers differ have no shared prompt
    answers = {"a": conv_a[-1].get("content") or "", "b": conv_b[-1].get("content") or ""}
    models = {"a": vote.get("model_a"), "b": vote.get("model_b")}
    common = {"prompt": prompt_a, "board": vote.get("board", "human"), "battle_id": vote.get("battle_id"),
              "question_id": vote.get("question_id")}
    if choice == "both_bad":
        pairs = [(correction, answers[s], "correction", models[s], "correction") for s in ("a", "b")]
    else:
        other = "b" if choice == "a" else "a"
        pairs = [(answers[choice], answers[other], models[choice], models[other], "vote")]
    out = [PreferencePair(chosen=[Message("assistant", chosen)], rejected=[Message("assistant", rejected)],
                          model_chosen=model_chosen, model_rejected=model_rejected, origin=origin, **common)
           for chosen, rejected, model_chosen, model_rejected, origin in pairs
           if chosen.strip() and rejected.strip() and chosen != rejected]
    return out, (None if len(out) == len(pairs) else "empty_or_same")


async def export_preferences(store, *, boards: Iterable[str] = ("human",),
                             corrections: Mapping[str, str] | None = None) -> tuple[list[PreferencePair], dict[str, int]]:
    """Preference pairs from every logged vote of `boards` (oldest first), excluded
    reviewers' votes left out, and how many votes gave none (or fewer than they could), by reason.

    `corrections` maps a battle id to its accepted corrected answer (see `preference_pairs`);
    by default, the store's accepted corrections (the latest per battle), so a both-bad vote
    with an accepted correction gives pairs wherever pairs are exported."""
    if corrections is None:
        corrections = await accepted_corrections(store)
    boards = set(boards)
    excluded = await store.excluded_reviewers()
    pairs: list[PreferencePair] = []
    skipped: Counter[str] = Counter()
    async for _, vote in store.iter_votes():
        if vote.get("board", "human") not in boards:
            continue
        if vote.get("reviewer") in excluded:
            skipped["excluded_reviewer"] += 1
            continue
        got, reason = preference_pairs(vote, correction=(corrections or {}).get(vote.get("battle_id") or ""))
        pairs += got
        if reason:
            skipped[reason] += 1
    return pairs, dict(skipped)


def left_out_said(skipped: Mapping[str, int]) -> str:
    """`export_preferences`' counts in words: "1 both-bad, 2 tie" (or "none")."""
    return ", ".join(f"{n} {reason.replace('_', '-')}" for reason, n in sorted(skipped.items())) or "none"


async def accepted_corrections(store) -> dict[str, str]:
    """Battle id -> the text of its latest accepted correction."""
    from service.corrections import list_corrections

    latest: dict[str, Any] = {}
    for c in await list_corrections(store, "accepted"):
        if c.battle_id not in latest or c.created_at > latest[c.battle_id].created_at:
            latest[c.battle_id] = c
    return {battle: c.text for battle, c in latest.items()}


def _choice(winner: Any) -> str:
    return {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "both_bad"}.get(winner, "tie")


def _message(turn: Mapping[str, Any]) -> Message:
    return Message(turn.get("role") or "user", turn.get("content") or "")


# --- files ------------------------------------------------------------------------------


def encode_pairs(pairs: Sequence[PreferencePair]) -> bytes:
    """The pairs as JSON Lines (what `write_preferences` writes and `preferences_sha256` hashes)."""
    return b"".join(msgspec.json.encode(p) + b"\n" for p in pairs)


def write_preferences(path: str | Path, pairs: Sequence[PreferencePair]) -> None:
    """Write `pairs` to `path` as JSON Lines."""
    Path(path).write_bytes(encode_pairs(pairs))


def preferences_sha256(pairs: Sequence[PreferencePair]) -> str:
    """SHA-256 of the pairs as JSON Lines: the preference part of a DPO run's identity."""
    return hashlib.sha256(encode_pairs(pairs)).hexdigest()


def parse_preferences(data: bytes, *, source: str = "preferences") -> list[PreferencePair]:
    """Pairs from JSON Lines (TRL's conversational columns, or plain strings: a string
    prompt is one user turn, a string answer one assistant turn).

    Raises `InvalidInput` naming the line and what was expected, or saying the file has no pair."""
    pairs = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = msgspec.json.decode(line)
            if not isinstance(row, dict):
                raise ValueError("expected a JSON object with prompt, chosen and rejected")
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            row = {**row, "prompt": _turns(row["prompt"], "user"), "chosen": _turns(row["chosen"], "assistant"),
                   "rejected": _turns(row["rejected"], "assistant")}
            pairs.append(msgspec.convert(row, PreferencePair))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise InvalidInput(f"{source}:{number}: {exc}") from None
    if not pairs:
        raise InvalidInput(f"{source}: no preference pairs (expected JSON Lines with prompt, chosen and rejected)")
    return pairs


def read_preferences(path: str | Path) -> list[PreferencePair]:
    """`parse_preferences` of the file at `path`; a file that cannot be read is `InvalidInput` too."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_preferences(data, source=str(path))


def _turns(value: Any, role: str) -> Any:
    return [{"role": role, "content": value}] if isinstance(value, str) else value
