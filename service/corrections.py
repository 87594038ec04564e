"""Corrections: after voting, a reviewer may write the answer the candidates should have given.

A correction is stored with its battle's conversation (the battle itself expires), the
reviewer and timestamps, as *pending*; an admin accepts or rejects it once. `arena curate
--add-corrections` turns accepted ones into training records (`correction_records`) with
their provenance in `meta` (source=correction, battle, reviewer, correction).

Rules (each a specific 4xx):
- only the reviewer the battle was dealt to, and only after their vote: before it, a
  correction could plant an answer; after it, the names are revealed anyway;
- the text is not empty and at most `ARENA_MAX_CORRECTION_CHARS` characters; it is stored
  as written (untrusted) and every page escapes it;
- one pending correction per (battle, reviewer): a second one replaces it.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

import msgspec

from service.config import Settings
from service.errors import Conflict, Forbidden, InvalidInput

STATUSES = ("pending", "accepted", "rejected")
MAX_NOTE_CHARS = 1000


class Correction(msgspec.Struct, kw_only=True):
    """A reviewer's corrected answer to a battle. `based_on` is the side whose answer they
    edited ("a"/"b", `original` holds that answer), or None for an answer written fresh.
    `prompt` and `context` are the battle's conversation, kept because battles expire."""

    id: str
    battle_id: str
    reviewer: str
    text: str
    based_on: Literal["a", "b"] | None = None
    original: str | None = None
    prompt: str
    context: list[dict[str, str]] = msgspec.field(default_factory=list)
    choice: str | None = None  # the reviewer's vote on the battle
    status: Literal["pending", "accepted", "rejected"] = "pending"
    created_at: float
    updated_at: float | None = None
    decided_at: float | None = None
    decided_by: str | None = None
    note: str | None = None
    used_in: str | None = None  # the dataset version it was added to, once it was


def check_text(text: object, settings: Settings) -> str:
    """The corrected answer, stripped; `InvalidInput` when empty or over the limit."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text: write the corrected answer (it is empty)")
    text = text.strip()
    if len(text) > settings.max_correction_chars:
        raise InvalidInput(f"text: {len(text)} characters is over the limit of {settings.max_correction_chars} "
                           "(ARENA_MAX_CORRECTION_CHARS)", limit=settings.max_correction_chars)
    return text


async def submit_correction(store, settings: Settings, battle_id: str, *, reviewer: str, text: str,
                            based_on: str | None = None) -> Correction:
    """Store `reviewer`'s corrected answer to the battle (replacing their pending one).
    Raises `NotFound` (unknown or expired battle), `Forbidden` (dealt to someone else),
    `Conflict` (no vote on it yet), `InvalidInput` (empty or too long text, bad `based_on`)."""
    if based_on not in (None, "a", "b"):
        raise InvalidInput(f"based_on {based_on!r}: expected 'a', 'b' or null (an answer written fresh)")
    battle = await store.get_battle(battle_id)
    if battle.get("reviewer") != reviewer:
        raise Forbidden("this battle was dealt to another reviewer: only they may correct it")
    vote_id = await store.battle_vote_id(battle_id)
    if vote_id is None:
        raise Conflict("vote on this battle first: a correction is taken only after your vote")
    text = check_text(text, settings)
    vote = await store.logged_vote(vote_id) or {}
    correction = Correction(
        id=f"corr_{secrets.token_hex(8)}", battle_id=battle_id, reviewer=reviewer, text=text, based_on=based_on,
        original=battle[f"answer_{based_on}"] if based_on else None, prompt=battle["prompt"],
        context=list(battle.get("context") or []), choice=vote.get("choice"), created_at=time.time(),
    )
    stored = await store.save_correction(msgspec.to_builtins(correction))
    return msgspec.convert(stored, Correction)


async def decide_correction(store, correction_id: str, *, accept: bool, by: str, note: str | None = None) -> Correction:
    """Accept or reject a pending correction, once. Raises `NotFound` (unknown id),
    `Conflict` (already decided: the first decision stands), `InvalidInput` (note too long)."""
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise InvalidInput(f"note: {len(note)} characters is over the limit of {MAX_NOTE_CHARS}")
    status = "accepted" if accept else "rejected"

    def decide(current: dict[str, Any]) -> dict[str, Any]:
        if current["status"] != "pending":
            raise Conflict(f"correction {correction_id} was already {current['status']} by {current.get('decided_by')}; "
                           "a decision is final")
        return {**current, "status": status, "decided_at": time.time(), "decided_by": by, "note": note or None}

    return msgspec.convert(await store.update_correction(correction_id, decide), Correction)


async def list_corrections(store, status: str | None = None) -> list[Correction]:
    """Corrections, newest first, of one status when given (`InvalidInput` for an unknown one)."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status {status!r}: expected one of {', '.join(STATUSES)}")
    return [msgspec.convert(c, Correction) for c in await store.list_corrections(status=status)]


async def mark_used(store, ids: list[str], dataset_ref: str) -> None:
    """Record that these accepted corrections went into `dataset_ref`, so the next curation
    does not add them again."""
    for correction_id in ids:
        await store.update_correction(correction_id, lambda c: {**c, "used_in": dataset_ref})


# --- curation ---------------------------------------------------------------------------


def correction_record(correction: Correction):
    """The training record of a correction: the battle's conversation (context, then the
    prompt), then the corrected answer; provenance in `meta`."""
    from evaluators.records import Conversation, Message

    turns = [Message(t["role"], t["content"]) for t in correction.context]
    turns += [Message("user", correction.prompt), Message("assistant", correction.text)]
    return Conversation(messages=tuple(turns)).with_meta(source="correction", battle=correction.battle_id,
                                                          reviewer=correction.reviewer, correction=correction.id)


def correction_records(corrections: list[Correction], existing) -> tuple[list, list[Correction]]:
    """(records to add, the corrections they come from): every accepted correction not yet
    used in a dataset version, except those whose conversation and answer the dataset
    (`existing` records) or an earlier correction already hold verbatim."""
    seen = {r.messages for r in existing}
    records, used = [], []
    for correction in sorted(corrections, key=lambda c: c.created_at):
        if correction.status != "accepted" or correction.used_in:
            continue
        record = correction_record(correction)
        if record.messages in seen:
            continue
        seen.add(record.messages)
        records.append(record)
        used.append(correction)
    return records, used


def added_row(record, correction: Correction) -> dict:
    """A correction added to a dataset as `next.added.jsonl` lists it: who wrote it, for
    which battle, and the record (`chat_row`)."""
    from evaluators.records import chat_row

    return {"correction": correction.id, "battle": correction.battle_id, "reviewer": correction.reviewer,
            "reason": "accepted correction", **chat_row(record)}
