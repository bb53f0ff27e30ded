"""Fit the general elastic rotation shipped with matsearch (src/matsearch/data/general_rotation.npy).

A 384×384 orthogonal matrix for all-MiniLM-L6-v2 vectors, fitted once on large
unlabeled text: the precomputed corpus vectors (never the queries) of the shared
collections — pkgsum (100,000 PyPI summaries), NPL (11,426 physics abstracts),
SciFact (5,183 scientific abstracts) and Cranfield (1,400 aerodynamics abstracts).
Two steps. First a PCA: the eigenvectors, largest eigenvalue first, of the mean of the
corpora's covariances, each corpus centred on its own mean and given equal weight
(pooling the rows instead lets pkgsum's 100,000 outweigh the rest; measured in
benchmarks/results/general_rotation.md), signs fixed as Transform's PCA fixes them.
Then the unsupervised adapter (`matsearch.train.adapter`) started from it, on up to
12,500 documents drawn from each corpus (default_rng(0)), nesting 16/32/64/128: the
rotation whose prefixes best rank each document's neighbours as the full vectors do
(`--pca-only` stops after the first step). About 7 minutes on 2 cores. Stored as
float16 (295 KB); `matsearch.transform.general_rotation` restores exact orthogonality
on load, which changes no nDCG@10 figure at any prefix.

    .venv/bin/python benchmarks/fit_general_rotation.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import ROOT

from matsearch.train.adapter import fit_adapter

DATA = ROOT.parent / "shared" / "data"
CORPORA = ("pkgsum", "npl", "scifact", "cranfield")
OUT = ROOT / "src" / "matsearch" / "data" / "general_rotation.npy"
NESTING = [16, 32, 64, 128]
PER_CORPUS = 12_500  # documents each corpus gives the adapter at most


def corpus_covariance(name: str) -> np.ndarray:
    """The covariance of a shared collection's corpus vectors, about their own mean."""
    vectors = np.load(DATA / name / "corpus.minilm.f16.npy").astype(np.float64)
    centred = vectors - vectors.mean(axis=0)
    return centred.T @ centred / len(vectors)


def general_rotation(corpora=CORPORA) -> np.ndarray:
    """Eigenvectors (largest first, signs fixed) of the equal-weight mean of the corpora's covariances."""
    covariance = sum(corpus_covariance(name) for name in corpora) / len(corpora)
    _, eigenvectors = np.linalg.eigh(covariance)
    matrix = eigenvectors[:, ::-1]
    matrix *= np.where(matrix[np.abs(matrix).argmax(axis=0), np.arange(len(matrix))] < 0, -1.0, 1.0)
    return matrix


def general_adapter(corpora=CORPORA, seed: int = 0) -> np.ndarray:
    """The adapter fitted on up to 12,500 documents of each corpus, started from `general_rotation(corpora)`."""
    rng = np.random.default_rng(seed)
    sample = []
    for name in corpora:
        vectors = np.load(DATA / name / "corpus.minilm.f16.npy").astype(np.float32)
        sample.append(vectors[np.sort(rng.choice(len(vectors), min(PER_CORPUS, len(vectors)), replace=False))])
    start = np.ascontiguousarray(general_rotation(corpora), dtype=np.float32)
    return fit_adapter(np.concatenate(sample), start, NESTING, seed=seed, progress=True).astype(np.float64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--pca-only", action="store_true", help="ship the first step (PCA) without the adapter")
    args = parser.parse_args()
    matrix = general_rotation(args.corpora) if args.pca_only else general_adapter(args.corpora)
    np.save(args.out, matrix.astype(np.float16))
    stored = np.load(args.out).astype(np.float64)
    print(f"{args.out}: {args.out.stat().st_size:,} bytes, fitted on {', '.join(args.corpora)}; "
          f"float16 rounding: max |error| {np.abs(stored - matrix).max():.1e}, "
          f"max |MᵀM − I| {np.abs(stored.T @ stored - np.eye(len(matrix))).max():.1e}")


if __name__ == "__main__":
    main()
