"""A sharded collection's folder: its manifest, the shared transform and trained index parts, one folder per shard.

    sharded.json      format version, shard count, replicas, the settings every shard shares, the recipe built
    transform.npy     the transform every shard applies (fitted once, on the first add or the ingest's sample)
    trained.N/        the recipe's index files trained on a sample, holding no rows (trained.py)
    shard-000/ …      each shard: an ordinary collection (collection.py), opened alone with `Collection.open`
    .lock             held by the one writer
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..collection.manifest import Manifest
from ..errors import CollectionError, InvalidInputError

FORMAT = "matsearch-sharded"
FORMAT_VERSION = 1
MANIFEST = "sharded.json"
TRANSFORM = "transform.npy"


def positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass
class ShardedManifest:
    """`shards` and the shards' shared settings (as a collection's `Manifest`); `dim`/`nesting` are set by the
    first add; `recipe` is what every shard built from the trained parts in folder `trained`."""

    shards: int
    replicas: int
    model: str | None
    metric: str
    transform: str
    dim: int | None = None
    nesting: list[int] | None = None
    on_disk: bool = False
    recipe: str = "flat"
    trained: str | None = None

    def check(self) -> "ShardedManifest":
        positive("shards", self.shards)
        positive("replicas", self.replicas)
        Manifest(model=self.model, metric=self.metric, transform=self.transform, dim=self.dim,
                 nesting=self.nesting, recipe=self.recipe, on_disk=self.on_disk).check()
        return self

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old manifest or the new one."""
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}, indent=2))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "ShardedManifest":
        path = Path(path)
        if not path.exists():
            raise CollectionError(f"{path.parent} is not a sharded matsearch collection: {path.name} is missing")
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
                raise ValueError("not a sharded collection manifest")
            version = data.pop("format_version", None)
            if version != FORMAT_VERSION:
                raise CollectionError(f"{path} has format version {version}; this matsearch reads {FORMAT_VERSION}")
            return cls(**data).check()
        except CollectionError:
            raise
        except (ValueError, TypeError) as exc:
            raise CollectionError(f"manifest {path} is corrupt: {exc}") from None


def shard_folder(root: Path, shard: int) -> Path:
    return Path(root) / f"shard-{shard:03d}"
