"""Claim: `arena ratings` streams every battles format users bring — FastChat's JSON array
as well as JSON Lines, and the public arena's Parquet dump in its own schema — in bounded
memory, and a JSON array as fast as JSON Lines.

Writes, from one seed:

- `--battles` synthetic battles (as `bench/ratings.py`: 100 models, 15% ties) as JSON Lines
  and as a JSON array pretty-printed with indent 1, as FastChat's `clean_battle*.json` and
  `arena battles export` write it;
- `--dump-rows` rows in the arena-human-preference-140k schema as Parquet: `id`, `model_a`,
  `model_b`, `winner` (with `both_bad`), an ISO `timestamp`, `language`, and two
  conversations of one or two turns whose answers have Alpaca-like lengths (lognormal,
  median ~1,200 characters), written in row groups;

then runs the user's command, `arena ratings FILE --bootstrap 1000 --json`, on each as a
subprocess (wall seconds and the peak memory of its process tree, PSS, sampled every 0.1 s)
and checks the JSON Lines and JSON array boards are the same. Two more commands read the
file the validating way, batch by batch (`arena.battle_stream`): `category_*`, `arena
ratings DUMP.jsonl --category language=zh` on the dump's rows as JSON Lines (with their
conversations: tags come from the prompts), and `explain_*`, `arena ratings explain` of
the JSON Lines board's top two models (its counts, then one pass for the listed
battles). `--old-rev REV` runs the same command from that git revision (its `arena`, `evaluators` and `service` extracted with
`git archive`) on each file right after ours: `<file>_vs_old` = its seconds / ours,
`<file>_old_mb` its peak, and whether its board is ours. `--memory-battles N` adds a JSON
array of N battles (written in blocks, deleted after): constant memory means its peak is
the 1M array's.

Prints one JSON line. Run: `OMP_NUM_THREADS=1 python bench/ratings_formats.py [--old-rev REV]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from datachecks import run_measured  # noqa: E402
from ratings import write_jsonl  # noqa: E402


def jsonl_to_array(source: Path, target: Path, block: int = 100_000) -> None:
    """The JSON Lines file as one JSON array, indent 1 (`json.dump(..., indent=1)`'s layout)."""
    with source.open("rb") as lines, target.open("wb") as out:
        out.write(b"[\n")
        first = True
        while True:
            chunk = [line for _, line in zip(range(block), lines)]
            if not chunk:
                break
            pretty = msgspec.json.format(b"[" + b",".join(chunk) + b"]", indent=1)
            out.write((b"" if first else b",\n") + pretty[2:-2])  # without "[\n" and "\n]"
            first = False
        out.write(b"\n]\n")


def write_dump(path: Path, rows: int, models: int, seed: int, group: int = 20_000) -> None:
    """`rows` rows in the 140k schema, as Parquet in row groups of `group`."""
    rng = np.random.default_rng(seed)
    words = "the model answer explains why this works and what to check next 模型 回答 这个 问题".split()
    strengths = rng.normal(0, 1, models)
    # Answers drawn from 20,000 texts of Alpaca-like lengths (lognormal, median ~1,200 characters).
    lengths = np.clip(rng.lognormal(np.log(1200), 0.8, 20_000), 20, 20_000).astype(int)
    pool = [" ".join(words[i] for i in rng.integers(0, len(words), max(1, k // 6))) for k in lengths.tolist()]
    schema = None
    writer = None
    try:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            a = rng.integers(0, models, n)
            b = (a + rng.integers(1, models, n)) % models
            p_a = 1 / (1 + np.exp(strengths[b] - strengths[a]))
            u = rng.random(n)
            winner = np.where(u < p_a * 0.85, "model_a", np.where(u < 0.85, "model_b", np.where(u < 0.93, "tie", "both_bad")))
            picks = rng.integers(0, len(pool), (n, 2, 2))
            turns = rng.integers(1, 3, n)

            def conversation(row: int, side: int) -> list[dict]:
                out = []
                for t in range(int(turns[row])):
                    out += [{"role": "user", "content": pool[int(picks[row, t, 1 - side])][:200]},
                            {"role": "assistant", "content": pool[int(picks[row, t, side])]}]
                return out

            table = pa.table({
                "id": [f"id-{start + k}" for k in range(n)],
                "model_a": [f"model-{i:03d}" for i in a.tolist()],
                "model_b": [f"model-{i:03d}" for i in b.tolist()],
                "winner": winner.tolist(),
                "conversation_a": [conversation(k, 0) for k in range(n)],
                "conversation_b": [conversation(k, 1) for k in range(n)],
                "turn": turns.tolist(),
                "language": ["English"] * n,
                "timestamp": [f"2025-{1 + (start + k) // 500_000 % 12:02d}-{1 + (start + k) // 20_000 % 28:02d}T"
                              f"{(start + k) // 3600 % 24:02d}:{(start + k) // 60 % 60:02d}:{(start + k) % 60:02d}" for k in range(n)],
            }, schema=schema)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(path, schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def old_tree(rev: str, tree: Path) -> Path:
    """`rev`'s `arena`, `evaluators` and `service` extracted into `tree` (`git archive`), to
    run that revision's command beside ours (`PYTHONPATH=tree`)."""
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "arena", "evaluators", "service"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def parquet_to_jsonl(source: Path, target: Path) -> None:
    """A Parquet file's rows as JSON Lines, batch by batch."""
    with target.open("wb") as out:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=10_000):
            out.writelines(msgspec.json.encode(row) + b"\n" for row in batch.to_pylist())


#: What `arena ratings FILE` is given unless a measure says otherwise.
FIT = ("--bootstrap", "1000", "--json")


def arena(args: list[str], tree: Path | None = None, env: dict[str, str] | None = None):
    """`arena ARGS` in a subprocess, this checkout's or (`tree`, from `old_tree`) an old
    revision's, with `env` added: (result, seconds, peak MB of its processes, PSS); a
    failure stops the bench."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if tree is not None:
        env |= {"PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    result, wall, mb = run_measured([sys.executable, "-m", "service.cli.__main__", *args], env=env, cwd=tree or ROOT)
    if result.returncode != 0:
        raise SystemExit(f"arena {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result, wall, mb


def command(path: Path, tree: Path | None = None, args: tuple[str, ...] = FIT, sub: tuple[str, ...] = ()) -> tuple[float, float, str]:
    """`arena ratings [SUB] FILE ARGS`: (seconds, peak MB of its processes, stdout)."""
    result, wall, mb = arena(["ratings", *sub, str(path), *args], tree)
    return wall, mb, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--dump-rows", type=int, default=140_000)
    parser.add_argument("--memory-battles", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--old-rev", default=None, help="also run this git revision's command on each file")
    args = parser.parse_args()

    out: dict = {"bench": "ratings_formats", "battles": args.battles, "dump_rows": args.dump_rows,
                 "cpus": len(os.sched_getaffinity(0)), "load_avg_1min": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {"jsonl": tmp / "battles.jsonl", "json_array": tmp / "battles.json", "dump_parquet": tmp / "arena-140k.parquet"}
        write_jsonl(files["jsonl"], args.battles, args.models, args.seed)
        jsonl_to_array(files["jsonl"], files["json_array"])
        write_dump(files["dump_parquet"], args.dump_rows, args.models, args.seed)
        if args.memory_battles:
            big = tmp / "big.jsonl"
            write_jsonl(big, args.memory_battles, args.models, args.seed + 1)
            files["big_json_array"] = tmp / "big.json"
            jsonl_to_array(big, files["big_json_array"])
            big.unlink()
        tree = old_tree(args.old_rev, tmp / "old") if args.old_rev else None
        if tree is not None:
            out["old_rev"] = args.old_rev
        dump_jsonl = tmp / "arena-140k.jsonl"
        parquet_to_jsonl(files["dump_parquet"], dump_jsonl)
        boards = {}

        def measure(name: str, path: Path, args: tuple[str, ...] = FIT, sub: tuple[str, ...] = ()) -> None:
            """Ours, then (with --old-rev) the old revision's, on the same file."""
            out[f"{name}_mb_on_disk"] = round(path.stat().st_size / 1e6)
            seconds, mb, boards[name] = command(path, None, args, sub)
            out[f"{name}_s"], out[f"{name}_peak_mb"] = round(seconds, 2), round(mb)
            if tree is not None:
                old_seconds, old_mb, old_board = command(path, tree, args, sub)
                out[f"{name}_old_s"], out[f"{name}_old_peak_mb"] = round(old_seconds, 2), round(old_mb)
                out[f"{name}_vs_old"] = round(old_seconds / seconds, 2)
                out[f"{name}_same_board_as_old"] = json.loads(old_board) == json.loads(boards[name])

        for name, path in files.items():
            measure(name, path)
        measure("category", dump_jsonl, ("--category", "language=zh", *FIT))
        top = [row["model"] for row in json.loads(boards["jsonl"])[:2]]
        measure("explain", files["jsonl"], (*top, "--json"), ("explain",))
        out["json_array_vs_jsonl"] = round(out["jsonl_s"] / out["json_array_s"], 2)
        out["json_array_same_board_as_jsonl"] = json.loads(boards["json_array"]) == json.loads(boards["jsonl"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
