"""Dataset versions in Redis (the records themselves are files under the data dir)."""

from __future__ import annotations

import msgspec

from service.domain import DatasetVersion, Split
from service.errors import Conflict, InvalidInput, NotFound

_enc = msgspec.json.Encoder()


class DatasetStore:
    redis: object
    keys: object

    async def add_dataset_version(self, dsv: DatasetVersion) -> tuple[DatasetVersion, bool]:
        """Register a version under its name. Returns (version, created); identical content
        already registered under the same name returns the existing version."""
        k = self.keys
        # WATCH the version list so two concurrent adds can neither take the same number nor
        # both register the same content (checked under the WATCH, not before it).
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(k.dataset_versions(dsv.name))
                    existing_ids = [i.decode() for i in await pipe.lrange(k.dataset_versions(dsv.name), 0, -1)]
                    if dsv.id in existing_ids:
                        await pipe.unwatch()
                        return await self.get_dataset_version(dsv.id, dsv.name), False
                    n = len(existing_ids)
                    dsv = msgspec.structs.replace(dsv, version=n + 1)
                    pipe.multi()
                    pipe.set(k.dataset_version(self._dsv_key(dsv.name, dsv.id)), _enc.encode(dsv))
                    pipe.rpush(k.dataset_versions(dsv.name), dsv.id)
                    pipe.sadd(k.datasets, dsv.name)
                    await pipe.execute()
                    return dsv, True
                except Exception as exc:  # WatchError: retry with the new count
                    if type(exc).__name__ != "WatchError":
                        raise

    @staticmethod
    def _dsv_key(name: str, version_id: str) -> str:
        return f"{name}:{version_id}"

    async def get_dataset_version(self, version_id: str, name: str) -> DatasetVersion:
        raw = await self.redis.get(self.keys.dataset_version(self._dsv_key(name, version_id)))
        if raw is None:
            raise NotFound(f"dataset {name!r} has no version {version_id!r}")
        return msgspec.json.decode(raw, type=DatasetVersion)

    async def list_dataset_names(self) -> list[str]:
        return sorted(n.decode() for n in await self.redis.smembers(self.keys.datasets))

    async def list_dataset_versions(self, name: str) -> list[DatasetVersion]:
        ids = [i.decode() for i in await self.redis.lrange(self.keys.dataset_versions(name), 0, -1)]
        if not ids:
            raise NotFound(f"no dataset named {name!r}; known: {', '.join(await self.list_dataset_names()) or 'none'}")
        return [await self.get_dataset_version(i, name) for i in ids]

    async def resolve_dataset(self, ref: str) -> DatasetVersion:
        """`NAME` (latest), `NAME@N` (1-based version number) or `NAME@<id prefix>`."""
        name, _, version = ref.partition("@")
        versions = await self.list_dataset_versions(name)
        if not version:
            return versions[-1]
        if version.isdigit() and len(version) < 6:
            n = int(version)
            if 1 <= n <= len(versions):
                return versions[n - 1]
            raise NotFound(f"dataset {name!r} has versions 1..{len(versions)}, not {n}")
        matches = [v for v in versions if v.id.startswith(version)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(f"dataset {name!r} has no version {version!r}")
        raise InvalidInput(f"version prefix {version!r} of {name!r} is ambiguous")

    async def split_dataset(self, dsv: DatasetVersion, split: Split, *, force: bool = False) -> DatasetVersion:
        """Record `split` on the version. A version candidates were trained on keeps its split
        (their held-out benchmarks would then hold records they trained on) unless `force`;
        the same split again is no change."""
        if not force and (dsv.split.test_indices if dsv.split else []) != split.test_indices:
            trained = [c.name for c in await self.list_candidates() if c.dataset_id == dsv.id]  # type: ignore[attr-defined]
            if trained:
                listed = ", ".join(trained[:5]) + (f" and {len(trained) - 5} more" if len(trained) > 5 else "")
                raise Conflict(
                    f"{dsv.ref}: candidates were trained on it as it is split now ({listed}); a new split would put "
                    "records they trained on into the held-out set that evals and `task from-data` read. Add the "
                    "records under a new name to split them another way, or force it (arena data split --force; "
                    "the API's force: true): traces keep the records each candidate was given")
        return await self.set_dataset_split(dsv, split)

    async def set_dataset_split(self, dsv: DatasetVersion, split: Split) -> DatasetVersion:
        updated = msgspec.structs.replace(dsv, split=split)
        await self.redis.set(self.keys.dataset_version(self._dsv_key(dsv.name, dsv.id)), _enc.encode(updated))
        return updated
