"""Claim: our runner scores a task exactly as lm-evaluation-harness does, and at least as
fast (ratio >= 1.0).

One candidate (a LoRA trained with `train_adapter` on the tiny base, on the
`count_words` word task, answers "three" / "four" / "five") and one task: a
generate_until task over held-out questions (`--docs` of them), exact match, exported
with `export_lm_eval`. Then:

- ours: `evaluators.runner.evaluate` over `service.eval_backend.BackendModel` on an
  `InProcessBackend` (what the `eval` job runs), 64 documents per backend call as the
  job does, batches of `--batch-size` rows;
- lm-eval's CLI as a user runs it, on the exported task:
  `lm_eval --model hf --model_args pretrained=BASE,peft=ADAPTER,dtype=float32 --tasks T
  --include_path DIR --log_samples --batch_size B`: its scores and samples are compared
  with ours (same aggregate and stderr, same response per document hash);
- lm-eval's timing: its own `HFLM` (the same `pretrained=BASE, peft=ADAPTER`) loaded
  once in a subprocess, then `lm_eval.simple_evaluate` on the task, timed.

Both timings exclude imports and model loading, come after one warm-up run each, and
are the best of `--repeats` rounds (the round least disturbed by other load). `ratio`
is ours / lm-eval in samples per second of wall time; `cpu_ratio` the same in process
CPU time, which a busy shared machine moves far less. float32 on CPU (greedy decoding
is then exact, so responses must match one for one).

lm-eval comes from the `bench` extra (`pip install -e '.[bench]'`); it installs beside
the pinned torch / transformers / peft without changing them, so it runs from the
project's own environment (`--lm-eval-python` points at another interpreter if not).
Prints one JSON line. Run: `OMP_NUM_THREADS=1 python bench/evaluation.py [--docs 256]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from transformers.utils import logging as hf_logging  # noqa: E402

from evaluators.runner import evaluate  # noqa: E402
from evaluators.tasks import export_lm_eval, task_from_records  # noqa: E402
from service.eval_backend import BackendModel  # noqa: E402
from service.generation import InProcessBackend  # noqa: E402
from service.models.corpus import word_task  # noqa: E402
from service.models.tiny import build_tiny_base  # noqa: E402
from service.training import TrainConfig, train_adapter  # noqa: E402

CANDIDATE = "counter"

# Runs in the lm-eval interpreter: load HFLM once, warm up, then time simple_evaluate.
LM_EVAL_TIMER = r"""
import json, os, sys, time
import torch
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
base, adapter, include, task, batch, repeats = sys.argv[1:7]
lm = HFLM(pretrained=base, peft=adapter, dtype="float32", device="cpu", batch_size=int(batch))
manager = TaskManager(include_path=include)
rounds = []
for i in range(int(repeats) + 1):
    wall, cpu = time.perf_counter(), time.process_time()
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager, batch_size=int(batch), log_samples=False,
                                  verbosity="ERROR")
    rounds.append((time.perf_counter() - wall, time.process_time() - cpu))
print(json.dumps({"rounds": rounds[1:], "results": out["results"][task]}))
"""


def lm_eval_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('lm_eval'))"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"lm-eval is not importable from {python}: pip install -e '.[bench]' (or pass --lm-eval-python)")
    return out.stdout.strip()


def run_lm_eval_cli(python: str, base: Path, adapter: str, include: Path, task: str, batch: int, out: Path) -> tuple[dict, dict, float]:
    """(results entry, {doc_hash: response}, wall seconds) of lm-eval's own CLI."""
    cmd = [python, "-m", "lm_eval", "--model", "hf", "--model_args",
           f"pretrained={base},peft={adapter},dtype=float32", "--tasks", task, "--include_path", str(include),
           "--log_samples", "--output_path", str(out), "--device", "cpu", "--batch_size", str(batch)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"lm_eval failed ({done.returncode}):\n{done.stderr[-3000:]}")
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"][task]
    samples = [json.loads(line) for line in next(out.rglob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
    return results, {s["doc_hash"]: s["filtered_resps"][0] for s in samples}, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="an existing base model directory (else the tiny base is built)")
    parser.add_argument("--size", default="test", choices=["test", "small"], help="tiny base size to build")
    parser.add_argument("--docs", type=int, default=256, help="held-out questions in the task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-gen-toks", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lm-eval-python", default=sys.executable, help="interpreter with lm-eval installed")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "adapter-arena-bench" / "evaluation",
                        help="cache for the base and the adapter")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    version = lm_eval_version(args.lm_eval_python)

    args.work.mkdir(parents=True, exist_ok=True)
    base = args.base or build_tiny_base(args.work / f"base-{args.size}", size=args.size, seed=0)
    records = word_task("count_words", 192 + args.docs, seed=5)
    train, held_out = records[:192], records[192:]
    config = TrainConfig(epochs=10, batch_size=16, lr=5e-3, eval_fraction=0.0, logging_steps=50, seed=0)
    adapter = train_adapter(base, train, config, args.work / f"adapter-{base.name}-e10").adapter_dir
    task, docs = task_from_records("count_words", held_out, metric_list=("exact_match",),
                                   max_gen_toks=args.max_gen_toks)

    with tempfile.TemporaryDirectory() as tmp:
        export = export_lm_eval(task, docs, Path(tmp) / "task")
        include = Path(export.yaml_path).parent

        backend = InProcessBackend(max_batch_size=args.batch_size, device="cpu", dtype=torch.float32)
        backend.register(CANDIDATE, base, adapter)
        model = BackendModel(backend)
        rounds = []
        for _ in range(args.repeats + 1):  # the first is the warm-up
            wall, cpu = time.perf_counter(), time.process_time()
            ours = evaluate(task, docs, model, [CANDIDATE], chunk_docs=2 * args.batch_size)[CANDIDATE]
            rounds.append((time.perf_counter() - wall, time.process_time() - cpu))
        our_wall, our_cpu = min(r[0] for r in rounds[1:]), min(r[1] for r in rounds[1:])

        cli_results, cli_responses, cli_wall = run_lm_eval_cli(
            args.lm_eval_python, base, adapter, include, task.task, args.batch_size, Path(tmp) / "lm_eval_out")
        timer = subprocess.run([args.lm_eval_python, "-c", LM_EVAL_TIMER, str(base), adapter, str(include), task.task,
                                str(args.batch_size), str(args.repeats)], capture_output=True, text=True)
        if timer.returncode != 0:
            sys.exit(f"lm-eval timing run failed:\n{timer.stderr[-3000:]}")
        timed = json.loads(timer.stdout.strip().splitlines()[-1])
        lm_wall, lm_cpu = min(r[0] for r in timed["rounds"]), min(r[1] for r in timed["rounds"])

    em = ours.metrics["exact_match"]
    lm_em, lm_se = cli_results["exact_match,none"], cli_results["exact_match_stderr,none"]
    same_responses = sum(cli_responses.get(s.doc_hash) == s.response for s in ours.samples) / len(ours.samples)
    agree = (abs(em.value - lm_em) < 1e-9 and abs((em.stderr or 0.0) - lm_se) < 1e-9
             and abs(timed["results"]["exact_match,none"] - lm_em) < 1e-9 and same_responses == 1.0)
    n = len(docs)
    print(json.dumps({
        "bench": "evaluation",
        "task": f"{task.task} (generate_until, exact_match, {n} docs, max_gen_toks {args.max_gen_toks})",
        "candidate": f"LoRA on {base.name}",
        "device": "cpu float32",
        "batch_size": args.batch_size,
        "ours": {"exact_match": em.value, "exact_match_stderr": em.stderr, "samples_per_s": n / our_wall,
                 "cpu_samples_per_s": n / our_cpu, "wall_s": our_wall},
        "lm_eval": {"version": version, "exact_match": lm_em, "exact_match_stderr": lm_se,
                    "samples_per_s": n / lm_wall, "cpu_samples_per_s": n / lm_cpu, "wall_s": lm_wall,
                    "cli_wall_s": cli_wall, "environment": "project venv" if args.lm_eval_python == sys.executable
                    else args.lm_eval_python},
        "responses_identical": same_responses,
        "scores_agree": agree,
        "ratio": (n / our_wall) / (n / lm_wall),
        "cpu_ratio": (n / our_cpu) / (n / lm_cpu),
        "goal": "scores_agree and ratio >= 1.0",
    }))
    if not agree:
        sys.exit("scores or responses differ between our runner and lm-eval")


if __name__ == "__main__":
    main()
