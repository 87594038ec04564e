"""Datasets: upload a file as a new version, list, show, page through records, split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec
from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter

from service import datasets
from service.domain import DatasetVersion
from service.errors import InvalidInput
from service.routes.auth import ADMIN, ADMIN_BULK, VIEWER
from service.store import Store


@dataclass
class DatasetUpload:
    file: UploadFile
    name: str
    format: str | None = None
    parent: str | None = None
    note: str = ""
    encoding: str | None = None  # the file's text encoding when not UTF-8 (e.g. gb18030)


class SplitRequest(msgspec.Struct):
    test_fraction: float = 0.1
    seed: int = 0
    force: bool = False  # re-split a version candidates were trained on (409 otherwise)


@post("/api/datasets", summary="Add a dataset file as a new version (multipart)", status_code=201, **ADMIN_BULK)
async def add_dataset(request: Request, store: Store, data: Annotated[DatasetUpload, Body(media_type=RequestEncodingType.MULTI_PART)]) -> dict:
    settings = request.app.state.settings
    raw = await data.file.read()
    dsv, created = await datasets.add_dataset(
        store, settings.data_dir, raw, name=data.name, filename=data.file.filename or "upload",
        fmt=data.format or None, max_bytes=settings.max_upload_bytes, parent=data.parent or None, note=data.note,
        encoding=data.encoding or None,
    )
    return {"created": created, "dataset": msgspec.to_builtins(dsv)}


@get("/api/datasets", summary="List datasets with their latest version", **VIEWER)
async def list_datasets(store: Store) -> list[dict]:
    out = []
    for name in await store.list_dataset_names():
        versions = await store.list_dataset_versions(name)
        latest = versions[-1]
        out.append({"name": name, "versions": len(versions), "latest": msgspec.to_builtins(latest)})
    return out


@get("/api/datasets/{name:str}", summary="A dataset's versions (or one with ?version=)", **VIEWER)
async def show_dataset(store: Store, name: str, version: str | None = None) -> dict:
    if version:
        dsv = await store.resolve_dataset(f"{name}@{version}")
        return {"name": name, "versions": [msgspec.to_builtins(dsv)]}
    return {"name": name, "versions": [msgspec.to_builtins(v) for v in await store.list_dataset_versions(name)]}


@get("/api/datasets/{name:str}/records", summary="Page through a version's normalised records", **VIEWER)
async def dataset_records(
    request: Request,
    store: Store,
    name: str,
    version: str | None = None,
    offset: Annotated[int, Parameter(ge=0)] = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 50,
) -> dict:
    import anyio.to_thread

    dsv: DatasetVersion = await store.resolve_dataset(f"{name}@{version}" if version else name)
    records, lines = await anyio.to_thread.run_sync(datasets.read_records, request.app.state.settings.data_dir, dsv.id)
    page = [
        {"index": i, "line": lines[i], "messages": msgspec.to_builtins(records[i].messages)}
        for i in range(offset, min(offset + limit, len(records)))
    ]
    return {"dataset": dsv.ref, "id": dsv.id, "total": len(records), "offset": offset, "records": page}


@post("/api/datasets/{name:str}/split", summary="Make a deterministic held-out split", status_code=200, **ADMIN)
async def split_dataset(store: Store, name: str, data: SplitRequest, version: str | None = None) -> dict:
    dsv = await store.resolve_dataset(f"{name}@{version}" if version else name)
    if not isinstance(data.seed, int):
        raise InvalidInput("seed must be an integer")
    split = datasets.make_split(dsv.record_count, data.test_fraction, data.seed)
    dsv = await store.split_dataset(dsv, split, force=data.force is True)
    return {"dataset": msgspec.to_builtins(dsv)}
