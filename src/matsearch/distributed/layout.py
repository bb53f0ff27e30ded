"""A sharded collection's folder: its manifest, the shared transform and trained index parts, one folder per shard.

    sharded.json      format version, shard count, replicas, the settings every shard shares, the recipe built
    transform.npy     the transform every shard applies (fitted once, on the first add or the ingest's sample)
    trained.N/        the recipe's index files trained on a sample, holding no rows (trained.py)
    shard-000/ …      each shard: an ordinary collection (collection.py), opened alone with `Collection.open`
    .lock             held by the one writer
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..collection.manifest import Manifest, load_manifest, save_manifest
from ..errors import InvalidInputError

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
        save_manifest(path, FORMAT, FORMAT_VERSION, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "ShardedManifest":
        return load_manifest(path, FORMAT, FORMAT_VERSION, "sharded matsearch collection",
                             lambda **f: cls(**f).check())


def shard_folder(root: Path, shard: int) -> Path:
    return Path(root) / f"shard-{shard:03d}"
