"""/v1/collections: list, create, inspect and drop collections."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from ...encoder import model_dimension
from ...errors import CollectionError, InvalidInputError
from ...matryoshka import default_nesting
from ..deps import ERRORS, READ, WRITE, CollectionName, Collections, Config
from ..jobs import frontier
from ..registry import MissingCollection, Registry
from ..schemas import CollectionInfo, CollectionList, CreateCollection, Dropped

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/collections", tags=["collections"], responses=ERRORS)


@router.get("", response_model=CollectionList, dependencies=READ)
def list_collections(collections: Collections) -> dict:
    """Every collection under the served folder, with its counts and settings."""
    found = []
    for name in collections.names():
        try:
            found.append(describe(collections, name))
        except MissingCollection:
            continue  # dropped meanwhile
        except CollectionError as exc:  # one damaged or busy collection does not hide the others
            log.warning("collection %r left out of the list: %s", name, exc)
    return {"collections": found}


@router.post("", response_model=CollectionInfo, status_code=201, dependencies=WRITE)
def create_collection(body: CreateCollection, collections: Collections, settings: Config) -> dict:
    """A new, empty collection; its width is set by `dim` or by the first add."""
    if body.model is not None and body.model not in settings.models:
        raise InvalidInputError(f"model {body.model!r} is not offered by this service: use one of "
                                f"{list(settings.models)}, or null for a collection of vectors")
    if body.model is not None and body.dim is not None and model_dimension(body.model) not in (None, body.dim):
        raise InvalidInputError(f"dim {body.dim} does not match model {body.model!r}, which embeds "
                                f"{model_dimension(body.model)} dims")
    nesting = None if body.dim is None else default_nesting(body.dim)
    collections.create(body.name, model=body.model, metric=body.metric, transform=body.transform, nesting=nesting)
    return describe(collections, body.name)


@router.get("/{name}", response_model=CollectionInfo, dependencies=READ)
def get_collection(name: CollectionName, collections: Collections) -> dict:
    """`Collection.info()`, with the recall-vs-cost frontier once the collection is calibrated."""
    return describe(collections, name)


@router.delete("/{name}", response_model=Dropped, dependencies=WRITE)
def drop_collection(name: CollectionName, collections: Collections) -> dict:
    """Delete the collection and its folder, once the calls using it end."""
    collections.drop(name)
    return {"dropped": name}


def describe(collections: Registry, name: str) -> dict:
    """A collection's info as the API shows it: its name, no server paths, its width, its frontier."""
    with collections.reading(name) as col:
        info = col.info()
        try:
            calibration = col.calibration()
        except CollectionError:
            calibration = None  # info["calibration"] says why
    del info["path"]
    if info["dim"] is None and info["nesting"]:
        info["dim"] = info["nesting"][-1]  # given at create, before the first add
    return {"name": name, **info, "frontier": None if calibration is None else frontier(calibration)}
