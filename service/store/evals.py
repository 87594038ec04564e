"""Benchmark runs (evals): their records, the per-candidate index and the result cache.

The results themselves (lm-eval results JSON + per-sample JSONL) are files under
`<data dir>/evals/<eval id>/`; Redis keeps the record that names them, with lineage.
"""

from __future__ import annotations

from typing import Any

import msgspec

from service.errors import NotFound

_enc = msgspec.json.Encoder()


class MetricScore(msgspec.Struct, frozen=True):
    """One aggregate: value, standard error (None when not estimable) and direction."""

    value: float | None
    stderr: float | None
    higher_is_better: bool


class EvalCandidate(msgspec.Struct, kw_only=True):
    """One candidate's part of an eval: lineage, aggregates, files and its worst samples."""

    name: str
    base: str
    base_path: str
    adapter_dir: str
    adapter_sha256: str  # sha256 of adapter_model.safetensors: which weights were scored
    train_dataset: str  # NAME@N the adapter was trained on
    train_dataset_id: str
    run_id: str
    metrics: dict[str, MetricScore]
    results_path: str  # lm-eval results JSON
    samples_path: str  # per-sample JSONL (doc_id, doc_hash, prompt, target, response, metrics)
    worst: list[dict[str, Any]] = []


class EvalRecord(msgspec.Struct, kw_only=True):
    """A finished benchmark run of one task over one or more candidates (id = its job id)."""

    id: str
    task: str
    task_hash: str  # sha256 of the task config (dataset location left out) and its documents
    task_config: dict[str, Any]
    dataset: str  # as the task names it: NAME@N:SPLIT, a file path, or inline:<docs id>
    dataset_id: str  # the dataset version id, or the documents' content id for files
    docs_id: str
    primary_metric: str
    limit: int | float | None
    n_docs: int  # documents evaluated (after limit)
    n_original: int  # documents in the task
    candidates: list[EvalCandidate]
    backend: str
    wall_s: float
    samples_per_s: float  # candidate-documents per second
    created_at: float

    def candidate(self, name: str) -> EvalCandidate:
        for c in self.candidates:
            if c.name == name:
                return c
        raise NotFound(f"eval {self.id} did not score candidate {name!r}; it scored "
                       f"{', '.join(c.name for c in self.candidates)}")


_dec = msgspec.json.Decoder(EvalRecord)


class EvalStore:
    redis: object
    keys: object

    async def add_eval(self, record: EvalRecord, cache_keys: dict[str, str]) -> None:
        """Store the record, index it under each candidate, and point each candidate's
        cache key (`cache_keys[name]`) at it, atomically. Re-adding the same id replaces it."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.eval(record.id), _enc.encode(record))
            pipe.zadd(k.evals, {record.id: record.created_at})
            for c in record.candidates:
                pipe.zadd(k.candidate_evals(c.name), {record.id: record.created_at})
                if c.name in cache_keys:
                    pipe.set(k.eval_cache(cache_keys[c.name]), record.id)
            await pipe.execute()

    async def get_eval(self, eval_id: str) -> EvalRecord:
        raw = await self.redis.get(self.keys.eval(eval_id))
        if raw is None:
            raise NotFound(f"no eval {eval_id!r}")
        return _dec.decode(raw)

    async def eval_exists(self, eval_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.eval(eval_id)))

    async def _evals(self, index: str, limit: int) -> list[EvalRecord]:
        ids = await self.redis.zrevrange(index, 0, limit - 1)
        if not ids:
            return []
        raws = await self.redis.mget([self.keys.eval(i.decode()) for i in ids])
        return [_dec.decode(r) for r in raws if r is not None]

    async def list_evals(self, limit: int = 100) -> list[EvalRecord]:
        """Evals, newest first."""
        return await self._evals(self.keys.evals, limit)

    async def list_candidate_evals(self, name: str, limit: int = 100) -> list[EvalRecord]:
        """Evals that scored candidate `name`, newest first."""
        return await self._evals(self.keys.candidate_evals(name), limit)

    async def cached_eval(self, cache_key: str) -> EvalRecord | None:
        """The eval that holds results for this cache key (candidate identity × task hash ×
        limit), or None; a key whose record is gone counts as absent."""
        eval_id = await self.redis.get(self.keys.eval_cache(cache_key))
        if eval_id is None:
            return None
        raw = await self.redis.get(self.keys.eval(eval_id.decode()))
        return _dec.decode(raw) if raw is not None else None
