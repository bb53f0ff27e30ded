"""Cold-cache run of the store: disk bytes and time per query when the vectors are not in the page cache.

Reuses (or builds, as bench_scale does) the collection of N items: pkgsum's vectors replicated with
noise, `bin64` codes. For each plan a fresh process searches through `Collection.search`, one query at
a time on one thread, after one untimed warm-up query:

- cold start: the collection's vectors/ evicted from the page cache once, then every query;
- each query cold: evicted again before every query (not timed): a store far larger than RAM;
- warm: the same queries again, untimed, then the best of three timed passes (this VM's speed drifts).

Eviction: madvise(MADV_DONTNEED) on the process's own mappings of vectors/ (the kernel keeps pages a
process maps), then posix_fadvise(POSIX_FADV_DONTNEED) on every file; mincore confirms nothing is left.
Disk bytes are `read_bytes` of /proc/self/io, diffed around the queries. Expected bytes per query
are the rows each stage reads × (its new dims + one norm) × 4 bytes (a first stage that scans reads
every row's prefix); the page floor counts, for each file a stage reads, the distinct 4 KiB pages its
rows fall in (uniformly random rows), since the kernel reads no less than a page.
`--label` names the code measured (run the old store with PYTHONPATH pointing at a copy of it).
`--on-disk` measures a store made to live on disk instead: nesting 128,256,384 (a re-ranked row's
128-dim prefix is one 512-byte sector) and re-ranks read with direct I/O (Collection.create(on_disk=True)),
in its own folder (`N-disk`); no page cache is involved, so its warm and cold figures are both disk reads.
Writes benchmarks/results/cold.json and .md.

    .venv/bin/python benchmarks/bench_cold.py --items 1000000 --folder /tmp/matsearch-scale --label after
    .venv/bin/python benchmarks/bench_cold.py --items 1000000 --on-disk --label "direct I/O"
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from bench_scale import build
from common import PKGSUM, ROOT
from threadpoolctl import threadpool_limits

from matsearch import Collection, Plan

# plan: (queries for cold start and warm, queries each cold); the float funnel scans every item
PLANS = {"h@b64:1000>d128:100>d384": (200, 50), "d32:2000>d64:300>d384": (20, 10)}
_PAGE = 4096
DISK = {"nesting": [128, 256, 384], "on_disk": True}  # --on-disk: the store's layout and reads


def evict(folder: Path) -> None:
    """Drop the collection's vectors from the page cache, this process's mapped pages too."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prefix = str((folder / "vectors").resolve()) + "/"
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(prefix):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if libc.madvise(start, end - start, mmap.MADV_DONTNEED):
                raise OSError(ctypes.get_errno(), f"madvise failed on {fields[5]}")
    for path in (folder / "vectors").iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_bytes(folder: Path) -> int:
    """Bytes of vectors/ in the page cache (mincore over a fresh map of each file)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    total = 0
    for path in (folder / "vectors").iterdir():
        size = path.stat().st_size
        if not size:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mapped:
            pages = np.zeros((size + _PAGE - 1) // _PAGE, dtype=np.uint8)
            address = np.frombuffer(mapped, dtype=np.uint8).ctypes.data  # the buffer is released at once
            if libc.mincore(address, size, pages.ctypes.data):
                raise OSError(ctypes.get_errno(), f"mincore failed on {path}")
            total += int((pages & 1).sum()) * _PAGE
    return total


def disk_read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no read_bytes in /proc/self/io")


def timed(col: Collection, queries: np.ndarray, plan: str, folder: Path | None = None) -> dict:
    """Search one query at a time; `folder`: evict it before each query (outside the timing)."""
    seconds, read, candidates, left = 0.0, 0, [], 0
    for query in queries:
        if folder is not None:
            evict(folder)
            left = max(left, resident_bytes(folder))
        before = disk_read_bytes()
        start = time.perf_counter()
        result = col.search(query, k=10, plan=plan)
        seconds += time.perf_counter() - start
        read += disk_read_bytes() - before
        candidates.append(result.cost.candidates)
    out = {"queries": len(queries), "ms_per_query": seconds / len(queries) * 1e3,
           "disk_bytes_per_query": read / len(queries),
           "candidates": np.mean(np.array(candidates, dtype=float), axis=0).tolist()}
    return out if folder is None else {**out, "resident_after_eviction_max": left}


def search(folder: Path, plan: str, queries: int, each_cold: int) -> dict:
    """Runs in its own process, on one thread: warm-up, cold start, each query cold, warm."""
    faiss.omp_set_num_threads(1)  # on a loaded 2-core VM, faiss's OpenMP threads made warm queries 13× slower
    with threadpool_limits(1):
        return _search(folder, plan, queries, each_cold)


def _search(folder: Path, plan: str, queries: int, each_cold: int) -> dict:
    raw = np.load(PKGSUM / "queries.minilm.f16.npy")[: queries + 1].astype(np.float32)
    col = Collection.open(folder)
    col.search(raw[-1], k=10, plan=plan)  # imports, first calls; its rows are evicted below
    evict(folder)
    left = resident_bytes(folder)
    cold = {**timed(col, raw[:queries], plan), "resident_after_eviction": left}
    each = timed(col, raw[:each_cold], plan, folder)
    timed(col, raw[:queries], plan)
    warm = min((timed(col, raw[:queries], plan) for _ in range(3)), key=lambda run: run["ms_per_query"])
    return {"items": col._store.count, "nesting": list(col._store.nesting), "cold_start": cold,
            "each_query_cold": each, "warm": warm}


def expected_bytes(plan: str, nesting: list[int], items: int, candidates: list[float]) -> dict:
    """Bytes per query the plan's stages read from the store: the values (cost model) and the 4 KiB
    page floor (distinct pages of each file read, rows uniformly random)."""
    bounds = list(zip([0] + nesting[:-1], nesting))
    values = floor = 0.0
    done = 0
    for n, (stage, rows) in enumerate(zip(Plan.parse(plan).stages, candidates)):
        if stage.index == "h":  # codes in RAM; the next stage reads its dims afresh
            done = 0
            continue
        values += rows * (stage.dim - done + 1) * 4
        for lo, hi in bounds:
            if lo < stage.dim and hi > done:
                pages = -(-items * (hi - lo) * 4 // _PAGE)
                floor += _distinct(rows, pages) * _PAGE
        if n == 1:  # its rows' norms (a scan's norm column is copied into RAM once; later stages' rows are
            floor += _distinct(rows, -(-items * len(nesting) * 4 // _PAGE)) * _PAGE  # among these, same pages)
        done = stage.dim
    return {"values": values, "page_floor": floor}


def _distinct(rows: float, pages: int) -> float:
    """Expected distinct pages `rows` uniformly random rows fall in."""
    return float(pages * -np.expm1(rows * np.log1p(-1 / pages)))


def table(runs: dict) -> str:
    mb = 1 << 20
    lines = ["| items | plan | code | warm ms/query | cold-start ms/query | cold-start MiB/query | "
             "each-cold ms/query | each-cold MiB/query | expected MiB/query (values) | page floor MiB/query | "
             "each-cold ÷ values | each-cold ÷ floor |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs.values(), key=lambda r: (r["items"], r["plan"], r["label"] != "before", r["label"])):
        s, e = run["search"], run["expected"]
        each, cold = s["each_query_cold"], s["cold_start"]
        lines.append(f"| {run['items']:,} | `{run['plan']}` | {run['label']} | {s['warm']['ms_per_query']:.2f} | "
                     f"{cold['ms_per_query']:.1f} | {cold['disk_bytes_per_query'] / mb:,.2f} | "
                     f"{each['ms_per_query']:.1f} | {each['disk_bytes_per_query'] / mb:,.2f} | "
                     f"{e['values'] / mb:,.2f} | {e['page_floor'] / mb:,.2f} | "
                     f"{each['disk_bytes_per_query'] / e['values']:,.1f} | "
                     f"{each['disk_bytes_per_query'] / e['page_floor']:,.2f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/matsearch-scale"))
    parser.add_argument("--recipe", default="bin64")
    parser.add_argument("--plans", nargs="+", default=list(PLANS))
    parser.add_argument("--label", default="after", help="names the code measured, e.g. before/after")
    parser.add_argument("--each-cold", type=int, help="queries for the each-query-cold pass (default per plan)")
    parser.add_argument("--on-disk", action="store_true", help="a store made to live on disk (see above)")
    parser.add_argument("--search-only", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.search_only:
        folder, plan, queries, each_cold = args.search_only
        print(json.dumps(search(Path(folder), plan, int(queries), int(each_cold))))
        return
    out = ROOT / "benchmarks" / "results" / "cold.json"
    runs = json.loads(out.read_text()) if out.exists() else {}
    for items in args.items:
        folder = args.folder / (f"{items}-disk" if args.on_disk else f"{items}")
        if not (folder / "manifest.json").exists():
            build(folder, items, args.recipe, **(DISK if args.on_disk else {}))
        for plan in args.plans:
            queries, each_cold = PLANS.get(plan, (20, 10))
            found = subprocess.run([sys.executable, __file__, "--search-only", str(folder), plan, str(queries),
                                    str(args.each_cold or each_cold)], check=True, capture_output=True, text=True)
            result = json.loads(found.stdout.strip().splitlines()[-1])
            expected = expected_bytes(plan, result["nesting"], items, result["each_query_cold"]["candidates"])
            runs[f"{items} {plan} {args.label}"] = {"items": items, "plan": plan, "label": args.label,
                                                    "recipe": args.recipe, "search": result, "expected": expected}
            out.write_text(json.dumps(runs, indent=2))
            print(json.dumps(runs[f"{items} {plan} {args.label}"], indent=1), flush=True)
    out.with_suffix(".md").write_text(table(runs))
    print(table(runs))


if __name__ == "__main__":
    main()
