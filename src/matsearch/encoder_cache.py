"""Files derived from a model (an exported runtime), built once and shared by every process.

An entry is a folder `<cache>/<kind>/<key>/`: built in a temporary folder beside it and renamed into
place, so a process sees a whole entry or none; its `manifest.json` lists each file's size and SHA-256,
checked when the entry is used, and a damaged entry is rebuilt. The cache is `$MATSEARCH_CACHE`, else
`$XDG_CACHE_HOME/matsearch`, else `~/.cache/matsearch`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from .errors import MatsearchError

CACHE_ENV = "MATSEARCH_CACHE"
MANIFEST = "manifest.json"
STALE_SECONDS = 3600  # a staging folder this old is a build that died (an export takes seconds)
log = logging.getLogger(__name__)


def cache_root() -> Path:
    """The folder that holds every cache entry."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matsearch"


def folder_identity(folder: Path) -> str:
    """A short hash of a folder's files (relative path, size and modification time of each): it changes
    when any file is replaced, so an entry keyed by it is never stale."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def cached_folder(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """The verified entry `<cache>/<kind>/<key>`, made by `build(empty folder)` when it is missing or
    damaged. Processes building the same entry at once each build their own; the first rename wins."""
    entry = cache_root() / kind / key
    if entry.is_dir():
        problem = damage(entry)
        if problem is None:
            return entry
        log.warning("rebuilding the cache entry %s: %s", entry, problem)
        _remove(entry)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_builds(entry)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
    except OSError as exc:
        raise MatsearchError(f"cannot write the cache folder {entry.parent}: {exc}; set {CACHE_ENV} to a "
                             "writable folder") from None
    try:
        build(staging)
        _write_manifest(staging)
        try:
            staging.rename(entry)
        except OSError:
            if damage(entry) is not None:  # not another process's complete entry
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    problem = damage(entry)
    if problem is not None:
        raise MatsearchError(f"the cache entry {entry} was just built but is damaged: {problem}")
    return entry


def damage(entry: Path) -> str | None:
    """What is wrong with an entry (a missing, resized or altered file, named), or None when it is whole."""
    try:
        files = json.loads((entry / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"{entry / MANIFEST} is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{entry / MANIFEST} is unreadable ({exc})"
    for name, expected in files.items():
        path = entry / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{path} has {path.stat().st_size} bytes, not {expected['size']}"
        if _sha256(path) != expected["sha256"]:
            return f"{path} does not match its checksum"
    return None


def _write_manifest(folder: Path) -> None:
    files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file()}  # a saved model has subfolders
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _remove_dead_builds(entry: Path) -> None:
    """Delete the staging folders of builds of `entry` that died (killed processes) long ago."""
    for staging in entry.parent.glob(f".{entry.name}.*"):
        try:
            if time.time() - staging.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(staging, ignore_errors=True)
        except FileNotFoundError:
            pass  # another process removed it first


def _remove(entry: Path) -> None:
    """Move a damaged entry aside (one rename, so no process sees it half deleted), then delete it."""
    doomed = Path(tempfile.mkdtemp(prefix=f".{entry.name}.damaged.", dir=entry.parent))
    try:
        entry.rename(doomed / entry.name)
    except FileNotFoundError:
        pass  # another process moved it first
    shutil.rmtree(doomed, ignore_errors=True)
