"""How well each prefix of a collection's vectors serves: truncation, PCA and the adapter side by side.

For every prefix dim, every way of making the model's vectors elastic is scored by
exact search on the cut, re-normalised prefixes: nDCG@10 against the qrels (where
the dataset has them) and recall@10 against exact full-dim search (always). PCA
and the adapter are fitted on the collection's own vectors; the collection's
fitted transform is reused for its own kind.
"""

from __future__ import annotations

import faiss
import numpy as np

from ..collection import Collection
from ..data import BeirDataset
from ..errors import InvalidInputError
from ..matryoshka import check_dims, default_dims, normalize
from ..transform import Transform
from .metrics import ndcg_at_k, overlap_at_k

METHODS = ("truncation", "pca", "adapter")


def elasticity_report(collection: Collection, dataset: BeirDataset, *, dims: list[int] | None = None,
                      query_vectors: np.ndarray | None = None, progress: bool = False) -> dict:
    """Per method and prefix dim: nDCG@10 (None without qrels) and recall@10 against exact full-dim."""
    if collection.dim is None:
        raise InvalidInputError(f"collection {collection.path} is empty: nothing to report on")
    dims = check_dims(list(dims or default_dims(collection.dim)) + [collection.dim], collection.dim)
    own = collection.transform
    docs = own.restore(np.stack([r.vector for r in collection.get(dataset.doc_ids)]))
    queries = _judged_queries(collection, dataset, query_vectors, progress)
    truth = _top10(docs, queries[1], collection.dim)
    report = {"collection": str(collection.path), "documents": len(docs), "queries": len(queries[0]),
              "dims": dims, "qrels": bool(dataset.qrels), "methods": {}}
    for method in METHODS:
        if method == "truncation":
            transform = Transform(kind="none")
        elif own.kind == method:
            transform = own
        else:
            transform = Transform(kind=method).fit(docs, nesting=dims, progress=progress)
        report["methods"][method] = _score(transform.apply(docs), transform.apply(queries[1]), queries[0],
                                           dataset, truth, dims)
        report["methods"][method]["fitted"] = "collection's own" if transform is own else "fitted for the report"
    return report


def _judged_queries(collection, dataset, query_vectors, progress) -> tuple[list[str], np.ndarray]:
    """(query ids, raw vectors) of the judged queries, or of all queries when there are no qrels."""
    rows = [n for n, q in enumerate(dataset.query_ids) if q in dataset.qrels] if dataset.qrels \
        else list(range(len(dataset.query_ids)))
    if not rows:
        raise InvalidInputError("no query in the queries file has relevance judgements")
    if query_vectors is None:
        vectors = collection.encoder.encode([dataset.query_texts[n] for n in rows], progress=progress)
    elif len(query_vectors) != len(dataset.query_ids):
        raise InvalidInputError(
            f"query vectors have {len(query_vectors)} rows, the queries file has {len(dataset.query_ids)}")
    else:
        vectors = np.asarray(query_vectors, dtype=np.float32)[rows]
    return [dataset.query_ids[n] for n in rows], normalize(vectors)


def _top10(docs: np.ndarray, queries: np.ndarray, dim: int) -> np.ndarray:
    """Row numbers of each query's exact top 10 on the re-normalised `dim`-prefix."""
    index = faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(normalize(docs[:, :dim]), dtype=np.float32))
    return index.search(np.ascontiguousarray(normalize(queries[:, :dim]), dtype=np.float32), min(10, len(docs)))[1]


def _score(docs, queries, query_ids, dataset, truth, dims) -> dict:
    ndcg, recall = [], []
    for dim in dims:
        found = _top10(docs, queries, dim)
        recall.append(float(np.mean([overlap_at_k(f, t, len(t)) for f, t in zip(found, truth)])))
        if dataset.qrels:
            ranked = [[dataset.doc_ids[i] for i in row] for row in found]
            ndcg.append(float(np.mean([ndcg_at_k(r, dataset.qrels[q], 10) for r, q in zip(ranked, query_ids)])))
    return {"ndcg@10": ndcg or None, "recall@10": recall}


def plot_elasticity(report: dict, path) -> None:
    """nDCG@10 (where judged) and recall@10 against the prefix dim, one line per method, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["ndcg@10", "recall@10"] if report["qrels"] else ["recall@10"]
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for method, scores in report["methods"].items():
            axis.plot(report["dims"], scores[metric], marker="o", label=method)
        axis.set_xscale("log", base=2)
        axis.set_xticks(report["dims"], [str(d) for d in report["dims"]])
        axis.set_xlabel("prefix dims")
        axis.set_ylabel(metric if metric == "ndcg@10" else "recall@10 vs exact full-dim")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"{report['collection']}: {report['documents']:,} documents, {report['queries']} queries")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
