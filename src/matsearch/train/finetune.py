"""Fine-tune a sentence-transformers encoder into a Matryoshka one, on CPU.

The loss is sentence-transformers' own `MatryoshkaLoss` around
`MultipleNegativesRankingLoss` (in-batch negatives): the ranking loss is applied to
the embeddings cut to every dim of the nesting list, so each prefix learns to rank.
Training runs through `SentenceTransformerTrainer`; the saved folder loads as a
collection's encoder (`matsearch index --model FOLDER`).

With `rotation` (an orthogonal matrix such as a collection's PCA or adapter
transform), a bias-free linear layer initialised to it is put in front of the
model's final normalisation: training starts from vectors that are already elastic
and whose full-dim cosines are the original model's, and refines model and layer
together.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from ..encoder import DEFAULT_MODEL, resolve_model
from ..errors import InvalidInputError
from ..matryoshka import default_dims
from .pairs import Pair

log = logging.getLogger(__name__)


def finetune_matryoshka(pairs: list[Pair], output, *, model: str = DEFAULT_MODEL, dims: list[int] | None = None,
                        weights: list[float] | None = None, epochs: float = 1.0, batch_size: int = 32,
                        learning_rate: float = 2e-5, max_seq_length: int = 128, max_steps: int = -1, rotation: np.ndarray | None = None,
                        seed: int = 0, progress: bool = False) -> Path:
    """Train `model` on (query, relevant text) pairs with MatryoshkaLoss over `dims`
    (default: the full dim and 32, 64, 128, … below it; `weights`, one per dim in the
    same order, default all 1), starting from `rotation` applied to its output if given, and
    save it to `output`."""
    if len(pairs) < 2:
        raise InvalidInputError(f"fine-tuning needs at least 2 pairs (in-batch negatives), got {len(pairs)}")
    if batch_size < 2:
        raise InvalidInputError(f"batch_size must be at least 2 (in-batch negatives), got {batch_size}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from datasets import Dataset
        from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                           SentenceTransformerTrainingArguments)
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError as exc:
        raise InvalidInputError(f"fine-tuning needs the training extras: pip install 'matsearch[train]' ({exc})") from None

    encoder = SentenceTransformer(resolve_model(model), device="cpu")
    serving_length = encoder.max_seq_length
    encoder.max_seq_length = min(max_seq_length, serving_length or max_seq_length)
    full = encoder.get_embedding_dimension()
    dims = list(dims or [full] + [d for d in default_dims(full) if d >= 32])
    if len(set(dims)) != len(dims) or min(dims) < 1 or max(dims) > full:
        raise InvalidInputError(f"Matryoshka dims must be distinct and lie in 1..{full}, got {dims}")
    if weights is not None and len(weights) != len(dims):
        raise InvalidInputError(f"{len(weights)} weights given for the {len(dims)} Matryoshka dims {dims}")
    if rotation is not None:
        encoder = _with_rotation(encoder, rotation)
    loss = MatryoshkaLoss(encoder, MultipleNegativesRankingLoss(encoder), matryoshka_dims=dims,
                          matryoshka_weights=weights)
    train = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    log.info("fine-tuning %s on %d pairs, Matryoshka dims %s", model, len(pairs), dims)
    with tempfile.TemporaryDirectory() as scratch:
        arguments = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=epochs, max_steps=max_steps,
            per_device_train_batch_size=min(batch_size, len(pairs)), learning_rate=learning_rate,
            warmup_steps=0.1, seed=seed, data_seed=seed, use_cpu=True, save_strategy="no", report_to="none",
            batch_sampler=BatchSamplers.NO_DUPLICATES, logging_steps=50, disable_tqdm=not progress,
        )
        SentenceTransformerTrainer(model=encoder, args=arguments, train_dataset=train, loss=loss).train()
    encoder.max_seq_length = serving_length  # texts are cut shorter only while training
    output = Path(output)
    encoder.save(str(output))
    return output


def _with_rotation(encoder, rotation: np.ndarray):
    """The encoder with a bias-free linear layer computing x @ rotation before its normalisation."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    full = encoder.get_embedding_dimension()
    rotation = np.asarray(rotation, dtype=np.float32)
    if rotation.shape != (full, full):
        raise InvalidInputError(f"rotation must be ({full}, {full}) for this model, got {rotation.shape}")
    layer = Dense(full, full, bias=False, activation_function=torch.nn.Identity(),
                  init_weight=torch.from_numpy(np.ascontiguousarray(rotation.T)))
    modules = list(encoder)
    at = next((n for n, m in enumerate(modules) if type(m).__name__ == "Normalize"), len(modules))
    rotated = SentenceTransformer(modules=modules[:at] + [layer] + modules[at:], device="cpu")
    rotated.max_seq_length = encoder.max_seq_length
    return rotated
