"""What a service allows: its key, its limits, the models a new collection may use."""

from __future__ import annotations

from dataclasses import dataclass

from ..encoder import DEFAULT_MODEL
from ..errors import InvalidInputError


@dataclass(frozen=True)
class Settings:
    """`api_key`: writes need it (reads too when `private`); `read_only` refuses every write; `cors`: origins
    allowed to call from a browser (none by default); `max_body` bytes and `max_batch` documents per request;
    `models`: the encoders a new collection may name (a model name can be a path, so clients get a list)."""

    api_key: str | None = None
    read_only: bool = False
    private: bool = False
    cors: tuple[str, ...] = ()
    max_body: int = 32 * 2**20
    max_batch: int = 1_000
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    job_threads: int = 2

    def __post_init__(self):
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidInputError("the API key is empty; give a key, or none")
        if self.private and self.api_key is None:
            raise InvalidInputError("--private needs an API key (--api-key or MATSEARCH_API_KEY)")
        for name in ("max_body", "max_batch", "job_threads"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be at least 1, got {getattr(self, name)}")
