"""A reference `ModelBackend` over an in-memory Hugging Face causal LM.

The model may be a `peft.PeftModel` with several LoRA adapters loaded: every batch then
carries `adapter_names=[...]`, one per row, so rows for different adapters share one
forward pass (PEFT's mixed-adapter batches; `"__base__"` selects the bare base). A plain
model serves only `"__base__"`.

Special tokens follow the house rule of `evaluators.chat_format` by default: text is
encoded without them, and a tokenizer without a chat template gets its usual leading
ones (e.g. BOS) in front, as in training. Generation pads on the left and decodes
greedily unless a temperature is given. Log-likelihoods follow lm-eval's HF model:
trailing spaces of the context move to the continuation, the continuation's tokens are
those of `context + continuation` past the context's, and long texts are scored in
disjoint rolling windows of the model's length.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from evaluators.chat_format import special_prefix, uses_chat_template
from evaluators.runner import BASE_ADAPTER, GenRequest


class _StopOnStrings(StoppingCriteria):
    """Per-row stop: a row is done once its new text contains any stop string."""

    def __init__(self, tokenizer, prompt_len: int, stop: Sequence[str]):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.stop = [s for s in stop if s]

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=False)
        return torch.tensor([any(s in text for s in self.stop) for text in new], device=input_ids.device)


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency, but a plain transformers model needs none
        return False
    return isinstance(model, PeftModel)


class HFBackend:
    """`ModelBackend` for a transformers causal LM (optionally a PeftModel with several
    adapters). `batch_size` rows per forward pass; `max_length` defaults to the model's
    `max_position_embeddings`; `add_special_tokens` None follows the house rule (leading
    special tokens unless the tokenizer has a chat template), True/False forces it
    (lm-eval's default is False); `seed` makes sampled generations repeatable."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8, max_length: int | None = None,
                 add_special_tokens: bool | None = None, seed: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.seed = seed
        self.is_peft = _is_peft(model)
        self.adapters = set(model.peft_config) if self.is_peft else set()
        config = model.config if not self.is_peft else model.get_base_model().config
        self.max_length = max_length or getattr(config, "max_position_embeddings", None) or 2048
        eos = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        if add_special_tokens is None:
            add_special_tokens = not uses_chat_template(tokenizer)
        #: Put in front of every prompt and context (e.g. [BOS]); [] when none.
        self.prefix_ids = special_prefix(tokenizer) if add_special_tokens else []
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        #: What an empty context conditions on (lm-eval's prefix token: BOS, else EOS).
        self.start_ids = self.prefix_ids or ([start] if start is not None else [])
        if self.pad_id is None or not self.start_ids:
            raise ValueError("tokenizer: needs a pad, bos or eos token to pad batches and start empty prompts")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- helpers -------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _adapter_kwargs(self, adapters: list[str]) -> dict:
        unknown = sorted({a for a in adapters if a != BASE_ADAPTER and a not in self.adapters})
        if unknown:
            loaded = ", ".join(sorted(self.adapters)) or "none (not a PeftModel)"
            raise ValueError(f"adapter {unknown[0]!r} is not loaded; loaded adapters: {loaded}; "
                             f"use {BASE_ADAPTER!r} for the base model")
        return {"adapter_names": list(adapters)} if self.is_peft else {}

    def _batches(self, order: list[int]):
        for start in range(0, len(order), self.batch_size):
            yield order[start:start + self.batch_size]

    # --- generation ----------------------------------------------------------------------

    def generate(self, requests: list[GenRequest]) -> list[str]:
        """Generated continuation of each prompt, cut before the first stop string."""
        if self.seed is not None:
            torch.manual_seed(self.seed)
        results: list[str] = [""] * len(requests)
        encoded = [(self.prefix_ids + self._encode(r.prompt)) or self.start_ids for r in requests]
        groups: dict[tuple[int, float], list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[(r.max_new_tokens, float(r.temperature))].append(i)
        for (max_new, temperature), idxs in groups.items():
            idxs.sort(key=lambda i: -len(encoded[i]))  # similar lengths share a batch: less padding
            for batch in self._batches(idxs):
                texts = self._generate_batch([encoded[i] for i in batch], [requests[i] for i in batch],
                                             max_new, temperature)
                for i, text in zip(batch, texts):
                    results[i] = text
        return results

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], requests: list[GenRequest], max_new: int,
                        temperature: float) -> list[str]:
        keep = max(self.max_length - max_new, 1)
        prompts = [p[-keep:] for p in prompts]
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        stop = sorted({s for r in requests for s in r.stop})
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new,
            pad_token_id=self.pad_id,
            stopping_criteria=StoppingCriteriaList([_StopOnStrings(self.tokenizer, width, stop)]) if stop else None,
            **sampling,
            **self._adapter_kwargs([r.adapter for r in requests]),
        )
        texts = []
        for row, r in zip(out[:, width:].tolist(), requests):
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            cuts = [text.find(s) for s in r.stop if s and s in text]
            texts.append(text[:min(cuts)] if cuts else text)
        return texts

    # --- log-likelihoods -----------------------------------------------------------------

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if not context:
            return self.start_ids, self._encode(continuation)
        whole = self._encode(context + continuation)
        context_ids = self._encode(context)
        return self.prefix_ids + context_ids, whole[len(context_ids):]

    def loglikelihood(self, requests: list[tuple[str, str, str]]) -> list[tuple[float, bool]]:
        """(log P(continuation | context), whether greedy decoding yields it) per request."""
        items = [(adapter, *self._encode_pair(context, continuation)) for adapter, context, continuation in requests]
        return self._score(items)

    def loglikelihood_rolling(self, requests: list[tuple[str, str]]) -> list[float]:
        """log P(text), summed over disjoint windows of at most `max_length` tokens."""
        items, owner = [], []
        for i, (adapter, text) in enumerate(requests):
            for context_ids, target_ids in self._rolling_windows(self._encode(text)):
                items.append((adapter, context_ids, target_ids))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, self._score(items)):
            totals[i] += ll
        return totals

    def _rolling_windows(self, tokens: list[int]) -> list[tuple[list[int], list[int]]]:
        # lm-eval's get_rolling_token_windows(context_len=1) + make_disjoint_window.
        size = self.max_length
        if not tokens:
            return []
        first = min(size, len(tokens))
        windows = [(self.start_ids, tokens[:first])]
        predicted = first
        while predicted < len(tokens):
            n = min(len(tokens) - predicted, size)
            end = predicted + n
            windows.append((tokens[max(end - size - 1, 0):predicted], tokens[predicted:end]))
            predicted = end
        return windows

    @torch.inference_mode()
    def _score(self, items: list[tuple[str, list[int], list[int]]]) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool]] = [(0.0, True)] * len(items)
        rows = []
        for i, (adapter, context_ids, target_ids) in enumerate(items):
            if not target_ids:
                continue
            if len(target_ids) > self.max_length:
                raise ValueError(f"continuation of {len(target_ids)} tokens exceeds max_length {self.max_length}")
            sequence = (context_ids + target_ids)[-(self.max_length + 1):][:-1]
            rows.append((i, adapter, sequence, target_ids))
        rows.sort(key=lambda row: -len(row[2]))
        for batch in self._batches(list(range(len(rows)))):
            chunk = [rows[j] for j in batch]
            width = max(len(seq) for _, _, seq, _ in chunk)
            input_ids = torch.tensor([seq + [self.pad_id] * (width - len(seq)) for _, _, seq, _ in chunk],
                                     device=self.device)
            attention = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for _, _, seq, _ in chunk],
                                     device=self.device)
            logits = self.model(input_ids=input_ids, attention_mask=attention,
                                **self._adapter_kwargs([a for _, a, _, _ in chunk])).logits
            logprobs = torch.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16)
                                         else logits, dim=-1)
            for row, (i, _, seq, target_ids) in enumerate(chunk):
                k = len(target_ids)
                positions = logprobs[row, len(seq) - k:len(seq)]
                target = torch.tensor(target_ids, device=self.device)
                ll = positions.gather(-1, target[:, None]).sum().item()
                greedy = bool((positions.argmax(-1) == target).all().item())
                results[i] = (ll, greedy)
        return results
