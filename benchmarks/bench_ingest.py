"""Ingest of a real corpus at scale: all 703,099 PyPI summaries as parquet, killed part-way and run again.

Writes a parquet file (to /tmp, never into ../shared) of every summary in
../shared/data/pkgsum/all_pypi_summaries.tsv.gz (`name`<TAB>`summary`): the name as id, the
summary as text, metadata (`chars`, `initial`, `bucket`) and a vector column (`embedding`,
384 float32): pkgsum's 100,000 MiniLM vectors replicated with Gaussian noise, as bench_scale
does (embedding 703k texts on 2 cores would take hours). Then runs, through the CLI,

    matsearch index FILE --collection DIR --id-field name --text-field summary \\
        --metadata-fields chars,initial,bucket --vector-field embedding --json

kills it with SIGKILL once `--kill-at` of the rows are committed, runs the same command again
to completion, and checks the collection: count == rows, one stored row per document, every
name once. Memory: each run's peak RSS (VmHWM, which the command writes to stderr as it exits;
for the killed run, its last sample) and, sampled every 0.1 s from /proc/PID/status, its peak
anonymous (heap) and file-backed resident memory. (getrusage's ru_maxrss of a child counts the
parent's memory at fork, so it is not used.)
Writes benchmarks/results/ingest_pkgsum.json and .md.

    nice -n 19 .venv/bin/python benchmarks/bench_ingest.py --folder /tmp/matsearch-ingest
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import PKGSUM, ROOT, load_vectors

from matsearch import Collection

SOURCE = PKGSUM / "all_pypi_summaries.tsv.gz"
# `matsearch` itself, reporting its peak resident memory on exit
MATSEARCH = ("import atexit, sys; from pathlib import Path; atexit.register(lambda: sys.stderr.write("
             "next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')) + '\\n')); "
             "from matsearch.cli import app; sys.argv[0] = 'matsearch'; app()")
_GROUP = 20_000  # rows per parquet row group (what pyarrow decodes at a time)
_NOISE = 0.02  # per dim, as bench_scale


def make_parquet(path: Path, limit: int | None = None) -> dict:
    """The summaries, their metadata and vectors as parquet, a row group at a time (bounded memory here too)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus, _ = load_vectors(PKGSUM)
    rng = np.random.default_rng(0)
    schema = pa.schema([("name", pa.string()), ("summary", pa.string()), ("chars", pa.int32()),
                        ("initial", pa.string()), ("bucket", pa.int32()),
                        ("embedding", pa.list_(pa.float32(), corpus.shape[1]))])
    start, rows = time.perf_counter(), 0
    with gzip.open(SOURCE, "rt", encoding="utf-8") as f, pq.ParquetWriter(path, schema) as out:
        while True:
            take = _GROUP if limit is None else min(_GROUP, limit - rows)
            lines = [line.rstrip("\n").split("\t", 1) for _, line in zip(range(take), f)]
            if not lines:
                break
            names, summaries = [n for n, _ in lines], [s for _, s in lines]
            index = np.arange(rows, rows + len(lines))
            vectors = corpus[index % len(corpus)] + _NOISE * rng.standard_normal((len(lines), corpus.shape[1]),
                                                                                 dtype=np.float32)
            out.write_table(pa.table({
                "name": names, "summary": summaries, "chars": [len(s) for s in summaries],
                "initial": [n[:1].lower() for n in names], "bucket": (index % 100).astype(np.int32),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), corpus.shape[1]),
            }, schema=schema))
            rows += len(lines)
    return {"rows": rows, "file_bytes": path.stat().st_size, "seconds": time.perf_counter() - start}


class Watch:
    """Samples a process's resident memory from /proc until it exits."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in text.splitlines():
                key, _, value = line.partition(":")
                if key in self.peak and value.strip():
                    self.peak[key] = max(self.peak[key], int(value.split()[0]) * 1024)
            time.sleep(0.1)

    def join(self) -> dict:
        self._thread.join(timeout=1)
        return self.peak


def committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM docs").fetchone()[0]
    except sqlite3.Error:
        return 0


def run(command: list, kill_at: int | None = None, db: Path | None = None) -> dict:
    """Run `command`; with `kill_at`, SIGKILL it once that many rows are committed. Its peak memory and time."""
    start = time.perf_counter()
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(command, stdout=out, stderr=err, text=True)
    watch, rows = Watch(proc.pid), None
    if kill_at is not None:
        while proc.poll() is None:
            rows = committed(db)
            if rows >= kill_at:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.2)
    _, status, _ = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0), err.seek(0)
    out, err = out.read(), err.read()
    sampled = watch.join()
    reported = [int(line.split()[1]) * 1024 for line in err.splitlines() if line.startswith("VmHWM")]
    result = {"returncode": proc.returncode, "wall_seconds": seconds,
              "peak_rss_bytes": reported[0] if reported else sampled["VmHWM"], "sampled_peak": sampled}
    if kill_at is not None:
        result["committed_at_kill"] = rows
    if proc.returncode == 0:
        result["summary"] = json.loads(out)
    elif proc.returncode != -signal.SIGKILL:
        raise SystemExit(f"the ingest failed ({proc.returncode}): {err}")
    return result


def verify(path: Path, parquet: Path) -> dict:
    """count == rows, one stored row per document, every name exactly once, a record read back whole."""
    import pyarrow.parquet as pq

    names = pq.read_table(parquet, columns=["name"]).column("name").to_pylist()
    with Collection.open(path) as col:
        info = col.info()
        stored = col._ids.lookup(np.arange(info["stored_rows"])).tolist()
        record = col.get([names[min(123_456, len(names) - 1)]])[0]
    return {"rows": len(names), "count": info["count"], "stored_rows": info["stored_rows"],
            "deleted": info["deleted"], "unique_ids": len(set(stored)), "ids_match": sorted(stored) == sorted(names),
            "record_123456": {"id": record.id, "metadata": record.metadata, "text": record.text}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/matsearch-ingest"))
    parser.add_argument("--kill-at", type=float, default=0.4, help="share of rows committed when the first run is killed")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--rows", type=int, help="only the first ROWS summaries (a trial run)")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    parquet = args.folder / f"pypi_summaries{'' if args.rows is None else f'.{args.rows}'}.parquet"
    path = args.folder / "col"
    made = make_parquet(parquet, args.rows) if not parquet.exists() else {"file_bytes": parquet.stat().st_size}
    print("parquet:", json.dumps(made), flush=True)
    shutil.rmtree(path, ignore_errors=True)
    command = [sys.executable, "-c", MATSEARCH, "index", str(parquet), "--collection", str(path), "--id-field", "name",
               "--text-field", "summary", "--metadata-fields", "chars,initial,bucket", "--vector-field", "embedding",
               "--batch-size", str(args.batch_size), "--json"]
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(parquet).metadata.num_rows
    killed = run(command, kill_at=int(args.kill_at * rows), db=path / "docs.sqlite")
    print("killed run:", json.dumps(killed), flush=True)
    rerun = run(command)
    print("rerun:", json.dumps(rerun), flush=True)
    checked = verify(path, parquet)
    print("verify:", json.dumps(checked), flush=True)
    results = {"parquet": made, "rows": rows, "batch_size": args.batch_size, "command": command[3:],
               "killed": killed, "rerun": rerun, "verify": checked, "cpus": os.cpu_count()}
    out = ROOT / "benchmarks" / "results" / f"ingest_pkgsum{'' if args.rows is None else '_trial'}.json"
    out.write_text(json.dumps(results, indent=2))
    mb, s = 1 << 20, rerun["summary"]
    lines = ["| run | rows committed | wall s | ingest rows/s | peak RSS | peak RssAnon | peak RssFile |",
             "|---|---|---|---|---|---|---|"]
    k = killed
    lines.append(f"| killed at {k['committed_at_kill']:,} rows | {k['committed_at_kill']:,} | {k['wall_seconds']:.1f} | "
                 f"{k['committed_at_kill'] / k['wall_seconds']:,.0f} (incl. start-up) | {k['peak_rss_bytes'] / mb:,.0f} MB | "
                 f"{k['sampled_peak']['RssAnon'] / mb:,.0f} MB | {k['sampled_peak']['RssFile'] / mb:,.0f} MB |")
    lines.append(f"| same command again | +{s['added']:,} ({s['skipped']:,} skipped) | {rerun['wall_seconds']:.1f} | "
                 f"{s['rows'] / s['seconds']:,.0f} read, {s['added'] / s['seconds']:,.0f} added | "
                 f"{rerun['peak_rss_bytes'] / mb:,.0f} MB | {rerun['sampled_peak']['RssAnon'] / mb:,.0f} MB | "
                 f"{rerun['sampled_peak']['RssFile'] / mb:,.0f} MB |")
    lines.append("")
    lines.append(f"After the rerun: count {checked['count']:,} of {checked['rows']:,} rows, {checked['stored_rows']:,} "
                 f"stored rows, {checked['unique_ids']:,} distinct ids, ids match the file: {checked['ids_match']}; "
                 f"parquet file {made['file_bytes'] / mb:,.0f} MB (vectors alone {rows * 384 * 4 / mb:,.0f} MB).")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
