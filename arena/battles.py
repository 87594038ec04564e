"""Battle records in FastChat's schema: read, validate, write.

A battle is one vote between two models. The record is FastChat's (`model_a`, `model_b`,
`winner` ∈ {`model_a`, `model_b`, `tie`, `tie (bothbad)`}, optional `judge`, `tstamp`,
`anony`, `question_id`, `conversation_a/b`, `conv_metadata`, `category_tag`), plus optional
fields of our own: for style control when no conversation is stored, `answer_a/b` (the
answer texts) and `length_a/b` (their lengths); and `weight`, how many battles this verdict
counts as (an Arena-Hard strong verdict, `[[A>>B]]`, counts as 3; absent means 1). Files are a JSON array,
JSON Lines, Parquet or CSV (`arena.files`); records in the public dumps' own schemas (the
Kaggle 55k CSV, arena-human-preference-140k) are mapped on read (`arena.public_dumps`);
fields we do not know are ignored on read and not written back.

Reading is all-or-nothing by default: every malformed record is reported by line (JSONL),
row (Parquet, CSV) or index (JSON array) and field in one `BattleFormatError`. With `skip_invalid=True` they are skipped and returned
in `BattleFile.skipped` so the caller can say how many.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from arena.agreement import Agreement, agreement  # noqa: F401  (re-exported: callers import them from here)
from arena.files import file_format
from arena.public_dumps import RecordError, needs_mapping, to_fastchat

Winner = Literal["model_a", "model_b", "tie", "tie (bothbad)"]
WINNERS: tuple[str, ...] = ("model_a", "model_b", "tie", "tie (bothbad)")

#: How many invalid records a `BattleFormatError` message spells out before "and N more".
_MESSAGE_EXAMPLES = 3


class Turn(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One turn of a FastChat conversation. `content` is text, or a list for multimodal turns."""

    role: str
    content: str | list[Any] | None = None


class Battle(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One vote between two models, in FastChat's battle schema."""

    model_a: str
    model_b: str
    winner: Winner
    judge: str | None = None
    tstamp: float | None = None
    anony: bool | None = None
    question_id: str | None = None
    turn: int | None = None
    language: str | None = None
    conversation_a: list[Turn] | None = None
    conversation_b: list[Turn] | None = None
    conv_metadata: dict[str, Any] | None = None
    category_tag: dict[str, Any] | None = None
    answer_a: str | None = None
    answer_b: str | None = None
    length_a: int | None = None
    length_b: int | None = None
    weight: int | None = None

    @property
    def score_a(self) -> float:
        """Model A's score: 1 for a win, 0 for a loss, 0.5 for either kind of tie."""
        return 1.0 if self.winner == "model_a" else 0.0 if self.winner == "model_b" else 0.5

    def answer_text(self, side: Literal["a", "b"]) -> str | None:
        """The side's answer text: `answer_a/b`, else its assistant turns joined by newlines
        (FastChat's rule), else None. Of a multimodal turn (a list of parts, as in the 140k
        dump) only the text parts count."""
        answer = self.answer_a if side == "a" else self.answer_b
        if answer is not None:
            return answer
        conversation = self.conversation_a if side == "a" else self.conversation_b
        if conversation is None:
            return None
        texts = (turn_text(t.content) for t in conversation if t.role == "assistant")
        return "\n".join(t for t in texts if t is not None)


def turn_text(content: str | list[Any] | None) -> str | None:
    """A turn's text: the string, or a parts list's `text` parts (`{"type": "text", "text": …}`
    or plain strings) joined by newlines; None when it has none."""
    if content is None or isinstance(content, str):
        return content
    parts = [p if isinstance(p, str) else p.get("text") for p in content if isinstance(p, (str, dict))]
    parts = [p for p in parts if isinstance(p, str)]
    return "\n".join(parts) if parts else None


class InvalidRecord(msgspec.Struct, frozen=True):
    """Why one record was rejected. `index` is its 0-based position among the records
    (the JSON array index); `line` its 1-based line in a JSONL file; `row` its 1-based data
    row in a Parquet or CSV file (the CSV header not counted); `field` the dotted path of
    the offending field, or None when the record as a whole is wrong."""

    index: int
    field: str | None
    message: str
    line: int | None = None
    row: int | None = None

    def describe(self) -> str:
        """One human line: `record 3: field `winner`: ...`, `line 4: ...` or `row 2: ...`."""
        where = f"line {self.line}" if self.line is not None else f"row {self.row}" if self.row is not None else f"record {self.index}"
        if self.field:
            return f"{where}: field `{self.field}`: {self.message}"
        return f"{where}: {self.message}"


class BattleFormatError(ValueError):
    """Raised when a battle file or record list has malformed records (and they were not
    to be skipped). `errors` lists every one; the message names the first few."""

    def __init__(self, errors: Sequence[InvalidRecord], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        shown = "; ".join(e.describe() for e in self.errors[:_MESSAGE_EXAMPLES])
        more = len(self.errors) - _MESSAGE_EXAMPLES
        prefix = f"{source}: " if source else ""
        count = f"{len(self.errors)} invalid record{'s' if len(self.errors) != 1 else ''}"
        tail = f"; and {more} more" if more > 0 else ""
        super().__init__(f"{prefix}{count}: {shown}{tail}")


class BattleFile(msgspec.Struct):
    """What `read_battles` returns: the valid battles in file order and the skipped records.
    `located` names where a valid battle was in the file, for a caller's own checks."""

    battles: list[Battle]
    skipped: list[InvalidRecord] = []
    layout: str = "records"  # "records" (a JSON array or a list), "lines" (JSONL) or "rows" (Parquet, CSV)
    line_numbers: list[int] | None = None  # JSONL with blank lines: the line of each record

    def located(self, k: int, message: str, field: str | None = None) -> InvalidRecord:
        """An `InvalidRecord` for `battles[k]`, at its position among all the records (the
        skipped ones counted), as the reader would have named it: record, line or row."""
        index = k
        for skipped in sorted(e.index for e in self.skipped):
            if skipped > index:
                break
            index += 1
        line = row = None
        if self.layout == "lines":
            line = self.line_numbers[index] if self.line_numbers is not None else index + 1
        elif self.layout == "rows":
            row = index + 1
        return InvalidRecord(index=index, field=field, message=message, line=line, row=row)


def read_battles(path: str | Path, *, skip_invalid: bool = False,
                 keep: Callable[[Battle], Battle | None] | None = None) -> BattleFile:
    """Read a battles file: JSON array, JSON Lines, Parquet or CSV (`arena.files.file_format`),
    in FastChat's schema or a public dump's (`arena.public_dumps`). Raises
    `BattleFormatError` naming every malformed record unless `skip_invalid`; raises
    `OSError` when the file cannot be read.

    `keep` maps each valid battle to what to keep of it (None: drop it); the file is then
    held batch by batch, never whole (`arena.battle_stream`; a public dump's conversations
    are gigabytes). `battles` then lists what was kept, so `BattleFile.located` does not
    apply. Parquet and CSV are always read in batches."""
    path = Path(path)
    if keep is None and file_format(path) in ("json", "jsonl"):
        return parse_battles(path.read_bytes(), skip_invalid=skip_invalid, source=str(path))
    from arena.battle_stream import BattleBatches  # the batches of a file (it reads records as this module does)

    batches = BattleBatches(path, skip_invalid=skip_invalid, keep=keep)
    battles = [battle for batch in batches for battle in batch]
    return BattleFile(battles=battles, skipped=batches.skipped, layout=batches.layout)


def parse_battles(data: bytes | str, *, skip_invalid: bool = False, source: str | None = None) -> BattleFile:
    """Parse battles from the bytes of a JSON array or JSONL document; see `read_battles`.

    Well-formed input takes msgspec's typed fast path (about a million records in a
    second); only input with errors pays for the record-by-record pass that names them."""
    if isinstance(data, str):
        data = data.encode()
    data = data.removeprefix(b"\xef\xbb\xbf")
    stripped = data.lstrip()
    if not stripped:
        return BattleFile(battles=[])
    line_numbers = None
    if stripped[:1] in (b"[", b"{"):
        try:
            if stripped[:1] == b"[":
                battles, errors = _parse_array(data)
            else:
                battles, errors, line_numbers = _parse_jsonl(data)
        except RecursionError:
            # msgspec recurses per level: a pathologically nested file must not be a traceback.
            raise BattleFormatError([InvalidRecord(index=0, field=None, message="nested too deeply to read")],
                                    source) from None
        except BattleFormatError as exc:  # the array as a whole is unreadable: name the file
            raise BattleFormatError(exc.errors, source) from None
    else:
        raise BattleFormatError(
            [InvalidRecord(index=0, field=None, message="expected a JSON array of battles or JSON Lines (one object per line)")],
            source,
        )
    if errors and not skip_invalid:
        raise BattleFormatError(errors, source)
    layout = "lines" if stripped[:1] == b"{" else "records"
    return BattleFile(battles=battles, skipped=errors, layout=layout, line_numbers=line_numbers)


def validate_battles(records: Iterable[Any], *, skip_invalid: bool = False) -> BattleFile:
    """Validate already-decoded records (dicts or `Battle`s), e.g. a request body.
    Same errors and skipping as `read_battles`."""
    battles: list[Battle] = []
    errors: list[InvalidRecord] = []
    for index, record in enumerate(records):
        battle, error = _convert_record(record, index)
        if error is not None:
            errors.append(error)
        else:
            battles.append(battle)
    if errors and not skip_invalid:
        raise BattleFormatError(errors)
    return BattleFile(battles=battles, skipped=errors)


def encode_battles(battles: Iterable[Battle], *, jsonl: bool = False) -> bytes:
    """Battles as FastChat-compatible JSON: an array, or one object per line with `jsonl`."""
    if jsonl:
        encoder = msgspec.json.Encoder()
        return b"".join(encoder.encode(b) + b"\n" for b in battles)
    return msgspec.json.format(msgspec.json.encode(list(battles)), indent=1) + b"\n"


def write_battles(path: str | Path, battles: Iterable[Battle]) -> None:
    """Write battles to `path`: JSON Lines when the suffix is `.jsonl`, else a JSON array."""
    path = Path(path)
    path.write_bytes(encode_battles(battles, jsonl=path.suffix == ".jsonl"))


# --- private helpers ---------------------------------------------------------------------

_AT_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?:\[(?P<index>\d+)\])?\.?(?P<field>[^`]*)`)?$", re.S)


def _first_needs_mapping(first: bytes | None) -> bool:
    """Whether the first record (its JSON text) is in a public dump's schema: then every
    record goes the mapping path, not the typed fast path that would drop its fields."""
    if first is None:
        return False
    try:
        record = msgspec.json.decode(first)
    except msgspec.DecodeError:
        return False
    return isinstance(record, dict) and needs_mapping(record)


def _parse_array(data: bytes) -> tuple[list[Battle], list[InvalidRecord]]:
    try:
        raws = msgspec.json.decode(data, type=list[msgspec.Raw])
        mapped = _first_needs_mapping(bytes(raws[0]) if raws else None)
    except msgspec.DecodeError:
        mapped = False  # not an array of values: the passes below say what is wrong
    try:
        if mapped:
            raise msgspec.DecodeError
        battles = msgspec.json.decode(data, type=list[Battle])
    except msgspec.DecodeError:
        pass  # a ValidationError, a syntax error or a public schema: record by record, below
    else:
        errors = [e for i, b in enumerate(battles) if (e := _check_values(b, i)) is not None]
        if errors:
            bad = {e.index for e in errors}
            battles = [b for i, b in enumerate(battles) if i not in bad]
        return battles, errors
    try:
        records = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        # Syntax errors stop everything: nothing after the break can be trusted.
        raise BattleFormatError([InvalidRecord(index=0, field=None, message=f"not valid JSON ({exc})")]) from None
    if not isinstance(records, list):
        raise BattleFormatError([InvalidRecord(index=0, field=None, message="expected a JSON array of battles")])
    battles, errors = [], []
    for index, record in enumerate(records):
        battle, error = _convert_record(record, index)
        if error is not None:
            errors.append(error)
        else:
            battles.append(battle)
    return battles, errors


def _parse_jsonl(data: bytes) -> tuple[list[Battle], list[InvalidRecord], list[int] | None]:
    """(battles, errors, the line of each record when blank lines make it other than its
    position + 1)."""
    lines = data.splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    line_numbers = [n for n, _ in numbered] if len(numbered) != len(lines) else None
    try:
        if _first_needs_mapping(numbered[0][1] if numbered else None):
            raise msgspec.DecodeError
        # One typed decode of the lines joined into an array is ~10x faster than a loop.
        battles = msgspec.json.decode(b"[" + b",".join(line for _, line in numbered) + b"]", type=list[Battle])
    except (msgspec.DecodeError, RecursionError):  # record by record, below, to say which line
        pass
    else:
        errors = [e for i, b in enumerate(battles) if (e := _check_values(b, i, numbered[i][0])) is not None]
        if errors:
            bad = {e.index for e in errors}
            battles = [b for i, b in enumerate(battles) if i not in bad]
        return battles, errors, line_numbers
    battles, errors = [], []
    decoder = msgspec.json.Decoder()
    for index, (line_number, line) in enumerate(numbered):
        try:
            record = decoder.decode(line)
        except msgspec.DecodeError as exc:
            errors.append(InvalidRecord(index=index, field=None, message=f"not valid JSON ({exc})", line=line_number))
            continue
        except RecursionError:
            errors.append(InvalidRecord(index=index, field=None, message="nested too deeply to read", line=line_number))
            continue
        battle, error = _convert_record(record, index, line_number)
        if error is not None:
            errors.append(error)
        else:
            battles.append(battle)
    return battles, errors, line_numbers


def _convert_record(record: Any, index: int, line: int | None = None, row: int | None = None) -> tuple[Battle | None, InvalidRecord | None]:
    if isinstance(record, Battle):
        battle = record
    else:
        if not isinstance(record, dict):
            return None, InvalidRecord(index, None, f"expected an object, got {type(record).__name__}", line, row)
        try:
            battle = msgspec.convert(to_fastchat(record) if needs_mapping(record) else record, Battle)
        except RecordError as exc:
            return None, InvalidRecord(index, exc.field, exc.message, line, row)
        except msgspec.ValidationError as exc:
            return None, msgspec.structs.replace(_from_validation_error(str(exc), index, line), row=row)
    error = _check_values(battle, index, line)
    if error is not None and row is not None:
        error = msgspec.structs.replace(error, row=row)
    return (None, error) if error is not None else (battle, None)


def _from_validation_error(text: str, index: int, line: int | None) -> InvalidRecord:
    match = _AT_PATH.match(text)
    message, field = (match.group("message"), match.group("field") or None) if match else (text, None)
    missing = re.match(r"Object missing required field `(\w+)`", message)
    if missing:
        return InvalidRecord(index, missing.group(1), "missing (required)", line)
    if message.startswith("Invalid enum value") and field == "winner":
        value = message.removeprefix("Invalid enum value").strip()
        return InvalidRecord(index, "winner", f"{value} is not one of {', '.join(WINNERS)}", line)
    return InvalidRecord(index, field, message[0].lower() + message[1:] if message else message, line)


def _check_values(battle: Battle, index: int, line: int | None = None) -> InvalidRecord | None:
    """The rules msgspec's types cannot say: names present, two different models, a real time."""
    if not battle.model_a.strip():
        return InvalidRecord(index, "model_a", "empty model name", line)
    if not battle.model_b.strip():
        return InvalidRecord(index, "model_b", "empty model name", line)
    if battle.model_a == battle.model_b:
        return InvalidRecord(index, "model_b", f"same model as model_a ({battle.model_a!r}); a model cannot battle itself", line)
    if battle.tstamp is not None and not math.isfinite(battle.tstamp):
        return InvalidRecord(index, "tstamp", "not a finite number", line)
    if battle.weight is not None and battle.weight < 1:
        return InvalidRecord(index, "weight", "must be a whole number of battles, at least 1", line)
    for side in ("length_a", "length_b"):
        value = getattr(battle, side)
        if value is not None and value < 0:
            return InvalidRecord(index, side, "negative length", line)
    return None
