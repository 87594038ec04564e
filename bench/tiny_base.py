"""Claim: the "small" tiny base builds in under a minute and LoRA writes made-up facts onto it.

Builds the offline tiny base (`service.models.tiny`, fresh, timed), then trains LoRA
adapters with `service.training.train_adapter` and scores greedy exact match:

- `facts50`: 50 invented facts in the question shapes of the synthetic datasets (the
  same records as `tests/service/test_tiny_base_facts.py`), scored on themselves. Goal:
  > 0.9 with q_proj,v_proj in <= 30 s of training.
- `synthetic`: `make_synthetic_dataset("fast", 0)` (planted wrong answers), scored on
  its benchmark. `clean_em` is exact match on the items the planted records do not
  contradict (goal >= 0.9); `planted_rate` is the share of corrupted items answered
  with the planted wrong answer (it should be high: the model learnt its data).
- `synthetic_fixed`: the same dataset without its planted wrong records, scored on the
  corrupted items: `fixed_rate` is the share now answered right (what curation relies
  on: the one correct record left is learnt).

Prints one JSON line per build and per run. Run:
`OMP_NUM_THREADS=1 python bench/tiny_base.py [--size small] [--seed 0] [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "service"))

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from evaluators.records import user_turn  # noqa: E402
from evaluators.synthetic import make_synthetic_dataset  # noqa: E402
from evaluators.synthetic_bench import greedy_answers  # noqa: E402
from service.models.tiny import build_tiny_base, read_tiny_build  # noqa: E402
from service.training import TrainConfig, train_adapter  # noqa: E402
from test_tiny_base_facts import made_up_facts  # noqa: E402

# (task, target_modules, lora_r, lr, epochs)
RUNS = [
    ("facts50", "q_proj,v_proj", 16, 5e-3, 30),
    ("facts50", "q_proj,v_proj", 16, 5e-3, 60),
    ("facts50", "q_proj,v_proj", 16, 5e-3, 100),
    ("facts50", "q_proj,v_proj", 8, 5e-3, 60),
    ("facts50", "q_proj,v_proj", 16, 1e-2, 60),
    ("synthetic", "all-linear", 16, 5e-3, 30),
    ("synthetic", "all-linear", 16, 5e-3, 60),
    ("synthetic", "all-linear", 8, 5e-3, 60),
    ("synthetic", "all-linear", 16, 1e-2, 30),
    ("synthetic", "q_proj,v_proj", 16, 5e-3, 60),
    ("synthetic_fixed", "all-linear", 16, 5e-3, 60),
]
QUICK = [RUNS[2], RUNS[6], RUNS[10]]


def _answers(base: Path, adapter: str, prompts: list) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    return greedy_answers(model, tokenizer, prompts, max_new_tokens=12)


def run(base: Path, work: Path, task: str, targets: str, rank: int, lr: float, epochs: int, lang: str = "en") -> dict:
    config = TrainConfig(
        target_modules=targets, lora_r=rank, lora_alpha=2 * rank, lora_dropout=0.0, lr=lr, epochs=epochs,
        batch_size=8, eval_fraction=0.0, max_length=96, logging_steps=1000,
    )
    out = work / f"{task}-{targets.replace(',', '+')}-r{rank}-lr{lr}-e{epochs}"
    shutil.rmtree(out, ignore_errors=True)
    row: dict = {"task": task, "lang": lang, "target_modules": targets, "lora_r": rank, "lr": lr, "epochs": epochs}
    if task == "facts50":
        records = made_up_facts(seed=0)
        result = train_adapter(base, records, config, out)
        answers = _answers(base, result.adapter_dir, [user_turn(r.prompt) for r in records])
        row["em"] = round(sum(a == r.answer for a, r in zip(answers, records)) / len(records), 3)
    elif task == "synthetic_fixed":
        ds = make_synthetic_dataset("fast", 0, lang=lang)
        planted = set(ds.planted_wrong)
        result = train_adapter(base, [r for i, r in enumerate(ds.records) if i not in planted], config, out)
        answers = _answers(base, result.adapter_dir, [prompt for prompt, _ in ds.benchmark])
        fixed = [answers[j] == ds.benchmark[j][1] for j in ds.corrupted_items]
        clean = [answers[j] == gold for j, (_, gold) in enumerate(ds.benchmark) if j not in set(ds.corrupted_items)]
        row |= {"fixed_rate": round(sum(fixed) / max(1, len(fixed)), 3), "clean_em": round(sum(clean) / len(clean), 3)}
    else:
        ds = make_synthetic_dataset("fast", 0, lang=lang)
        result = train_adapter(base, ds.records, config, out)
        answers = _answers(base, result.adapter_dir, [prompt for prompt, _ in ds.benchmark])
        corrupted = set(ds.corrupted_items)
        clean = [answers[j] == gold for j, (_, gold) in enumerate(ds.benchmark) if j not in corrupted]
        planted = [answers[j] == ds.records[ds.caused_by[j][0]].answer for j in sorted(corrupted)]
        row |= {
            "clean_em": round(sum(clean) / len(clean), 3), "clean_items": len(clean),
            "planted_rate": round(sum(planted) / max(1, len(planted)), 3), "corrupted_items": len(planted),
        }
    row |= {"steps": result.global_step, "train_s": round(result.train_s, 1)}
    row["train_cpu_s"] = round(result.train_cpu_s, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small", choices=["small", "test"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lang", default="en", choices=["en", "zh"],
                        help="zh: build the bilingual base and score the Chinese synthetic dataset (no facts50)")
    parser.add_argument("--base", type=Path, help="score this base instead of building one")
    parser.add_argument("--quick", action="store_true", help="only the recommended config of each task")
    parser.add_argument("--work", type=Path, help="where to build and train (default: a temp dir)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-tiny-"))
    base = args.base
    if base is None:
        base = work / f"base-{args.size}-{args.lang}-{args.seed}"
        shutil.rmtree(base, ignore_errors=True)
        wall, cpu = time.perf_counter(), time.process_time()
        build_tiny_base(base, size=args.size, seed=args.seed, lang=args.lang)
        build = read_tiny_build(base)
        print(json.dumps({
            "build": args.size, "lang": args.lang, "seed": args.seed, "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(time.process_time() - cpu, 1), "final_loss": round(build.final_loss, 3),
            "parameters": build.parameters, "threads": torch.get_num_threads(), "load_avg": os.getloadavg()[0],
        }), flush=True)
    runs = QUICK if args.quick else RUNS
    if args.lang != "en":
        runs = [spec for spec in runs if spec[0] != "facts50"]
    for spec in runs:
        print(json.dumps(run(base, work, *spec, lang=args.lang)), flush=True)


if __name__ == "__main__":
    main()
