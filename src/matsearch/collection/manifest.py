"""The collection's manifest: a small JSON file with a format version and its settings."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CollectionError, InvalidInputError
from ..matryoshka import check_nesting
from ..recipe import Recipe
from ..search import METRICS
from ..transform import TRANSFORMS

FORMAT = "matsearch-collection"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    """Settings fixed when a collection is created; `dim`/`nesting` are set by the first add."""

    model: str | None  # None: a collection of precomputed vectors, searched by vector only
    metric: str
    transform: str
    dim: int | None = None
    nesting: list[int] | None = None
    recipe: str = "flat"
    indexes: str = "indexes"  # the folder holding the recipe's index files
    epoch: int = 0  # bumped when the stored vectors are rewritten (elasticize, compact): readers reload all
    on_disk: bool = False  # re-ranks read their rows from disk with direct I/O, not through the page cache

    def check(self) -> "Manifest":
        """Raise InvalidInputError unless the settings are usable; return self."""
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise InvalidInputError(f"model must be a model name or path (or None for vectors only), got {self.model!r}")
        if self.metric not in METRICS:
            raise InvalidInputError(f"metric {self.metric!r} is not one of {METRICS}")
        if self.transform not in TRANSFORMS:
            raise InvalidInputError(f"transform {self.transform!r} is not one of {TRANSFORMS}")
        if self.nesting is not None:
            check_nesting(self.nesting, self.dim or max(self.nesting, default=0))
        elif self.dim is not None:
            raise InvalidInputError(f"dim {self.dim} is set but the nesting is not")
        if not isinstance(self.on_disk, bool):
            raise InvalidInputError(f"on_disk must be true or false, got {self.on_disk!r}")
        Recipe.parse(self.recipe)
        return self

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old manifest or the new one."""
        save_manifest(path, FORMAT, FORMAT_VERSION, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        return load_manifest(path, FORMAT, FORMAT_VERSION, "matsearch collection", lambda **f: cls(**f).check())


def save_manifest(path: Path, fmt: str, version: int, fields: dict) -> None:
    """Write `fields` as a manifest of format `fmt` at `version`, atomically (the old file or the new one)."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps({"format": fmt, "format_version": version, **fields}, indent=2))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_manifest(path: Path, fmt: str, version: int, what: str, make):
    """`make(**fields)` of the manifest at `path`, written as format `fmt` at `version` by a `what`; a
    CollectionError naming the file where it is missing, of another format or version, or corrupt."""
    path = Path(path)
    if not path.exists():
        raise CollectionError(f"{path.parent} is not a {what}: {path.name} is missing")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.pop("format", None) != fmt:
            raise ValueError(f"not a {what} manifest")
        found = data.pop("format_version", None)
        if found != version:
            raise CollectionError(f"{path} has format version {found}; this matsearch reads {version}")
        return make(**data)
    except CollectionError:
        raise
    except (ValueError, TypeError) as exc:
        raise CollectionError(f"manifest {path} is corrupt: {exc}") from None
