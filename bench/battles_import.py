"""Claim: `arena battles import` of a public arena dump holds one batch of it at a time,
not the dump: its peak memory does not grow with the file, at no cost in time.

Writes `--rows` rows in the arena-human-preference-140k schema as Parquet (as
`bench/ratings_formats.py`: two conversations a row, Alpaca-like answer lengths) and the same
rows as JSON Lines, then runs the user's command, `arena battles import FILE`, on each in a
subprocess (wall seconds and the peak PSS of its process tree, sampled every 0.1 s) against
an empty Redis database; with `--old-rev REV` the same command from that git revision (its
`arena`, `evaluators` and `service` extracted with `git archive`) right after ours, on a
fresh database: `<file>_vs_old` = its seconds / ours, `<file>_memory_vs_old` its peak / ours,
and whether both logged the same votes (`arena battles export` of each, compared).

Uses the Redis at `REDIS_URL`, databases 14 and 15 (flushed before and after), else an
embedded server. Prints one JSON line. Run:
`OMP_NUM_THREADS=1 python bench/battles_import.py [--rows 140000] [--old-rev REV]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import redis  # noqa: E402

from _redis import bench_redis  # noqa: E402
from ratings_formats import arena, old_tree, parquet_to_jsonl, write_dump  # noqa: E402


def database(url: str, db: int) -> str:
    """`url` with its database number replaced by `db`."""
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


def imported(path: Path, url: str, tmp: Path, tree: Path | None) -> tuple[float, float, str, bytes]:
    """(seconds, peak MB, the command's line, the export of what it logged) on an empty database."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    env = {"REDIS_URL": url, "ARENA_DATA_DIR": str(tmp / "data")}
    result, wall, mb = arena(["battles", "import", str(path)], tree, env)
    exported = tmp / "export.jsonl"
    arena(["battles", "export", str(exported)], None, env)  # both exported by this checkout, to compare
    client.flushdb()
    client.close()
    return wall, mb, result.stdout.strip(), exported.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=140_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--old-rev", default=None, help="also run this git revision's command on each file")
    args = parser.parse_args()

    out: dict = {"bench": "battles_import", "rows": args.rows, "cpus": len(os.sched_getaffinity(0)),
                 "load_avg_1min": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp, bench_redis("battles-import") as url:
        tmp = Path(tmp)
        ours, theirs = database(url, 14), database(url, 15)
        files = {"dump_parquet": tmp / "arena-140k.parquet", "dump_jsonl": tmp / "arena-140k.jsonl"}
        write_dump(files["dump_parquet"], args.rows, args.models, args.seed)
        parquet_to_jsonl(files["dump_parquet"], files["dump_jsonl"])
        tree = old_tree(args.old_rev, tmp / "old") if args.old_rev else None
        if tree is not None:
            out["old_rev"] = args.old_rev
        for name, path in files.items():
            out[f"{name}_mb_on_disk"] = round(path.stat().st_size / 1e6)
            seconds, mb, line, logged = imported(path, ours, tmp, None)
            out[f"{name}_s"], out[f"{name}_peak_mb"], out[f"{name}_said"] = round(seconds, 1), round(mb), line
            if tree is not None:
                old_seconds, old_mb, _, old_logged = imported(path, theirs, tmp, tree)
                out[f"{name}_old_s"], out[f"{name}_old_peak_mb"] = round(old_seconds, 1), round(old_mb)
                out[f"{name}_vs_old"] = round(old_seconds / seconds, 2)
                out[f"{name}_memory_vs_old"] = round(old_mb / mb, 1)
                out[f"{name}_same_votes_as_old"] = old_logged == logged
    print(json.dumps(out))


if __name__ == "__main__":
    main()
