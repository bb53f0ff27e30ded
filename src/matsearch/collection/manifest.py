"""The collection's manifest: a small JSON file with a format version and its settings."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CollectionError

FORMAT = "matsearch-collection"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    """Settings fixed when a collection is created; `dim`/`nesting` are set by the first add."""

    model: str
    metric: str
    transform: str
    dim: int | None = None
    nesting: list[int] | None = None

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old manifest or the new one."""
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}, indent=2))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        path = Path(path)
        if not path.exists():
            raise CollectionError(f"{path.parent} is not a matsearch collection: {path.name} is missing")
        try:
            data = json.loads(path.read_text())
            if data.pop("format") != FORMAT:
                raise ValueError("not a matsearch collection manifest")
            version = data.pop("format_version")
            if version != FORMAT_VERSION:
                raise CollectionError(f"{path} has format version {version}; this matsearch reads {FORMAT_VERSION}")
            return cls(**data)
        except CollectionError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CollectionError(f"manifest {path} is corrupt: {exc}") from None
