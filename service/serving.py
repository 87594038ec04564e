"""The service's one way to get answers from candidates: `Serving`.

It owns the generation backend (in-process, or remote when `ARENA_GENERATION_URL` is
set), registers candidates and bases from the store on first use (so a candidate
trained by any worker is servable without a restart; a remote vLLM server that lost a
candidate's adapter gets it loaded again, see `service.adapter_sync`), and caches answers in Redis by
(candidate id, rendered prompt, params) so re-showing a battle or re-running a benchmark
does not regenerate. Routes, battle creation, the judge and benchmarks all go through it.

`stream` is `generate` for readers who want the text as it is produced (`/v1` with
`stream: true`, a battle's answers): one `TextSink` per item, generation in a background
task, the finished answers cached as `generate` caches them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import msgspec

from service.config import Settings
from service.errors import InvalidInput, NotFound
from service.generation import GenItem, Generation, backend_from_settings, cache_key
from service.generation.streaming import TextSink, word_pieces
from service.store import Store


def candidate_cache_id(store_record) -> str:
    """What identifies a model's weights for the cache: run id for candidates, path for bases."""
    return getattr(store_record, "run_id", None) or f"base:{getattr(store_record, 'path', '')}"


class Serving:
    """Generation with registration-on-demand and a Redis answer cache. Thread-safe."""

    def __init__(self, settings: Settings, store: Store, backend=None) -> None:
        self.settings = settings
        self.store = store
        self._backend = backend
        self._backend_lock = threading.Lock()
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._streaming: set[asyncio.Task] = set()  # held so that running streams are not collected

    @property
    def backend(self):
        """The generation backend, built on first use: the in-process one imports torch and
        transformers, which an API that only takes votes and serves boards never needs."""
        if self._backend is None:
            with self._backend_lock:
                if self._backend is None:
                    self._backend = backend_from_settings(self.settings)
        return self._backend

    def close(self) -> None:
        """Release what the backend holds open (a remote backend's HTTP connections and
        sending threads); the app's lifespan calls it on shutdown."""
        close = getattr(self._backend, "close", None)
        if close is not None:
            close()

    @property
    def in_process(self) -> bool:
        if self._backend is None:
            return not self.settings.generation_url
        from service.generation.inprocess import InProcessBackend

        return isinstance(self._backend, InProcessBackend)

    async def ensure(self, model: str) -> str:
        """Register `model` (a candidate or base name) with the backend if needed; return its cache id.
        Raises NotFound listing the available names."""
        if model in self._ids:
            return self._ids[model]
        if not self.in_process:
            self._ids[model] = f"remote:{model}"
            return self._ids[model]
        try:
            cand = await self.store.get_candidate(model)
        except NotFound:
            cand = None
        if cand is not None:
            base = await self.store.get_base(cand.base)
            with self._lock:
                self.backend.register(model, base.path, cand.adapter_dir)
            self._ids[model] = candidate_cache_id(cand)
            return self._ids[model]
        try:
            base = await self.store.get_base(model)
        except NotFound:
            names = await self.model_names()
            raise NotFound(f"unknown model {model!r}; available: {', '.join(names) or 'none'}", available=names) from None
        with self._lock:
            self.backend.register_base(model, base.path)
        self._ids[model] = candidate_cache_id(base)
        return self._ids[model]

    async def model_names(self) -> list[str]:
        """Candidates and bases the service can serve."""
        if not self.in_process:
            return await asyncio.to_thread(self.backend.models)
        return sorted({c.name for c in await self.store.list_candidates()} | {b.name for b in await self.store.list_bases()})

    async def generate(self, items: Sequence[GenItem], *, use_cache: bool = True) -> list[Generation]:
        """Answers for `items` (mixed models share batches), from the cache where present."""
        ids = await self._check(items)
        keys, results = await self._cached(items, ids, use_cache)
        todo = [n for n, r in enumerate(results) if r is None]
        if todo:
            fresh = await self._generate_fresh([items[n] for n in todo])
            for n, gen in zip(todo, fresh):
                results[n] = gen
                if keys[n] is not None:
                    await self.store.cache_put(keys[n], msgspec.to_builtins(gen))
        return [r for r in results if r is not None]

    async def stream(self, items: Sequence[GenItem], *, use_cache: bool = True) -> list[TextSink]:
        """One `TextSink` per item, already filling: iterate it for the text as it is
        generated (a cached answer arrives at once, in word-sized pieces); `sink.generation`
        is the answer once the iteration ends. Items share batches as in `generate`.

        Returns once the backend has taken every item, so what it refuses up front (unknown
        model, prompt or token limits, an upstream's error status) is raised here; a later
        failure is raised by the sink's iteration. `sink.cancel()` stops that answer; a
        cancelled answer is not cached."""
        ids = await self._check(items)
        keys, cached = await self._cached(items, ids, use_cache)
        sinks = [TextSink() for _ in items]
        for sink, gen in zip(sinks, cached):
            if gen is not None:
                text = ""
                for piece in word_pieces(gen.text):
                    text += piece
                    sink.update(text)
                sink.finish(gen)
        todo = [n for n, gen in enumerate(cached) if gen is None]
        if todo:
            task = asyncio.create_task(self._stream_fresh([items[n] for n in todo], [sinks[n] for n in todo],
                                                          [keys[n] for n in todo]))
            self._streaming.add(task)
            task.add_done_callback(self._streaming.discard)
        try:
            for sink in sinks:
                await sink.accepted()
        except BaseException:
            for sink in sinks:
                sink.cancel()
            raise
        return sinks

    async def _stream_fresh(self, items: list[GenItem], sinks: list[TextSink], keys: list[str | None]) -> None:
        try:
            fresh = await self._generate_fresh(items, sinks)
        except BaseException as exc:  # noqa: BLE001 - the sinks' readers get it
            for sink in sinks:
                sink.fail(exc)
            return
        for key, sink, gen in zip(keys, sinks, fresh):
            if key is not None and not sink.cancelled.is_set():
                await self.store.cache_put(key, msgspec.to_builtins(gen))

    async def _check(self, items: Sequence[GenItem]) -> list[str]:
        """Refuse what no backend should see; register the models; their cache ids."""
        for item in items:  # before any tokenizer sees it: a huge string costs time to tokenize
            chars = len(item.prompt) if isinstance(item.prompt, str) else sum(len(m.content) for m in item.prompt.messages)
            if chars > self.settings.max_prompt_chars:
                raise InvalidInput(f"the prompt is {chars} characters, over this server's limit of "
                                   f"{self.settings.max_prompt_chars} (ARENA_MAX_PROMPT_CHARS)",
                                   limit=self.settings.max_prompt_chars)
        ids = [await self.ensure(item.model) for item in items]
        for item in items:
            item.params.check_cap(self.settings.max_new_tokens_cap)
        return ids

    async def _cached(self, items: Sequence[GenItem], ids: list[str], use_cache: bool
                      ) -> tuple[list[str | None], list[Generation | None]]:
        """(cache key per item, None without the cache; the cached answer per item, or None)."""
        keys: list[str | None] = [None] * len(items)
        results: list[Generation | None] = [None] * len(items)
        if use_cache:
            renders = await asyncio.to_thread(lambda: [self.backend.render(i.model, i.prompt) for i in items])
            for n, (item, cid, rendered) in enumerate(zip(items, ids, renders)):
                keys[n] = cache_key(cid, rendered, item.params)
                cached = await self.store.cache_get(keys[n])
                if cached is not None:
                    results[n] = msgspec.convert(cached, Generation)
        return keys, results

    async def _generate_fresh(self, items: list[GenItem], sinks: list[TextSink] | None = None) -> list[Generation]:
        """The backend's answers (into `sinks` as they are generated, when given). A remote
        server that does not know one of our candidates (vLLM forgets runtime adapters when
        it restarts) gets its adapter loaded, then is asked once more; a model that is no
        candidate of ours stays a `NotFound`."""
        args = (items,) if sinks is None else (items, sinks)
        try:
            return await asyncio.to_thread(self.backend.generate, *args)
        except NotFound:
            if self.in_process or (sinks is not None and any(s.closed and s.generation is None for s in sinks)):
                raise  # (another item failed outright: the battle fails as a whole)
            from service.adapter_sync import register_candidates

            report = await register_candidates(self.store, self.settings, [i.model for i in items], backend=self.backend)
            if not report.loaded:
                raise
            if sinks is None:
                return await asyncio.to_thread(self.backend.generate, items)
            # Streamed: the remote backend left the refused items' sinks open; the others are done.
            again = [n for n, sink in enumerate(sinks) if not sink.closed]
            retried = await asyncio.to_thread(self.backend.generate, [items[n] for n in again], [sinks[n] for n in again])
            answers = {n: gen for n, gen in zip(again, retried)}
            return [answers[n] if n in answers else sinks[n].generation for n in range(len(items))]
