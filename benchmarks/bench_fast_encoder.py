"""The fast query encoder's frontier: text in, ids out through `Collection.search`, per encoder variant.

On SciFact, NPL and Cranfield, each judged query (`qrels/test.tsv`) is searched by text one at a time on one
thread (`torch.set_num_threads(1)`, onnxruntime `intra_op_num_threads=1`), best of three passes, against the
shared corpus vectors (the full model's), searched exactly or, with `--tuned`, in a collection as a user makes
it (PCA transform, the texts, `tune` on span pseudo-queries) at its default target. Rows: the full model in PyTorch and in onnx-int8 (the default, the
reference for speed and nDCG@10), then the shipped student (`encoder="fast"`) and each other trained student
given by `--students` (parts files from benchmarks/train_fast_encoder.py, served the same way by pointing
`encoder_student.parts_path` at them), in onnx-int8. Writes benchmarks/results/fast_encoder[_tuned].{json,md}.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_fast_encoder.py --students /tmp/fe/*.npz
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_encoder import collection, machine, mean_ndcg
from common import ROOT, per_query_seconds

from matsearch import Collection, Encoder, encoder_student
from matsearch.data import load_beir
from matsearch.encoder import DEFAULT_MODEL

DATA = ROOT.parent / "shared" / "data"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="scifact,npl,cranfield")
    parser.add_argument("--students", type=Path, nargs="*", default=[], help="other trained parts (.npz)")
    parser.add_argument("--tuned", action="store_true",
                        help="search a calibrated collection (PCA transform, `tune` on span pseudo-queries: its "
                             "default target) instead of exact search on the shared vectors as they are")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shipped = encoder_student.parts_path()
    variants = [("full", "torch", "full", None), ("full", "onnx-int8", "full", None),
                ("fast (shipped)", "onnx-int8", "fast", shipped)]
    variants += [(path.stem, "onnx-int8", "fast", path) for path in args.students]
    report = {"machine": machine(), "tuned": args.tuned, "variants": [describe(*v) for v in variants],
              "datasets": {}}
    for name in args.datasets.split(","):
        report["datasets"][name] = rows(name, variants, args.tuned)
        print(json.dumps({name: report["datasets"][name]}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "fast_encoder_tuned" if args.tuned else "fast_encoder"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))


def describe(label, runtime, variant, parts) -> dict:
    if parts is None:
        return {"label": label, "runtime": runtime, "layers": 6, "ffn": 1536}
    meta = encoder_student.load_parts(parts)
    return {"label": label, "runtime": runtime, "layers": int(meta["layers"]), "ffn": int(meta["ffn"]),
            "bytes": parts.stat().st_size}


def rows(name: str, variants, tuned: bool) -> dict:
    dataset = load_beir(DATA / name)
    judged = [n for n, qid in enumerate(dataset.query_ids) if qid in dataset.qrels]
    queries = [dataset.query_texts[n] for n in judged]
    qrels = [dataset.qrels[dataset.query_ids[n]] for n in judged]
    documents = np.load(DATA / name / "corpus.minilm.f16.npy").astype(np.float32)
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        if tuned:  # as a user runs it: the default PCA transform, the texts, then `tune` (span pseudo-queries)
            col = Collection.create(Path(folder) / "c", model=DEFAULT_MODEL)
            col.add(dataset.doc_ids, texts=dataset.doc_texts, vectors=documents)
            col.encoder = Encoder(runtime="onnx-int8", threads=1)
            col.tune()
        else:
            col = collection(Path(folder) / "c", dataset.doc_ids, documents)
        with col:
            for label, runtime, variant, parts in variants:
                encoder_student.parts_path = lambda: parts  # the student this row serves (shipped or a candidate)
                col.encoder = Encoder(runtime=runtime, threads=1)  # a new encoder: its student is made anew
                seconds, results = per_query_seconds(
                    lambda q: col.search(q, k=10, mode="dense", encoder=variant), queries)
                assert results[-1].encoder == variant
                out[label if runtime != "torch" else "full (torch)"] = {
                    "ms_per_query": 1000 * seconds, "ndcg@10": mean_ndcg([r.ids[0] for r in results], qrels),
                    "plan": str(results[-1].plan)}
    default = out["full"]
    for row in out.values():
        row["speedup"] = default["ms_per_query"] / row["ms_per_query"]
        row["ndcg_kept"] = row["ndcg@10"] / default["ndcg@10"]
    return {"documents": len(dataset.doc_ids), "queries": len(queries), "variants": out}


def markdown(report: dict) -> str:
    meta = {("full (torch)" if v["runtime"] == "torch" else v["label"]): v for v in report["variants"]}
    lines = [f"Machine: {report['machine']}", "",
             "Text in, ids out through `Collection.search`, one query at a time, one thread, best of 3 passes; "
             "documents: the shared full-model vectors" + (", PCA-rotated, the collection calibrated by `tune` "
             "(span pseudo-queries) and searched at its default target" if report.get("tuned") else ", searched "
             "exactly") + ". Speed-up and nDCG kept are against the default "
             "(full model, onnx-int8) in the same run.", "",
             "| dataset | variant | runtime | layers | FFN units | parts bytes | ms/query | x default speed | nDCG@10 "
             "| % of default nDCG@10 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in report["datasets"].items():
        for label, row in result["variants"].items():
            v = meta[label]
            lines.append(f"| {name} ({result['queries']} queries) | {label} | {v['runtime']} | {v['layers']} | "
                         f"{v['ffn']} | {v.get('bytes', '')} | {row['ms_per_query']:.2f} | {row['speedup']:.2f}x | "
                         f"{row['ndcg@10']:.4f} | {100 * row['ndcg_kept']:.1f}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
