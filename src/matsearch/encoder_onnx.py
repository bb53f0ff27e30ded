"""The encoder as an ONNX graph run by onnxruntime: fp32, or with int8 weights (dynamic quantisation).

The graph is the sentence-transformers model's own modules (transformer, pooling, any dense layer,
normalisation) traced by `torch.onnx.export`, so it pools exactly as the model does; texts are tokenised
by the model's own fast tokenizer, cut at the model's `max_seq_length`. Exported once per model and kind
into the cache (see `encoder_cache`); running it needs neither torch nor sentence-transformers.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np

from .encoder_cache import cached_folder, folder_identity
from .errors import InvalidInputError

EXPORT_VERSION = 1  # part of every cache key: raise it when the export below changes
GRAPH, TOKENIZER = "model.onnx", "tokenizer.json"
# Texts per onnxruntime call. Its attention materialises every score, so big calls spill the caches: on one
# core (int8, SciFact) 1 / 2 / 4 / 8 / 64 texts took 2.0 / 1.6 / 1.6 / 1.6 / 2.6 ms per query and
# 25 / 26 / 28 / 39 / 52 ms per document.
RUN_TEXTS = 2
log = logging.getLogger(__name__)


def onnx_folder(model_path: str, *, int8: bool) -> Path:
    """The cache entry holding `model_path` exported (and quantised when `int8`), built at first use."""
    reduced = int8 and not has_int8_dot_products()
    kind = "int8r" if reduced else "int8" if int8 else "fp32"
    key = f"{folder_identity(_model_folder(model_path))}-{kind}-v{EXPORT_VERSION}"
    return cached_folder("onnx", key, lambda folder: export(model_path, folder, int8=int8, reduced=reduced))


def has_int8_dot_products() -> bool:
    """False on an x86 Linux machine whose CPU flags name no VNNI; True elsewhere."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


def export(model_path: str, folder: Path, *, int8: bool, reduced: bool = False) -> None:
    """Write the model's graph (int8 weights when `int8`; 7-bit ones when `reduced`, for CPUs without VNNI,
    whose 16-bit pair sums of 8-bit products would saturate) and its tokenizer into `folder`."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    log.info("exporting encoder %s to ONNX (%s), once, into %s", model_path, "int8" if int8 else "fp32", folder)
    try:
        model = SentenceTransformer(model_path, device="cpu").eval()
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot load encoder model {model_path!r}: {exc}") from None
    tokenizer = _fast_tokenizer(model, model_path)
    sample = model.tokenizer(["a short text", "a somewhat longer text, so that the first is padded"],
                             padding=True, return_tensors="pt")  # padding traces the attention mask's path
    names = list(sample.keys())
    fp32 = folder / ("fp32.onnx" if int8 else GRAPH)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it fixes (none matter here)
        torch.onnx.export(_by_name(model, names), tuple(sample[n] for n in names), str(fp32), dynamo=False,
                          input_names=names, output_names=["embedding"], opset_version=17,
                          dynamic_axes={**{n: {0: "texts", 1: "tokens"} for n in names}, "embedding": {0: "texts"}})
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quiet = _QuantiserNotes()  # it logs each node it skips, and advice, on the root logger
        logging.getLogger().addFilter(quiet)
        try:  # per-channel weight scales: one scale per tensor loses too much (cosine to fp32 ~0.95, not ~0.994)
            quantize_dynamic(str(fp32), str(folder / GRAPH), weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=reduced)
        finally:
            logging.getLogger().removeFilter(quiet)
        fp32.unlink()
    tokenizer.save(str(folder / TOKENIZER))
    (folder / "settings.json").write_text(json.dumps({"model": model_path, "max_seq_length": model.max_seq_length,
                                                      "dimension": model.get_embedding_dimension()}))


class OnnxEncoder:
    """Runs an exported encoder on texts, a few of similar length at a time; unit-length float32 vectors out."""

    def __init__(self, folder: Path, *, threads: int | None = None):
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = onnxruntime.InferenceSession(str(folder / GRAPH), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dimension = json.loads((folder / "settings.json").read_text())["dimension"]

    def encode(self, texts: list[str], *, batch_size: int, progress: bool = False) -> np.ndarray:
        if 0 < len(texts) <= min(RUN_TEXTS, batch_size) and not progress:  # a query: one call, nothing to arrange
            return _unit(np.array(self._run(texts), dtype=np.float32))
        from tqdm.auto import tqdm

        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths pad less
        for start in tqdm(range(0, len(texts), batch_size), desc="Batches", disable=not progress):
            for run in range(start, min(start + batch_size, len(texts)), RUN_TEXTS):
                rows = order[run : min(run + RUN_TEXTS, start + batch_size)]
                vectors[rows] = self._run([texts[r] for r in rows])
        return _unit(vectors)

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = [self.tokenizer.encode(texts[0])] if len(texts) == 1 else self.tokenizer.encode_batch(texts)
        fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        feeds = {name: np.array([getattr(e, fields[name]) for e in encodings], dtype=np.int64) for name in self.inputs}
        return self.session.run(None, feeds)[0]


def _unit(vectors: np.ndarray) -> np.ndarray:
    """`vectors` (float32, rows) scaled to unit length in place (a zero row stays zero)."""
    vectors /= np.maximum(np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None], 1e-12)
    return vectors


class _QuantiserNotes(logging.Filter):
    """Drops the records onnxruntime's quantiser logs on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname


def _fast_tokenizer(model, model_path: str):
    """The model's fast tokenizer set to cut and pad as sentence-transformers does."""
    if not getattr(model.tokenizer, "is_fast", False):
        raise InvalidInputError(f"encoder model {model_path!r} has no fast tokenizer: use runtime='torch'")
    if model.default_prompt_name and model.prompts.get(model.default_prompt_name):
        raise InvalidInputError(f"encoder model {model_path!r} prepends the prompt {model.default_prompt_name!r}: "
                                "use runtime='torch'")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())  # a copy: calls reset the model's
    tokenizer.enable_truncation(max_length=model.max_seq_length)  # the file may hold another length
    tokenizer.enable_padding(pad_id=model.tokenizer.pad_token_id, pad_token=model.tokenizer.pad_token)
    return tokenizer


def _model_folder(model_path: str) -> Path:
    """The folder of a model given as a path or as a hub name already in the local hub cache."""
    if Path(model_path).is_dir():
        return Path(model_path)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_path, local_files_only=True))
    except Exception as exc:  # the hub raises several kinds for a name it cannot find offline
        raise InvalidInputError(f"cannot load encoder model {model_path!r}: {exc}") from None


def _by_name(model, names: list[str]):
    """`model` as a torch module taking its inputs as positional tensors named `names`, returning the
    sentence embedding: the shape `torch.onnx.export` traces."""
    import torch

    class ByName(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(dict(zip(names, tensors)))["sentence_embedding"]

    return ByName()
