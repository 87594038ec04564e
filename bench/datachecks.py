"""Claim: `arena data check` scales — 100k Alpaca records in ≤ 15 s on 2 cores, 1M in
≤ 4 GB — and its near-duplicate search finds what datasketch's MinHashLSH finds, at least
as fast.

Generates Alpaca files (`bench/_alpaca_gen.py`: realistic lengths, varied text, 5% Chinese,
planted exact and near duplicates whose copies land anywhere later in the file, across
block boundaries), then, in one run:

- `cli_<n>`: the user's command, `arena data check FILE --json`, as a subprocess: wall
  seconds and the peak memory of its whole process tree (the command and its scan workers,
  summed as PSS so shared pages count once, sampled every 0.1 s from /proc), and recall of the planted pairs in its findings
  (near: both records in one `near_duplicate` finding; exact: in one `exact_duplicate`);
- the near-duplicate search alone, on the same records' shingles (the checks' tokens,
  word 2-shingles, threshold 0.7, 128 permutations), both confirmed by exact Jaccard:
  ours (`_minhash`: vectorised MinHash, LSH band keys, candidate pairs) against
  datasketch's `MinHash.bulk` + `MinHashLSH` (insert, then query every record), run
  directly; `near_speed_ratio` = datasketch seconds / ours; recall of each over the planted
  near pairs whose true Jaccard ≥ 0.7;
- `--templated`: the same on templated files (`_alpaca_gen.generate_templated`: one long
  instruction wrapper around a short slot and answer in every record, as much real
  instruction data is), keys `cli_templated_<n>`, `near_templated_<n>`: the data on which
  an uncapped LSH bucket makes every pair a candidate;
- `--old-rev REV`: the same command from that git revision (its `arena`, `evaluators` and
  `service` extracted with `git archive`), on the first size, right after ours: seconds,
  peak memory, `same_findings` (its JSON findings and summary equal ours) and
  `cli_vs_old` = its seconds / ours.

Prints one JSON line. Run: `OMP_NUM_THREADS=1 python bench/datachecks.py [--sizes 100000,1000000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _alpaca_gen import generate, generate_templated  # noqa: E402


def _tree_memory(pid: int) -> int:
    """Proportional set size (PSS) of `pid` and every descendant, from /proc: forked scan
    workers share their parent's pages, which summing RSS would count once per process."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration, ValueError):
            pass
    return total


def run_measured(cmd: list[str], env: dict | None = None,
                 cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `cmd`; return (result, wall seconds, peak memory of its process tree in MB (PSS))."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_memory(proc.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, peak / 2**20


def cli_run(path: Path, planted: dict, tmp: Path) -> tuple[dict, dict]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"ARENA_DATA_DIR": str(tmp / "data")}
    result, wall, rss = run_measured([sys.executable, "-m", "service.cli.__main__", "data", "check", str(path), "--json"],
                                     env=env)
    if result.returncode != 0:
        raise SystemExit(f"arena data check failed: {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    group_of: dict[str, dict[int, int]] = {"near_duplicate": {}, "exact_duplicate": {}}
    for k, f in enumerate(report["findings"]):
        if f["check"] in group_of:
            for i in f["record_indices"]:
                group_of[f["check"]][i] = k

    def recall(pairs: list[list[int]], check: str) -> float:
        g = group_of[check]
        return sum(1 for i, j in pairs if i in g and g.get(i) == g.get(j)) / max(len(pairs), 1)

    return {"s": round(wall, 2), "peak_mb": round(rss), "recall_near": round(recall(planted["near"], "near_duplicate"), 4),
            "recall_exact": round(recall(planted["exact"], "exact_duplicate"), 4),
            "findings": {k: v["findings"] for k, v in report["summary"].items()}}, report


def near_search(path: Path, planted: dict, tmp: Path, threshold: float = 0.7, num_perm: int = 128) -> dict:
    """Ours vs datasketch's MinHashLSH on the same shingles, both confirmed exactly."""
    from datasketch import MinHash, MinHashLSH

    from evaluators import _text
    from evaluators._checks_context import _Record
    from evaluators._checks_scan import Hashers
    from evaluators._minhash import candidate_pairs
    from evaluators.datachecks import CheckConfig
    from service.datasets import RecordFile, spool_records

    spool_records(path, tmp / "spool.jsonl")
    records, _ = (src := RecordFile(tmp / "spool.jsonl")).read(0, len(src))
    tokens = [_Record(r).full_tokens for r in records]
    del records
    sets = [_text.shingles(t, 2) for t in tokens]

    def confirmed(pairs) -> set[tuple[int, int]]:
        return {(i, j) for i, j in pairs if sets[i] and sets[j] and _text.jaccard(sets[i], sets[j]) >= threshold}

    t0 = time.perf_counter()
    hashers = Hashers(CheckConfig(near_duplicate_threshold=threshold, num_perm=num_perm))
    keys, signature = hashers.sketch(hashers.full, tokens, 2)
    ours = confirmed(map(tuple, candidate_pairs(keys, signature=signature, threshold=threshold).tolist()))
    ours_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes = MinHash.bulk(([s.encode("utf-8") for s in shingles] for shingles in sets), num_perm=num_perm, seed=1)
    with lsh.insertion_session() as session:
        for i, (h, s) in enumerate(zip(hashes, sets)):
            if s:
                session.insert(i, h)
    found = set()
    for i, (h, s) in enumerate(zip(hashes, sets)):
        if s:
            found.update((min(i, j), max(i, j)) for j in lsh.query(h) if j != i)
    theirs = confirmed(found)
    theirs_s = time.perf_counter() - t0

    true_pairs = [(i, j) for i, j in planted["near"] if sets[i] and _text.jaccard(sets[i], sets[j]) >= threshold]
    return {"ours_s": round(ours_s, 2), "datasketch_s": round(theirs_s, 2),
            "near_speed_ratio": round(theirs_s / ours_s, 2),
            "planted_near_above_threshold": len(true_pairs),
            "recall_ours": round(sum(p in ours for p in true_pairs) / max(len(true_pairs), 1), 4),
            "recall_datasketch": round(sum(p in theirs for p in true_pairs) / max(len(true_pairs), 1), 4),
            "pairs_ours": len(ours), "pairs_datasketch": len(theirs)}


def old_run(path: Path, rev: str, tmp: Path, new_report: dict) -> dict:
    """The same command, `arena data check FILE --json`, from git revision `rev` (its tree
    extracted with `git archive`, run from there), and whether its findings are ours."""
    tree = tmp / "old"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "arena", "evaluators", "service"],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {
        "ARENA_DATA_DIR": str(tmp / "old-data"), "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    result, wall, rss = run_measured([sys.executable, "-m", "service.cli.__main__", "data", "check", str(path), "--json"],
                                     env=env, cwd=tree)
    if result.returncode != 0:
        raise SystemExit(f"old implementation failed: {result.stderr[-2000:]}")
    old_report = json.loads(result.stdout)
    return {"rev": rev, "s": round(wall, 2), "peak_mb": round(rss),
            "same_findings": old_report["findings"] == new_report["findings"] and old_report["summary"] == new_report["summary"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--near-sizes", default="100000", help="sizes at which to run the near-duplicate comparison")
    parser.add_argument("--templated", action="store_true", help="templated records (one long shared wrapper)")
    parser.add_argument("--old-rev", default=None, help="also time this git revision's `arena data check` on the first size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    near_sizes = {int(s) for s in args.near_sizes.split(",") if s}
    kind = "templated_" if args.templated else ""
    out: dict = {"bench": "datachecks", "data": "templated" if args.templated else "varied", "cpus": len(os.sched_getaffinity(0)), "load_avg_1min": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for n in sizes:
            path = tmp / f"alpaca_{n}.jsonl"
            planted = (generate_templated if args.templated else generate)(path, n, seed=args.seed)
            out[f"planted_{kind}{n}"] = {k: len(v) for k, v in planted.items()}
            out[f"cli_{kind}{n}"], report = cli_run(path, planted, tmp)
            if args.old_rev and n == sizes[0]:
                out[f"old_{kind}{n}"] = old_run(path, args.old_rev, tmp, report)
                out[f"cli_vs_old_{kind}{n}"] = round(out[f"old_{kind}{n}"]["s"] / out[f"cli_{kind}{n}"]["s"], 2)
            del report
            if n in near_sizes:
                out[f"near_{kind}{n}"] = near_search(path, planted, tmp)
            path.unlink()
    first, last = sizes[0], sizes[-1]
    out["goals"] = {f"cli_{kind}{first}_s<=15": out[f"cli_{kind}{first}"]["s"] <= 15,
                    f"cli_{kind}{last}_peak_mb<=4096": out[f"cli_{kind}{last}"]["peak_mb"] <= 4096}
    out["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
