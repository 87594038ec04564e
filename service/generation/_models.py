"""What the in-process backend has in memory: registered names, base models loaded once per
directory, and an LRU set of LoRA adapters on them.

Every method that touches weights (`load_model`, `load_adapter`, `unload`) must be called
under the backend's model lock; the registry's own lock guards the name tables.
"""

from __future__ import annotations

import itertools
import json
import threading
import warnings
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evaluators.chat_format import special_prefix, uses_chat_template
from service.errors import InvalidInput, NotFound, Unavailable

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in `adapter_names`


@dataclass(eq=False)
class Base:
    """A base model directory and what has been loaded from it (lazily)."""

    dir: Path
    tokenizer: Any = None  # encodes, on callers' threads, under `tokenizer_lock`
    decoder: Any = None  # a second instance that only decodes, under the model lock
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)
    context_length: int = 0
    eos_ids: frozenset[int] = frozenset()
    pad_id: int = 0
    prefix_ids: list[int] = field(default_factory=list)  # leading specials (e.g. BOS) put before plain text
    prefix_id: int = 0  # what an empty context is scored from (bos, else eos)
    model: Any = None  # the transformers model; PEFT injects LoRA layers into it
    peft: Any = None  # the PeftModel wrapping `model` once an adapter is loaded

    def forward_model(self) -> Any:
        """The module to call: once PEFT has wrapped the base, always the PeftModel (with
        `adapter_names`), since the bare module now carries LoRA layers."""
        return self.peft if self.peft is not None else self.model


@dataclass(eq=False)
class Candidate:
    name: str
    base: Base
    adapter_dir: Path | None  # None: the bare base
    chat_template: str | None = None  # the adapter's own template, when it ships one
    adapter: str | None = None  # PEFT adapter name while loaded

    @property
    def adapter_name(self) -> str:
        """This row's entry in PEFT's `adapter_names` (load the adapter first)."""
        return self.adapter or BASE_ADAPTER


class ModelRegistry:
    """Names → candidates; base directories → `Base`; at most `max_adapters` adapters loaded."""

    def __init__(self, max_adapters: int, device: torch.device, dtype: torch.dtype) -> None:
        if max_adapters < 1:
            raise ValueError("max_adapters must be >= 1")
        self.max_adapters = max_adapters
        self.device = device
        self.dtype = dtype
        self._bases: dict[Path, Base] = {}
        self._candidates: dict[str, Candidate] = {}
        self._loaded: OrderedDict[str, Candidate] = OrderedDict()  # least recently used first
        self._adapter_ids = itertools.count()
        self._lock = threading.RLock()

    def add(self, name: str, base_dir: str | Path, adapter_dir: Path | None) -> Candidate | None:
        """Register `name`; returns the candidate it replaced when that one has an adapter
        loaded (the caller unloads it under the model lock)."""
        if not name or name == BASE_ADAPTER:
            raise InvalidInput(f"model name {name!r} is reserved or empty")
        base_dir = Path(base_dir).resolve()
        if not (base_dir / "config.json").is_file():
            raise NotFound(f"base model for {name!r}: {base_dir} has no config.json")
        template = _adapter_chat_template(adapter_dir)
        with self._lock:
            old = self._candidates.get(name)
            if old is not None and old.base.dir == base_dir and old.adapter_dir == adapter_dir:
                return None
            base = self._bases.setdefault(base_dir, Base(dir=base_dir))
            self._candidates[name] = Candidate(name=name, base=base, adapter_dir=adapter_dir, chat_template=template)
        return old if old is not None and old.adapter is not None else None

    def remove(self, name: str) -> Candidate | None:
        """Forget `name`; returns it when its adapter is loaded (to unload)."""
        with self._lock:
            old = self._candidates.pop(name, None)
        return old if old is not None and old.adapter is not None else None

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._candidates)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def get(self, model: str) -> Candidate:
        """The candidate called `model`; `NotFound` listing the registered names otherwise."""
        with self._lock:
            candidate = self._candidates.get(model)
            if candidate is None:
                names = sorted(self._candidates)
                raise NotFound(
                    f"unknown model {model!r}; available: {', '.join(names) or 'none registered'}", available=names
                )
            return candidate

    def prepared_base(self, candidate: Candidate) -> Base:
        """The candidate's base with tokenizer and config loaded (cheap; no weights)."""
        base = candidate.base
        if base.tokenizer is not None:
            return base
        from transformers import AutoConfig, AutoTokenizer

        with self._lock:
            if base.tokenizer is None:
                config = AutoConfig.from_pretrained(base.dir)
                tokenizer = AutoTokenizer.from_pretrained(base.dir)
                eos = set(_eos_from_generation_config(base.dir))
                if tokenizer.eos_token_id is not None:
                    eos.add(tokenizer.eos_token_id)
                if not eos:
                    raise InvalidInput(f"base model {base.dir} has no eos token; generation could not stop")
                base.eos_ids = frozenset(eos)
                base.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
                base.prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else min(eos)
                # The house rule of `evaluators.chat_format` (what training did): a chat
                # template writes its own special tokens; plain text gets the leading ones.
                base.prefix_ids = [] if uses_chat_template(tokenizer) else special_prefix(tokenizer)
                base.context_length = _context_length(config, tokenizer)
                base.decoder = AutoTokenizer.from_pretrained(base.dir)
                base.tokenizer = tokenizer  # last: other threads test it without the lock
        return base

    def load_model(self, base: Base) -> None:
        """Load the base weights once (eval mode, eager attention)."""
        if base.model is not None:
            return
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base.dir, dtype=self.dtype, attn_implementation="eager")
        model.to(self.device).eval().requires_grad_(False)
        base.model = model

    def load_adapter(self, candidate: Candidate, keep: Collection[str]) -> None:
        """Ensure the adapter is loaded and most recently used, then evict least recently
        used adapters beyond `max_adapters`, never one named in `keep` (the current batch's)."""
        with self._lock:
            if candidate.adapter is not None:
                self._loaded.move_to_end(candidate.name)
                return
        base = candidate.base
        name = f"adapter{next(self._adapter_ids)}"  # candidate names may hold "." which PEFT refuses
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                if base.peft is None:
                    from peft import PeftModel

                    base.peft = PeftModel.from_pretrained(base.model, candidate.adapter_dir, adapter_name=name)
                    base.peft.eval()
                else:
                    base.peft.load_adapter(candidate.adapter_dir, adapter_name=name)
        except Exception as exc:
            raise Unavailable(
                f"candidate {candidate.name!r}: the adapter in {candidate.adapter_dir} could not be loaded "
                f"onto {base.dir}: {exc}"
            ) from exc
        with self._lock:
            candidate.adapter = name
            self._loaded[candidate.name] = candidate
            for victim in [c for n, c in self._loaded.items() if n not in keep]:
                if len(self._loaded) <= self.max_adapters:
                    break
                self.unload(victim)

    def unload(self, candidate: Candidate) -> None:
        """Delete the candidate's adapter weights from its base."""
        with self._lock:
            if candidate.adapter is None:
                return
            with warnings.catch_warnings():
                # PEFT warns that the deleted adapter was the active one; we never use
                # the active adapter (every call passes `adapter_names`).
                warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
                candidate.base.peft.delete_adapter(candidate.adapter)
            candidate.adapter = None
            if self._loaded.get(candidate.name) is candidate:
                del self._loaded[candidate.name]


def _adapter_chat_template(adapter_dir: Path | None) -> str | None:
    """The chat template saved next to the adapter by training, if any: that is the format
    the candidate learned, even when it differs from the base's."""
    if adapter_dir is None:
        return None
    jinja = adapter_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = adapter_dir / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, str):
            return template
    return None


def _eos_from_generation_config(base_dir: Path) -> list[int]:
    path = base_dir / "generation_config.json"
    if not path.is_file():
        return []
    eos = json.loads(path.read_text()).get("eos_token_id")
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def _context_length(config: Any, tokenizer: Any) -> int:
    for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    if 0 < tokenizer.model_max_length < 10**7:  # transformers' "no limit" is a huge int
        return int(tokenizer.model_max_length)
    return 2048
