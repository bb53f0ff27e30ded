"""The fast query encoder: a student sub-model of the bundled MiniLM that embeds queries into the full model's
space, so documents stay encoded by the full model.

The student is the model's own first `layers` transformer layers, each feed-forward block cut to its first
`ffn` of 1536 units (MatFormer-style), plus small trained parts shipped in `data/fast_encoder.npz`: low-rank
(LoRA) updates of every linear layer, every bias and LayerNorm, and a final 384×384 map after mean pooling.
At first use the parts are merged into the cut weights and the result is saved, as a plain
sentence-transformers model, into the cache (then exported to ONNX like the full model); nothing is trained at
run time. `benchmarks/train_fast_encoder.py` trains the parts.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from pathlib import Path

import numpy as np

from .encoder_cache import cached_folder
from .errors import InvalidInputError

VARIANTS = ("full", "fast")
STUDENT_VERSION = 1  # part of the cache key: raise it when `assemble` changes
PARTS = "fast_encoder.npz"
LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")
NORMS = ("attention.output.LayerNorm", "output.LayerNorm")
log = logging.getLogger(__name__)


def parts_path() -> Path:
    """The shipped trained parts of the default model's student."""
    return Path(str(resources.files("matsearch.data") / PARTS))


def check_variant(variant: str, model: str) -> str:
    """`variant` when valid for `model`: "full" for any model, "fast" only for the default model."""
    from .encoder import DEFAULT_MODEL

    if variant not in VARIANTS:
        raise InvalidInputError(f"encoder {variant!r} is not one of {VARIANTS}")
    if variant == "fast" and model != DEFAULT_MODEL:
        raise InvalidInputError(f"encoder 'fast' needs trained student parts, shipped only for the default model "
                                f"{DEFAULT_MODEL!r}, not for {model!r}: use encoder='full'")
    return variant


def student_folder(model_path: str, parts: Path | None = None) -> Path:
    """The cache entry holding the student assembled from `model_path` and `parts` (a sentence-transformers
    model folder), built at first use; its key changes with the model's files and the parts' bytes."""
    from .encoder_onnx import _model_folder
    from .encoder_cache import folder_identity

    parts = parts or parts_path()
    digest = hashlib.sha256(parts.read_bytes()).hexdigest()[:16]
    key = f"{folder_identity(_model_folder(model_path))}-{digest}-v{STUDENT_VERSION}"
    return cached_folder("student", key, lambda folder: assemble(model_path, parts).save(str(folder)))


def load_parts(parts: Path) -> dict[str, np.ndarray]:
    with np.load(parts) as data:
        return {name: data[name].astype(np.float32) for name in data.files}


def cut(bert, layers: int, ffn: int) -> None:
    """Keep a BertModel's first `layers` layers and the first `ffn` units of each feed-forward block, in place."""
    if not 1 <= layers <= len(bert.encoder.layer) or not 1 <= ffn <= bert.config.intermediate_size:
        raise InvalidInputError(f"cannot cut {len(bert.encoder.layer)} layers of "
                                f"{bert.config.intermediate_size} units to {layers} of {ffn}")
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers, bert.config.intermediate_size = layers, ffn
    for layer in bert.encoder.layer:
        up, down = layer.intermediate.dense, layer.output.dense
        up.weight.data, up.bias.data = up.weight.data[:ffn].clone(), up.bias.data[:ffn].clone()
        down.weight.data = down.weight.data[:, :ffn].clone()
        up.out_features = down.in_features = ffn


def assemble(model_path: str, parts_file: Path):
    """The student as a SentenceTransformer: the cut model with the parts merged in, mean pooling, the map,
    normalisation."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling

    parts = load_parts(parts_file)
    layers, ffn = int(parts["layers"]), int(parts["ffn"])
    model = SentenceTransformer(model_path, device="cpu")
    bert = model[0].auto_model
    cut(bert, layers, ffn)
    named = dict(bert.named_modules())
    with torch.no_grad():
        for name, array in parts.items():
            if name.endswith(".lora_a"):
                linear = named[name.removesuffix(".lora_a")]
                linear.weight += torch.from_numpy(parts[name.replace("lora_a", "lora_b")] @ array)
            elif name.endswith((".weight", ".bias")) and not name.startswith("map."):
                module, field = name.rsplit(".", 1)
                getattr(named[module], field).copy_(torch.from_numpy(array))
    dense = Dense(bert.config.hidden_size, len(parts["map.bias"]), bias=True,
                         activation_function=torch.nn.Identity())
    with torch.no_grad():
        dense.linear.weight.copy_(torch.from_numpy(parts["map.weight"]))
        dense.linear.bias.copy_(torch.from_numpy(parts["map.bias"]))
    pooling = next(m for m in model if isinstance(m, Pooling))
    return SentenceTransformer(modules=[model[0], pooling, dense, Normalize()], device="cpu")
