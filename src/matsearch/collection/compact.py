"""Compaction: rewrite the store, id table and indexes without deleted rows, with no window where a crash loses data.

The live rows are copied, in order, into a staging folder (vectors, ids, the recipe's
indexes rebuilt over them, a manifest one epoch on), which is then renamed
`compact.ready`. The commit point is one SQLite transaction that renumbers the
documents to their new rows, forgets the tombstones and records the new epoch.
After it, the staged files are moved into place, the manifest last (by this call,
or by the next writable open if the process died); before it, the staging folder
is discarded and the collection is as it was. A reader that refreshes between the
commit and the manifest sees SQLite one epoch ahead, keeps serving the state it
holds (its maps keep the replaced files alive) and reloads everything once the
manifest catches up.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..recipe import Recipe
from ..store import BlockStore
from .docstore import DocStore
from .idtable import IdTable
from .manifest import Manifest
from .refit import fsync_tree

STAGING, READY = "compact.staging", "compact.ready"
_CHUNK = 65_536  # rows copied at a time


def stage(path: Path, store: BlockStore, ids, live: np.ndarray, manifest: Manifest, *,
          progress: bool = False) -> Manifest:
    """Write the compacted collection (rows `live` of `store`, in order) and mark it ready; return its manifest."""
    staging = path / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    staged = BlockStore.create(staging / "vectors", manifest.nesting)
    for lo in tqdm(range(0, len(live), _CHUNK), desc="compacting", disable=not progress):
        staged.append(store.rows(live[lo : lo + _CHUNK]))
    IdTable.write(staging / "ids", [str(i) for i in ids.lookup(live)] if len(live) else [])
    (staging / "indexes").mkdir()
    for part in Recipe.parse(manifest.recipe).parts:
        part.make(manifest.metric).build(staged, progress=progress).save(staging / "indexes" / part.file)
    new = replace(manifest, indexes="indexes", epoch=manifest.epoch + 1)
    fsync_tree(staging)
    new.save(staging / "manifest.json")
    os.rename(staging, path / READY)
    return new


def roll_forward(path: Path, docs: DocStore) -> bool:
    """Finish a compaction whose SQLite commit happened; drop one that never committed. True if finished."""
    shutil.rmtree(path / STAGING, ignore_errors=True)
    ready = path / READY
    if not ready.is_dir():
        return False
    if not (ready / "manifest.json").exists():  # everything was moved; a crash cut short removing the folder
        shutil.rmtree(ready)
        return True
    staged = Manifest.load(ready / "manifest.json")
    if docs.epoch() != staged.epoch:  # crashed before the commit point: the old collection stands
        shutil.rmtree(ready)
        return False
    for name in ("vectors", "ids", "indexes"):
        if (ready / name).exists():
            shutil.rmtree(path / name, ignore_errors=True)
            os.rename(ready / name, path / name)
    os.replace(ready / "manifest.json", path / "manifest.json")
    shutil.rmtree(ready)
    return True
