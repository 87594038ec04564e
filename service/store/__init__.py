"""The system of record: the only code that knows Redis key names.

`Store` is async (redis.asyncio) for the HTTP app and the workers; `SyncStore` runs the
same methods from synchronous code (CLI commands, job threads) on a private event loop.
Every key starts with the configured prefix (`ARENA_KEY_PREFIX`, default `arena`), so a
shared Redis is safe; the job queue library (SAQ) keeps its own keys under
`saq:<prefix>-jobs:*`.
"""

from service.store.vote_scripts import VoteRules
from service.store.core import Store, SyncStore, connect_store

__all__ = ["Store", "SyncStore", "VoteRules", "connect_store"]
