"""DPO of a candidate: an SFT adapter and preference pairs in, a PEFT adapter out.

`train_dpo` runs TRL's `DPOTrainer` (no hand-written loss) on the base with the SFT
adapter loaded trainable. The reference policy is the SFT adapter itself, frozen: given a
`PeftModel` that already holds an adapter and no `ref_model`, TRL copies that adapter
into a second, frozen one named "ref" and computes the reference log-probabilities
through it. That is the reference DPO asks for (the policy the preferences are judged
against), at the cost of one adapter's weights, not a second model. Merging the SFT
adapter into the base and training a fresh LoRA would do the same, but then the
candidate would no longer be a LoRA on a registered base; continuing the SFT adapter
keeps it one (same rank and modules), served, traced and exported like any other.

Everything lands under one `out_dir`, as for SFT runs (`service.training`): `adapter/`,
`checkpoints/checkpoint-N` (resumed from on a rerun), `run.json`, `metrics.json` (the
`DPOResult`, written last); the same progress callback reports each logging step,
cancels within a step and stops on a NaN loss.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from service.checkpoints import CheckpointInfo
from service.preferences import PreferencePair, preferences_sha256
from service.train_config import InvalidTrainingInput, LossPoint

ADAPTER_WEIGHTS = "adapter_model.safetensors"


class DPOTrainConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """DPO settings for one run, stored verbatim in its metrics and the candidate.

    `beta` is DPO's β: how far the policy may move from the SFT reference (higher stays
    closer). The LoRA shape (rank, modules) is the SFT adapter's. `lr` is for the LoRA
    weights; full fine-tuning recipes use ~1e-6, a LoRA needs more."""

    beta: float = 0.1
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    lr: float = 5e-5
    epochs: float = 1
    max_steps: int | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    seed: int = 0
    logging_steps: int = 10
    save_steps: int | None = None
    save_total_limit: int | None = 3
    warmup_steps: int = 0
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_length", "logging_steps"):
            if getattr(self, name) < 1:
                raise InvalidTrainingInput(f"config.{name}={getattr(self, name)}: expected an integer >= 1")
        for name in ("max_steps", "save_steps", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidTrainingInput(f"config.{name}={value}: expected an integer >= 1 or null")
        for name in ("beta", "lr", "epochs", "max_grad_norm"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise InvalidTrainingInput(f"config.{name}={value}: expected a positive number")
        if self.warmup_steps < 0:
            raise InvalidTrainingInput(f"config.warmup_steps={self.warmup_steps}: expected an integer >= 0")


class DPOResult(msgspec.Struct, kw_only=True, frozen=True):
    """What a finished DPO run produced; `out_dir/metrics.json` holds the same.

    `reward_margin` and `reward_accuracy` are TRL's: the mean of β·(log-ratio of chosen −
    log-ratio of rejected) against the reference, and the share of pairs where it is
    positive, over the last logging window."""

    method: Literal["dpo"] = "dpo"
    out_dir: str
    adapter_dir: str
    base_dir: str
    sft_adapter_dir: str
    sft_adapter_sha256: str
    config: DPOTrainConfig
    data_sha256: str
    pairs: int
    global_step: int
    max_steps: int
    epochs: float
    loss_curve: list[LossPoint]
    final_loss: float | None
    reward_margin: float | None
    reward_accuracy: float | None
    checkpoints: list[CheckpointInfo]
    trainable_params: int
    train_tokens: int
    wall_s: float
    train_s: float
    tokens_per_s: float
    resumed_from: str | None = None


class _DPORunIdentity(msgspec.Struct, frozen=True):
    base_dir: str
    sft_adapter_sha256: str
    data_sha256: str
    config: DPOTrainConfig


def load_dpo_result(out_dir: str | os.PathLike[str]) -> DPOResult | None:
    """The `DPOResult` of a finished run in `out_dir`, or None when it has not finished."""
    from service.training import METRICS_FILE

    try:
        return msgspec.json.decode((Path(out_dir) / METRICS_FILE).read_bytes(), type=DPOResult)
    except (FileNotFoundError, msgspec.ValidationError):
        return None


def train_dpo(
    base_dir: str | os.PathLike[str],
    sft_adapter_dir: str | os.PathLike[str],
    pairs: Sequence[PreferencePair],
    config: DPOTrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DPOResult:
    """Train the SFT adapter at `sft_adapter_dir` (on the base at `base_dir`) by DPO on
    `pairs`; return the `DPOResult`. The reference is the SFT adapter, frozen.

    `on_log(dict)` gets `step, max_steps, loss, lr, epoch, reward_margin, reward_accuracy`
    at each logging step; `should_stop()` is polled every step. A rerun with the same
    `out_dir` resumes from its last checkpoint, or returns the stored result.

    Raises `InvalidTrainingInput` (no pairs, fewer pairs than one batch, not a model or
    adapter directory), `TrainingDiverged`, `TrainingCancelled` or `RunConflict`."""
    from service.checkpoints import complete_checkpoints, last_complete_checkpoint
    from service.train_progress import loss_curve
    from service.training import ADAPTER_DIR, CHECKPOINTS_DIR, METRICS_FILE, _claim_out_dir, _save_adapter, _write_atomic

    started = time.perf_counter()
    base, sft, out, pairs = Path(base_dir), Path(sft_adapter_dir), Path(out_dir), list(pairs)
    if not pairs:
        raise InvalidTrainingInput("no preference pairs: the preference data is empty")
    if not (base / "config.json").is_file():
        raise InvalidTrainingInput(f"{base}: not a model directory (config.json missing)")
    if not (sft / ADAPTER_WEIGHTS).is_file():
        raise InvalidTrainingInput(f"{sft}: not a PEFT adapter directory ({ADAPTER_WEIGHTS} missing)")
    per_step = config.batch_size * config.grad_accum
    if len(pairs) < per_step:
        raise InvalidTrainingInput(
            f"{len(pairs)} preference pairs; one optimizer step needs batch_size × grad_accum = {per_step}. "
            "Add pairs or lower batch_size."
        )
    identity = _DPORunIdentity(base_dir=str(base.resolve()), sft_adapter_sha256=_file_sha256(sft / ADAPTER_WEIGHTS),
                               data_sha256=preferences_sha256(pairs), config=config)
    done = load_dpo_result(out)
    if done is not None and _DPORunIdentity(done.base_dir, done.sft_adapter_sha256, done.data_sha256, done.config) == identity:
        return done

    tokenizer, dataset = _dataset(base, sft, pairs)
    model = _policy(base, sft)
    _claim_out_dir(out, identity)
    checkpoints_dir = out / CHECKPOINTS_DIR
    trainer = _trainer(model, tokenizer, dataset, config, checkpoints_dir, on_log, should_stop)
    resume = last_complete_checkpoint(checkpoints_dir)
    train_started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_s = time.perf_counter() - train_started

    model.delete_adapter("ref")  # the frozen SFT copy served as reference; the candidate is "default" alone
    adapter_dir = out / ADAPTER_DIR
    _save_adapter(model, tokenizer, adapter_dir)
    curve = loss_curve(trainer.state.log_history)
    last = next((e for e in reversed(trainer.state.log_history) if "rewards/margins" in e), {})
    tokens = int(last.get("num_tokens") or 0)  # TRL's count of the tokens trained on (prompt and both answers)
    result = DPOResult(
        out_dir=str(out), adapter_dir=str(adapter_dir), base_dir=identity.base_dir, sft_adapter_dir=str(sft),
        sft_adapter_sha256=identity.sft_adapter_sha256, config=config, data_sha256=identity.data_sha256, pairs=len(pairs),
        global_step=trainer.state.global_step, max_steps=trainer.state.max_steps, epochs=float(trainer.state.epoch or 0.0),
        loss_curve=curve, final_loss=next((p.loss for p in reversed(curve) if p.loss is not None), None),
        reward_margin=last.get("rewards/margins"), reward_accuracy=last.get("rewards/accuracies"),
        checkpoints=complete_checkpoints(checkpoints_dir),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        train_tokens=tokens, wall_s=round(time.perf_counter() - started, 3), train_s=round(train_s, 3),
        tokens_per_s=round(tokens / train_s, 1) if train_s > 0 else 0.0,
        resumed_from=str(resume) if resume else None,
    )
    _write_atomic(out / METRICS_FILE, msgspec.json.format(msgspec.json.encode(result)))
    return result


# --- internals ----------------------------------------------------------------------------


def _dataset(base: Path, sft: Path, pairs: list[PreferencePair]) -> tuple[Any, Any]:
    """The tokenizer the SFT adapter was trained with, and the pairs as a `datasets.Dataset`
    TRL reads: conversational rows when the tokenizer has a chat template (TRL applies it),
    else strings in the plain `User:…</s>\\n Assistant:` format the base was trained in."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoTokenizer

    from evaluators.chat_format import uses_chat_template
    from evaluators.records import EOS, Conversation, render_plain
    from service.generation._models import _adapter_chat_template

    disable_progress_bar()  # progress goes to the job's events, not a worker's stderr
    tokenizer = AutoTokenizer.from_pretrained(base)
    template = _adapter_chat_template(sft)
    if template is not None:
        tokenizer.chat_template = template
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if uses_chat_template(tokenizer):
        rows = [{k: [msgspec.to_builtins(m) for m in getattr(p, k)] for k in ("prompt", "chosen", "rejected")} for p in pairs]
    else:
        rows = [{"prompt": render_plain(Conversation(messages=tuple(p.prompt)), add_generation_prompt=True),
                 "chosen": p.chosen[0].content + EOS, "rejected": p.rejected[0].content + EOS} for p in pairs]
    return tokenizer, Dataset.from_list(rows)


def _policy(base: Path, sft: Path) -> Any:
    """The base with the SFT adapter loaded as the trainable "default" adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    try:
        model = PeftModel.from_pretrained(model, sft, is_trainable=True)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise InvalidTrainingInput(f"the SFT adapter at {sft} does not fit the base {base.name}: {exc}") from None
    model.config.use_cache = False
    return model


def _trainer(model, tokenizer, dataset, config: DPOTrainConfig, checkpoints_dir: Path, on_log, should_stop):
    import torch
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from service.train_progress import ProgressCallback

    class DPOProgress(ProgressCallback):
        """SFT's progress callback, with TRL's reward margin and accuracy in each event."""

        last_logs: dict[str, Any] = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.last_logs = logs or {}
            return super().on_log(args, state, control, logs=logs, **kwargs)

    def report(point: dict[str, Any]) -> None:
        logs = progress.last_logs
        on_log({**point, "reward_margin": logs.get("rewards/margins"), "reward_accuracy": logs.get("rewards/accuracies")})

    progress = DPOProgress(report if on_log else None, should_stop, has_eval=False)
    steps_per_epoch = max(1, math.ceil(math.ceil(len(dataset) / config.batch_size) / config.grad_accum))
    args = DPOConfig(
        output_dir=str(checkpoints_dir),
        beta=config.beta,
        loss_type=[config.loss_type],
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        max_grad_norm=config.max_grad_norm,
        max_length=config.max_length,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_nan_inf_filter=False,
        save_strategy="steps",
        save_steps=config.save_steps or steps_per_epoch,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        bf16=False,  # TRL defaults to bf16; the SFT runs and the served adapters are float32
        activation_checkpointing=False,  # TRL defaults it on; `gradient_checkpointing` is its deprecated name
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[progress])
    trainer.remove_callback(PrinterCallback)
    return trainer


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
