"""Swapping a collection onto a new transform without a window where a crash loses it.

Everything the new transform changes — the transform file, the re-rotated vector
blocks, the indexes rebuilt over them, the manifest — is written into a staging
folder first. Renaming that folder to `elasticize.ready` is the commit point: before
it, the old collection is intact and the staging folder is discarded on the next
writable open; after it, the swap is rolled forward (by this call, or by the next
writable open if the process died), each step idempotent, the manifest last.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..recipe import Recipe
from ..store import BlockStore
from ..transform import Transform
from .manifest import Manifest

STAGING = "elasticize.staging"
READY = "elasticize.ready"
_CHUNK = 65_536  # rows re-rotated at a time


def stage(path: Path, store: BlockStore, old: Transform, new: Transform, manifest: Manifest, *,
          progress: bool = False) -> None:
    """Write the collection as it will be under `new` and `manifest`, then commit it as ready."""
    staging = path / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    new.save(staging / "transform.npy")
    staged = BlockStore.create(staging / "vectors", manifest.nesting)
    for lo in tqdm(range(0, store.count, _CHUNK), desc="re-rotating", disable=not progress):
        rows = np.arange(lo, min(lo + _CHUNK, store.count))
        staged.append(new.apply(old.restore(store.rows(rows))))
    (staging / "indexes").mkdir()
    for part in Recipe.parse(manifest.recipe).parts:
        part.make(manifest.metric).build(staged, progress=progress).save(staging / "indexes" / part.file)
    fsync_tree(staging)
    manifest.save(staging / "manifest.json")
    os.rename(staging, path / READY)


def roll_forward(path: Path) -> bool:
    """Finish a committed swap, if one is pending; drop an uncommitted staging folder. True if swapped."""
    shutil.rmtree(path / STAGING, ignore_errors=True)
    ready = path / READY
    if not ready.is_dir():
        return False
    for name in ("vectors", "indexes"):
        if (ready / name).exists():
            shutil.rmtree(path / name, ignore_errors=True)
            os.rename(ready / name, path / name)
    for name in ("transform.npy", "manifest.json"):  # the manifest last: it names what the files hold
        if (ready / name).exists():
            os.replace(ready / name, path / name)
    shutil.rmtree(ready)
    return True


def fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
