"""The public arena's dumps, mapped onto FastChat's battle schema.

Two schemas besides FastChat's own (`clean_battle*.json`) are in circulation:

- **Kaggle "lmsys-chatbot-arena" (55k) `train.csv`**: `id, model_a, model_b, prompt,
  response_a, response_b, winner_model_a, winner_model_b, winner_tie`. The prompt and
  response columns are JSON-encoded lists of strings, one per turn (entries may be null).
  Mapped: `id` → `question_id`; exactly one of the three winner columns is 1 →
  `model_a` / `model_b` / `tie`; the turns → `conversation_a/b`; `turn` = number of turns.
- **arena-human-preference-100k/140k** (`lmsys/chatbot_arena_conversations` style):
  `winner` may be `both_bad` (→ `tie (bothbad)`); `id` → `question_id` when there is none;
  an ISO `timestamp` → `tstamp` (seconds since the epoch; naive times read as UTC);
  `conversation_a/b` turns whose content may be a list of parts; `conv_metadata`,
  `category_tag`, `language`, `turn` kept as they are. Columns we have no place for
  (`evaluation_session_id`, `full_conversation`, `is_code`, ...) are dropped.

In a CSV any nested column arrives as text: it is decoded as JSON.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

_KAGGLE_WINNERS = (("winner_model_a", "model_a"), ("winner_model_b", "model_b"), ("winner_tie", "tie"))
_NESTED = ("conversation_a", "conversation_b", "conv_metadata", "category_tag")


class RecordError(ValueError):
    """A record that cannot be mapped: `field` names the column, the message what was expected."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def is_kaggle_55k(record: dict[str, Any]) -> bool:
    """Whether a record is in the Kaggle 55k schema (it has the three winner columns)."""
    return any(column in record for column, _ in _KAGGLE_WINNERS) and "winner" not in record


def needs_mapping(record: dict[str, Any]) -> bool:
    """Whether a record is in a public dump's schema rather than FastChat's battle schema."""
    return is_kaggle_55k(record) or ("timestamp" in record and "tstamp" not in record) or (
        "id" in record and "question_id" not in record) or record.get("winner") == "both_bad"


def to_fastchat(record: dict[str, Any]) -> dict[str, Any]:
    """The record in FastChat's battle schema (a new dict; FastChat records pass through
    with only `both_bad` renamed). Raises `RecordError` naming the field at fault."""
    if is_kaggle_55k(record):
        return _from_kaggle(record)
    out = dict(record)
    if out.get("winner") == "both_bad":
        out["winner"] = "tie (bothbad)"
    if out.get("question_id") is None and out.get("id") is not None:
        out["question_id"] = str(out["id"])
    if out.get("tstamp") is None and out.get("timestamp") is not None:
        out["tstamp"] = _seconds(out["timestamp"])
    elif isinstance(out.get("tstamp"), datetime):  # a Parquet timestamp column
        out["tstamp"] = _seconds(out["tstamp"])
    for name in _NESTED:
        if isinstance(out.get(name), str):
            out[name] = _json(out[name], name, "a JSON list of turns" if name.startswith("conv") else "a JSON object")
    return out


def kaggle_winner(record: dict[str, Any]) -> str:
    """FastChat's `winner` of a Kaggle 55k record, from its three 0/1 winner columns."""
    flags = [(winner, _flag(record.get(column), column)) for column, winner in _KAGGLE_WINNERS]
    chosen = [winner for winner, flag in flags if flag]
    if len(chosen) != 1:
        got = "/".join(str(int(flag)) for _, flag in flags)
        raise RecordError("winner_model_a", f"expected exactly one of winner_model_a, winner_model_b, winner_tie to be 1, got {got}")
    return chosen[0]


def dump_seconds(value: Any) -> float | None:
    """A dump's `timestamp` (ISO 8601 text or a Parquet time; naive times read as UTC) in
    seconds since the epoch, as `to_fastchat` reads it; None stays None. Raises `RecordError`."""
    return None if value is None else _seconds(value)


def _from_kaggle(record: dict[str, Any]) -> dict[str, Any]:
    winner = kaggle_winner(record)
    prompts = _turns(record, "prompt")
    answers = {side: _turns(record, f"response_{side}") for side in "ab"}
    for side, turns in answers.items():
        if len(turns) != len(prompts):
            raise RecordError(f"response_{side}", f"expected {len(prompts)} turns, as `prompt` has, got {len(turns)}")
    out: dict[str, Any] = {
        "model_a": record.get("model_a"),
        "model_b": record.get("model_b"),
        "winner": winner,
        "turn": len(prompts),
    }
    if record.get("id") is not None:
        out["question_id"] = str(record["id"])
    for side, turns in answers.items():
        out[f"conversation_{side}"] = [
            turn for asked, said in zip(prompts, turns) for turn in
            ({"role": "user", "content": asked}, {"role": "assistant", "content": said})
        ]
    return out


def _flag(value: Any, column: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return value.strip() == "1"
    raise RecordError(column, f"expected 0 or 1, got {value!r}")


def _turns(record: dict[str, Any], column: str) -> list[str | None]:
    value = record.get(column)
    if value is None:
        raise RecordError(column, "missing (required): a JSON list of strings, one per turn")
    turns = _json(value, column, "a JSON list of strings, one per turn") if isinstance(value, str) else value
    if not isinstance(turns, list) or not all(t is None or isinstance(t, str) for t in turns):
        raise RecordError(column, "expected a JSON list of strings (or null), one per turn")
    return turns


def _json(text: str, column: str, expected: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise RecordError(column, f"expected {expected}, got {shown!r}") from None


def _seconds(value: Any) -> float:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise RecordError("timestamp", f"expected an ISO 8601 time like 2025-05-29T14:48:41, got {value!r}") from None
    else:
        raise RecordError("timestamp", f"expected an ISO 8601 time, got {type(value).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
