"""Claim: a trace over the bounded checkpoint set (`--attribution-checkpoints`, default 5,
spread over training) costs a fraction of one over every epoch checkpoint, and finds the
same planted records.

Through the user's path (`bench/user_path.py`): the synthetic `default` preset (106
records, wrong answers planted on one topic) is added and trained with `arena train
--attribution-checkpoints 0` (every epoch checkpoint kept, as runs did before: ~170 at
2,400 steps), benchmarked with a chat task file, then traced twice from the same run and
eval: `arena trace --checkpoints 100000` (all of them: the baseline) and `arena trace`
with the default 5. Prints one JSON line: wall seconds of each trace command, the ratio,
the feature bytes each leaves on disk, and AUROC / precision@|planted| of both reports.

Run: `OMP_NUM_THREADS=1 python bench/trace_cost.py [--steps 2400] [--preset default]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: bench.*, evaluators.*

from bench.user_path import arena, fresh_env, scores, write_task  # noqa: E402
from evaluators.synthetic import make_synthetic_dataset  # noqa: E402
from service.models.tiny import BUILDER_VERSION, build_tiny_base  # noqa: E402


def _bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=None)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    base = args.base or build_tiny_base(Path.home() / ".cache" / "adapter-arena-bench" / f"tiny-small-v{BUILDER_VERSION}",
                                        size="small")
    ds = make_synthetic_dataset(args.preset, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-trace-cost-") as tmp:
        work = Path(tmp)
        env = fresh_env(work / "data")
        arena(env, "base", "add", str(base), "--name", "tiny")
        data = work / "facts.jsonl"
        data.write_text("".join(json.dumps({"messages": [{"role": m.role, "content": m.content} for m in r.messages]})
                                + "\n" for r in ds.records))
        arena(env, "data", "add", str(data), "--name", "facts")
        started = time.perf_counter()
        arena(env, "train", "--base", "tiny", "--data", "facts", "--name", "cand", "--target-modules", "all-linear",
              "--lora-r", "8", "--lora-alpha", "16", "--lora-dropout", "0", "--lr", "5e-3", "--batch-size", "8",
              "--max-steps", str(args.steps), "--eval-fraction", "0", "--max-length", "96", "--seed", str(args.seed),
              "--attribution-checkpoints", "0", "--wait", "--json")
        train_s = time.perf_counter() - started
        task = write_task(work / "bench.yaml", "facts-bench", [{"question": p.prompt, "answer": g} for p, g in ds.benchmark])
        eval_id = json.loads(arena(env, "eval", "--candidate", "cand", "--task", str(task), "--json"))["id"]
        out: dict[str, object] = {"bench": "trace_cost", "preset": args.preset, "records": len(ds.records),
                                  "planted": len(ds.planted_wrong), "steps": args.steps, "train_s": round(train_s, 1)}
        features = work / "data" / "features"
        for name, extra in (("all_checkpoints", ["--checkpoints", "100000"]), ("bounded", [])):
            shutil.rmtree(features, ignore_errors=True)  # each trace computes its own features
            started = time.perf_counter()
            arena(env, "trace", "--candidate", "cand", "--eval", eval_id, "--out", str(work / name), "--json", *extra)
            wall = time.perf_counter() - started
            report = json.loads((work / name / "report.json").read_text())
            out[name] = {"trace_command_s": round(wall, 1), "checkpoints": len(report["method"]["checkpoints"]),
                         "feature_bytes": _bytes(features), "cost_s": report["method"]["cost"],
                         **scores(report, ds.planted_wrong)["ours"]}
        out["ratio"] = round(out["all_checkpoints"]["trace_command_s"] / out["bounded"]["trace_command_s"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
