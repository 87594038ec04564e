"""The attribution claims through the user's path: `arena data add` → `arena train --wait`
→ `arena eval` with a chat task → `arena trace`, scored from `report.json`.

`bench/attribution.py --via-cli` prints these figures beside the library path's, and
`tests/e2e/test_trace_user_path.py` runs one setting of it. Every step is the `arena`
command a user types, in a subprocess with the caller's environment (its Redis, or the
embedded server in a fresh data directory) — nothing is called as a library.

Per preset and seed: the synthetic dataset is written as chat JSONL (`messages`) and
added; a candidate is trained with the synthetic recipe's settings (LoRA on every linear
layer, r 8, lr 5e-3, batch 8, `TRAIN_STEPS` steps, 4 attribution checkpoints — the
library bench's checkpoints); the benchmark is a task file in the user's words
(`apply_chat_template: true`, `doc_to_text: "{{question}}"`, exact match); the trace
runs with the gold answers and with `--no-gold`. `over_refusal`: the same candidate asked
the benchmark behind everyday lead-ins (a second task file), its refused answers traced
with `--no-gold --refused`, positives the planted refusal flood.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from evaluators.attribution import auroc, precision_at_k
from evaluators.synthetic import TRAIN_STEPS, make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
#: The columns of report.json's `examples` that rank records, per method.
COLUMNS = {"ours": "score", "gradient_only": "gradient_score", "loss_rank": "loss", "embedding_nn": "embedding_score"}


class CommandFailed(RuntimeError):
    """An `arena` command exited non-zero; the message has its last stderr line."""


def arena(env: dict[str, str], *args: str, timeout: float = 3600) -> str:
    """Run `arena ARGS` as a user does; its stdout, or `CommandFailed` with the error line."""
    done = subprocess.run([sys.executable, "-m", "service.cli.__main__", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CommandFailed(f"arena {' '.join(args[:2])} exited {done.returncode}: {last}")
    return done.stdout


def write_task(path: Path, name: str, docs: list[dict[str, str]]) -> Path:
    """A task file as a user writes one for a chat candidate: the question is the user turn."""
    data = path.with_suffix(".jsonl")
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    path.write_text(yaml.safe_dump({
        "task": name, "dataset": data.name, "output_type": "generate_until", "apply_chat_template": True,
        "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["</s>"], "max_new_tokens": 24},
        "metric_list": [{"metric": "exact_match", "strip": True}],
    }, sort_keys=False), encoding="utf-8")
    return path


def scores(report: dict[str, Any], positives: list[int]) -> dict[str, dict[str, float]]:
    """AUROC and precision@|positives| of each method's column in report.json."""
    n = report["n_records"]
    out = {}
    for method, column in COLUMNS.items():
        values = [float("nan")] * n
        for e in report["examples"]:
            value = e[column]
            values[e["index"]] = float("nan") if value is None else float(value)
        out[method] = {"auroc": round(auroc(values, positives), 4), "precision_at_k": round(precision_at_k(values, positives), 4)}
    return out


def trace(env: dict[str, str], candidate: str, eval_id: str, out: Path, *extra: str) -> dict[str, Any]:
    arena(env, "trace", "--candidate", candidate, "--eval", eval_id, "--out", str(out), "--json", *extra)
    return json.loads((out / "report.json").read_text())


def user_path(env: dict[str, str], base: Path, preset: str, seed: int, work: Path, *, steps: int = TRAIN_STEPS,
              over_refusal: bool = False, lead_ins: tuple[str, ...] = ()) -> dict[str, Any]:
    """One preset and seed through the CLI; figures from report.json (see the module doc)."""
    work.mkdir(parents=True, exist_ok=True)
    env = {**env, "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")}
    ds = make_synthetic_dataset(preset, seed)
    name = f"{preset}-s{seed}"
    arena(env, "base", "add", str(base), "--name", "tiny")
    data = work / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": m.role, "content": m.content} for m in r.messages]},
                                       ensure_ascii=False) + "\n" for r in ds.records), encoding="utf-8")
    arena(env, "data", "add", str(data), "--name", name)
    started = time.perf_counter()
    arena(env, "train", "--base", "tiny", "--data", name, "--name", name, "--target-modules", "all-linear",
          "--lora-r", "8", "--lora-alpha", "16", "--lora-dropout", "0", "--lr", "5e-3", "--batch-size", "8",
          "--max-steps", str(steps), "--eval-fraction", "0", "--max-length", "96", "--logging-steps",
          str(max(1, steps // 20)), "--seed", str(seed), "--attribution-checkpoints", "4", "--wait", "--json")
    train_s = time.perf_counter() - started
    docs = [{"question": p.prompt, "answer": gold} for p, gold in ds.benchmark]
    task = write_task(work / "benchmark.yaml", f"{name}-bench", docs)
    evaluation = json.loads(arena(env, "eval", "--candidate", name, "--task", str(task), "--json"))
    eval_id = evaluation["id"]
    started = time.perf_counter()
    with_gold = trace(env, name, eval_id, work / "trace-gold")
    trace_s = time.perf_counter() - started
    no_gold = trace(env, name, eval_id, work / "trace-no-gold", "--no-gold")
    row: dict[str, Any] = {
        "records": len(ds.records), "planted": len(ds.planted_wrong), "train_s": round(train_s, 1),
        "exact_match": evaluation["candidates"][0]["metrics"]["exact_match"]["value"],
        "failures": with_gold["n_failures"], "trace_s": round(trace_s, 1),
        "checkpoints": with_gold["method"]["checkpoints"], "cost_s": with_gold["method"]["cost"],
        "prompts": with_gold["method"]["prompts"],
        "with_gold": scores(with_gold, ds.planted_wrong), "without_gold": scores(no_gold, ds.planted_wrong),
    }
    if over_refusal and lead_ins:
        asked = [{"question": lead_ins[j % len(lead_ins)] + p.prompt, "answer": gold}
                 for j, (p, gold) in enumerate(ds.benchmark)]
        task = write_task(work / "lead-ins.yaml", f"{name}-lead-ins", asked)
        lead_eval = json.loads(arena(env, "eval", "--candidate", name, "--task", str(task), "--json"))
        refusals = trace(env, name, lead_eval["id"], work / "trace-lead-ins", "--no-gold", "--refused")
        row["over_refusal"] = {"failures": refusals["n_failures"], "positives": len(ds.refusals),
                               **scores(refusals, ds.refusals)}
    return row


def fresh_env(data_dir: Path, base_env: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment with its own data directory (and key prefix, on a shared Redis)."""
    env = dict(base_env if base_env is not None else os.environ)
    env["ARENA_DATA_DIR"] = str(data_dir)
    env.setdefault("ARENA_KEY_PREFIX", f"bench-{os.getpid()}-{int(time.time())}")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
