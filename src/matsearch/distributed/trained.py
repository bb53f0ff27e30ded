"""The trained parts of a recipe's indexes, fitted once on a sample and shared by every shard.

`train(folder, sample, recipe, …)` builds the recipe's indexes over a store of the sample (vectors already in
the collection's space) and writes each one's file emptied of rows: IVF centroids (and, for coded lists, the
codec), binary codes' mean, projection, list centroids and prefix-copy ranges, PQ codebooks. A shard's
`Collection.build(recipe, trained=folder)` loads them and only assigns and codes its own rows, so every shard
probes the same lists and codes the same way. A graph learns nothing but its links: each shard builds its own.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import faiss
import numpy as np

from ..collection.refit import fsync_tree
from ..recipe import Recipe
from ..store import BlockStore

SAMPLE = 100_000  # vectors the indexes are trained on at most


def train(folder: Path, sample: np.ndarray, recipe: Recipe, nesting: list[int], metric: str, *,
          progress: bool = False) -> Path:
    """Write the recipe's trained, empty index files into `folder` (made here); return it."""
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".sample-") as scratch:
        store = BlockStore.create(Path(scratch) / "vectors", nesting)
        store.append(np.ascontiguousarray(sample, dtype=np.float32))
        for part in recipe.parts:
            if part.kind == "g":
                continue
            built = Path(scratch) / part.file
            part.make(metric).build(store, progress=progress).save(built)
            EMPTIED[part.kind](built, folder / part.file)
    fsync_tree(folder)
    return folder


def _empty_ivf(built: Path, out: Path) -> None:
    with np.load(built, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    if "codes" in arrays:  # coded lists: a faiss IVF index whose codec is kept, its lists emptied
        arrays["codes"] = _serialized_empty(faiss.deserialize_index(arrays["codes"]))
    else:
        arrays["list_rows"] = np.empty(0, dtype=arrays["list_rows"].dtype)
        arrays["offsets"] = np.zeros_like(arrays["offsets"])
    _save(out, arrays)


def _empty_codes(built: Path, out: Path) -> None:
    with np.load(built, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    for name in ("codes", "list_rows", "copy_codes"):
        if name in arrays:
            arrays[name] = arrays[name][:0]
    if "list_offsets" in arrays:
        arrays["list_offsets"] = np.zeros_like(arrays["list_offsets"])
    _save(out, arrays)


def _empty_pq(built: Path, out: Path) -> None:
    index = faiss.read_index(str(built))
    index.reset()
    faiss.write_index(index, str(out))


def _serialized_empty(index) -> np.ndarray:
    index.reset()
    return faiss.serialize_index(index)


def _save(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


EMPTIED = {"p": _empty_ivf, "h": _empty_codes, "q": _empty_pq}
