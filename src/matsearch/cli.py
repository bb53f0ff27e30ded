"""The `matsearch` command: a thin layer that parses arguments and formats library output."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .collection import Collection
from .collection.check import check_collection
from .collection.ingest import ingest
from .collection.passages import Chunker
from .data import load_beir, read_corpus_jsonl
from .data.sources import Fields, open_source
from .encoder import DEFAULT_MODEL, RUNTIME_ENV, RUNTIMES, Encoder
from .errors import InvalidInputError, MatsearchError
from .eval import evaluate

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Elastic, adaptive semantic search.")
out = Console()
err = Console(stderr=True)

PLAN_HELP = ("Plan, e.g. 'd32:400>d384', or with an index 'p16@d64:400>d384' (IVF; 'p16c32@…' probes with "
             "its 32-d centroids), 'g64@d96:100>d384' (graph), 'q@d128:200>d384' (PQ), "
             "'h@b128:1000>d128:100>d384' (binary codes) "
             "(default: exact search at full dims).")
MODE_HELP = ("dense (the plan over the vectors), lexical (BM25 over the texts) or hybrid (both, fused); "
             "default: hybrid when the collection holds text, else dense.")
RUNTIME_HELP = (f"What runs the encoder on texts: {', '.join(RUNTIMES)} (default: ${RUNTIME_ENV}, else "
                "onnx-int8 on a CPU with VNNI, else onnx; the ONNX ones are exported once and cached).")
TARGET_HELP = ("Mean recall@k to reach (against exact search), instead of a plan: the cheapest calibrated plan "
               "reaching it serves (run 'matsearch tune' first).")
FILTER_HELP = escape("Metadata filter, JSON: e.g. '{\"year\": {\"$gte\": 2020}, \"lang\": {\"$in\": [\"en\", \"de\"]}}' "
               "($eq $ne $gt $gte $lt $lte $in $nin $exists $and $or $not; a bare value means $eq).")
FUSION_HELP = ("How hybrid fuses its lists: 'rrf:k60:n100' (reciprocal-rank fusion, k=60, top 100 of each; "
               "the default) or 'weighted:w0.5:n100' (normalised scores, dense weight 0.5).")
RECIPE_HELP = escape("Recipe: 'flat', 'ivf<lists>@d<dc>[+d<dc>…]:d<ds>[/f16|/int8|/pq<bytes>]', "
                     "'hnsw<M>@[d<build>:]d<dim>[/f16|/int8]', '[o]pq<bytes>@d<dim>', 'bin<bits>[/itq|/sign][+ivf<lists>@d<dc>][+int8|+f16@d<dim>]', "
                     "or several joined by commas "
                     "(e.g. 'hnsw32@d192/int8').")


def _cli_errors(command):
    """Turn expected failures into one readable line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (MatsearchError, OSError) as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


def _emit_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _dims(text: Optional[str], option: str = "--dims") -> Optional[list[int]]:
    """'16,32,64' → [16, 32, 64]."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInputError(f"{option} must be comma-separated integers such as 16,32,64, got {text!r}") from None


def _use_runtime(col: Collection, runtime: Optional[str]) -> None:
    """Run the collection's encoder in `runtime` (None: the default)."""
    if runtime is not None:
        col.encoder = Encoder(model=col.manifest.model, runtime=runtime)


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {what} file {path}: {exc}") from None


def _number(value) -> str:
    """Scores with 4 decimals, counts and rates with thousands separators."""
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


RAY_HELP = ("Serve a sharded collection on Ray: auto (the Ray instance running here, else a new local one), local "
            "(a new local one) or a cluster's address. Default: auto for a sharded collection.")


def _is_sharded(collection: Path, ray_address: Optional[str]) -> bool:
    """Whether the collection goes through matsearch.distributed: --ray was given, or its folder holds a sharded
    collection's manifest (checked by name, so that plain collections never import Ray)."""
    return ray_address is not None or (collection / "sharded.json").is_file()


def _open(collection: Path, ray_address: Optional[str], *, writable: bool = False):
    """The collection at `collection`: a sharded one, its shards served by Ray actors, or a plain one."""
    if not _is_sharded(collection, ray_address):
        return Collection.open(collection, writable=writable)
    from .distributed import ShardedCollection, connect

    connect(ray_address or "auto")
    return ShardedCollection.open(collection, writable=writable)


@app.command()
@_cli_errors
def index(
    source: Path = typer.Argument(..., help="A BEIR folder (corpus.jsonl inside), or a .jsonl, .csv or .tsv file "
                                  "(each optionally .gz) or a .parquet file of documents."),
    collection: Path = typer.Option(..., "--collection", "-c", help="Collection folder (created if new)."),
    id_field: Optional[str] = typer.Option(None, help="Field holding each document's id (default: _id, or id)."),
    text_field: str = typer.Option("text", help="Field holding the text to embed and store."),
    title_field: Optional[str] = typer.Option(None, help="Field embedded before the text, as title + ' ' + text "
                                              "(default: title, where the source has it)."),
    metadata_fields: Optional[str] = typer.Option(None, help="Comma-separated fields kept as metadata (default: "
                                                  "every field not named as the id, text or vector)."),
    vector_field: Optional[str] = typer.Option(None, help="Field of precomputed vectors (lists of numbers; JSON "
                                               "text in csv/tsv), instead of embedding the texts."),
    vectors: Optional[Path] = typer.Option(None, help="Precomputed vectors (.npy) in corpus order."),
    model: Optional[str] = typer.Option(None, help=f"sentence-transformers model name or path (default: {DEFAULT_MODEL})."),
    metric: Optional[str] = typer.Option(None, help="cosine (default), ip (inner product) or l2 (Euclidean; scores "
                                                    "are minus the squared distance); new collections only."),
    transform: Optional[str] = typer.Option(None, help="pca (default: elastic prefixes), adapter (PCA refined by a "
                                            "learned rotation: better short prefixes, slower to fit), general (a "
                                            "rotation shipped for MiniLM, own PCA where that does better; fits a "
                                            "first batch of any size) or none; "
                                            "new collections only (fitted on the first batch)."),
    recipe: Optional[str] = typer.Option(None, help=f"Indexes to build after adding. {RECIPE_HELP}"),
    nesting: Optional[str] = typer.Option(None, help="A new collection's prefix dims, comma-separated, the last "
                                          "being the full dim (default: 32,64,128,256 and the dim)."),
    on_disk: bool = typer.Option(False, "--on-disk", help="A new collection whose store need not fit in RAM: "
                                 "re-ranks read their rows with direct I/O (use with --nesting 128,256,DIM)."),
    upsert: bool = typer.Option(False, "--upsert", help="Replace documents whose id is already in the collection "
                                "(vector, text and metadata), instead of skipping them."),
    batch_size: int = typer.Option(10_000, help="Rows read, embedded and committed at a time."),
    chunk_tokens: Optional[int] = typer.Option(None, help="Split each text into passages of at most this many "
                                               "tokens of the model's tokenizer, stored as <id>#<n> with the "
                                               "parent id in their metadata."),
    chunk_overlap: int = typer.Option(0, help="Tokens consecutive passages share (with --chunk-tokens)."),
    encoder_runtime: Optional[str] = typer.Option(None, help=RUNTIME_HELP),
    shards: Optional[int] = typer.Option(None, help="A new sharded collection of this many shards (by id hash), "
                                         "each served by a Ray actor; the batches are written to the shards in "
                                         "parallel and texts embedded by Ray Data."),
    replicas: Optional[int] = typer.Option(None, help="Actors serving each shard of a sharded collection (default: "
                                           "1 for a new one, else as it was made)."),
    ray_address: Optional[str] = typer.Option(None, "--ray", help=RAY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
):
    """Add every document of SOURCE to a collection, a batch at a time, embedding them unless vectors are given.

    Ids already in the collection are skipped (or replaced, with --upsert), so running the same command again
    after a crash or a bad row resumes where the committed batches end.
    """
    start = time.perf_counter()
    fields = Fields(id=id_field, text=text_field, title=title_field, vector=vector_field,
                    metadata=None if metadata_fields is None else
                    tuple(f.strip() for f in metadata_fields.split(",") if f.strip()))
    docs = open_source(source / "corpus.jsonl" if source.is_dir() else source, fields)
    array = None
    if vectors is not None:
        try:
            array = np.load(vectors, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read vectors file {vectors}: {exc}") from None
        if len(array) != docs.rows:
            raise InvalidInputError(f"vectors file {vectors} has {len(array)} rows, the corpus has {docs.rows} "
                                    "documents")
    if chunk_tokens is None and chunk_overlap:
        raise InvalidInputError("--chunk-overlap needs --chunk-tokens")
    if shards is not None or _is_sharded(collection, ray_address):
        report, summary = _index_sharded(collection, docs, array, shards=shards, replicas=replicas,
                                         ray_address=ray_address, model=model, metric=metric, transform=transform,
                                         nesting=_dims(nesting, "--nesting"), on_disk=on_disk, upsert=upsert,
                                         batch_size=batch_size, recipe=recipe, as_json=as_json,
                                         unsupported={"--chunk-tokens": chunk_tokens,
                                                      "--encoder-runtime": encoder_runtime})
    else:
        report, summary = _index_one(collection, docs, array, model=model, metric=metric, transform=transform,
                                     nesting=_dims(nesting, "--nesting"), on_disk=on_disk, upsert=upsert,
                                     batch_size=batch_size, recipe=recipe, as_json=as_json, chunk_tokens=chunk_tokens,
                                     chunk_overlap=chunk_overlap, encoder_runtime=encoder_runtime)
    summary["seconds"] = time.perf_counter() - start
    if as_json:
        _emit_json(summary)
    else:
        skipped = f"{report.skipped} already there, " if report.skipped else ""
        out.print(f"indexed {report.added} items from {report.rows} documents into {collection} "
                  f"({skipped}{f'{report.replaced} replaced, ' if report.replaced else ''}{summary['count']} in "
                  f"all, {summary['dim']} dims) in {summary['seconds']:.1f}s")


def _index_one(collection: Path, docs, array, *, model, metric, transform, nesting, on_disk, upsert, batch_size,
               recipe, as_json, chunk_tokens, chunk_overlap, encoder_runtime):
    """`index` into a plain collection: (the ingest's report, the summary)."""
    if (collection / "manifest.json").exists():
        col = Collection.open(collection, writable=True)
        given = {"model": model, "metric": metric, "transform": transform, "on_disk": on_disk or None,
                 "nesting": nesting}
        for name, value in given.items():
            if value is not None and value != getattr(col.manifest, name):
                col.close()
                raise InvalidInputError(
                    f"collection {collection} has {name} {getattr(col.manifest, name)!r}, not {value!r}"
                )
    else:
        col = Collection.create(collection, model=model or DEFAULT_MODEL, metric=metric or "cosine",
                                transform=transform or "pca", nesting=nesting, on_disk=on_disk)
    with col:
        _use_runtime(col, encoder_runtime)
        chunker = None if chunk_tokens is None else Chunker(encoder=col.encoder, tokens=chunk_tokens,
                                                            overlap=chunk_overlap)
        report = ingest(col, docs, batch_size=batch_size, upsert=upsert, vectors=array, chunker=chunker,
                        progress=not as_json)
        if recipe is not None:
            col.build(recipe, progress=not as_json)
        return report, _index_summary(collection, col, report)


def _index_sharded(collection: Path, docs, array, *, shards, replicas, ray_address, model, metric, transform,
                   nesting, on_disk, upsert, batch_size, recipe, as_json, unsupported):
    """`index` into a sharded collection on Ray (made with `shards` shards when new): (the report, the summary)."""
    from .distributed import ShardedCollection, connect
    from .distributed.ingest import ingest as ingest_sharded

    given = [option for option, value in unsupported.items() if value is not None]
    if given:
        raise InvalidInputError(f"{', '.join(given)} cannot be used with a sharded collection")
    connect(ray_address or "auto")
    if (collection / "sharded.json").exists():
        col = ShardedCollection.open(collection, writable=True, replicas=replicas)
        settings = {"shards": shards, "model": model, "metric": metric, "transform": transform,
                    "on_disk": on_disk or None, "nesting": nesting}
        for name, value in settings.items():
            if value is not None and value != getattr(col.manifest, name):
                col.close()
                raise InvalidInputError(f"collection {collection} has {name} {getattr(col.manifest, name)!r}, "
                                        f"not {value!r}")
    elif shards is None:
        raise InvalidInputError(f"no sharded collection at {collection}: give --shards to make one")
    else:
        col = ShardedCollection.create(collection, shards=shards, replicas=replicas or 1, model=model or DEFAULT_MODEL,
                                       metric=metric or "cosine", transform=transform or "pca", nesting=nesting,
                                       on_disk=on_disk)
    with col:
        report = ingest_sharded(col, docs, batch_size=batch_size, upsert=upsert, vectors=array,
                                progress=not as_json)
        if recipe is not None:
            col.build(recipe, progress=not as_json)
        return report, {**_index_summary(collection, col, report), "shards": col.shards}


def _index_summary(collection: Path, col, report) -> dict:
    return {"collection": str(collection), "added": report.added, "replaced": report.replaced,
            "skipped": report.skipped, "rows": report.rows, "count": len(col), "dim": col.dim,
            "recipe": col.manifest.recipe}


@app.command()
@_cli_errors
def build(
    collection: Path = typer.Argument(..., help="Collection folder."),
    recipe: Optional[str] = typer.Option(None, help=RECIPE_HELP + " Default: repair what `matsearch check` "
                                         "finds damaged and rebuild the collection's own recipe (a sharded "
                                         "collection: rebuild its recipe, trained again on a sample of every shard)."),
    ray_address: Optional[str] = typer.Option(None, "--ray", help=RAY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
):
    """Build (or rebuild, after the data drifted or a derived file was damaged) a collection's indexes."""
    start = time.perf_counter()
    with _open(collection, ray_address, writable=True) as col:
        repairable = recipe is None and not _is_sharded(collection, ray_address)
        repaired = col.repair(progress=not as_json) if repairable else []
        rebuilt_indexes = any(f.startswith(str(col.path / col.manifest.indexes)) for f in repaired)
        built = col.manifest.recipe if rebuilt_indexes else col.build(recipe or col.manifest.recipe,
                                                                      progress=not as_json)
        info = col.info()
    summary = {"collection": str(collection), "recipe": str(built), "count": info["count"],
               "index_bytes_per_vector": info["index_bytes_per_vector"], "repaired": repaired,
               "seconds": time.perf_counter() - start}
    if as_json:
        _emit_json(summary)
    else:
        for file in repaired:
            out.print(f"rebuilt {file}")
        out.print(f"built {built} over {summary['count']} items in {summary['seconds']:.1f}s "
                  f"({summary['index_bytes_per_vector']:,.0f} bytes per vector in memory)")


@app.command()
@_cli_errors
def compact(
    collection: Path = typer.Argument(..., help="Collection folder."),
    ray_address: Optional[str] = typer.Option(None, "--ray", help=RAY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
):
    """Rewrite the store and indexes without deleted items (crash-safe; readers keep searching; every shard of a
    sharded collection, in parallel)."""
    sharded = _is_sharded(collection, ray_address)
    with _open(collection, ray_address, writable=True) as col:
        summary = {"collection": str(collection), **(col.compact() if sharded else col.compact(progress=not as_json))}
    if as_json:
        _emit_json(summary)
    else:
        out.print(f"removed {summary['removed']:,} deleted rows, kept {summary['count']:,} "
                  f"in {summary['seconds']:.1f}s")


@app.command()
@_cli_errors
def check(
    collection: Path = typer.Argument(..., help="Collection folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the problems as JSON."),
):
    """Verify a collection's files (store checksums, ids, indexes, transform, SQLite); exit 1 if any is damaged."""
    problems = check_collection(collection)
    if as_json:
        _emit_json({"collection": str(collection), "ok": not problems,
                    "problems": [{"file": p.file, "problem": p.problem, "derived": p.derived} for p in problems]})
    else:
        for problem in problems:
            out.print(escape(str(problem)), soft_wrap=True, highlight=False)
        if not problems:
            out.print(f"{collection}: ok")
    if problems:
        raise typer.Exit(1)


@app.command()
@_cli_errors
def search(
    collection: Path = typer.Argument(..., help="Collection folder."),
    query: str = typer.Argument(..., help="Query text."),
    k: int = typer.Option(10, "-k", help="Results to return."),
    plan: Optional[str] = typer.Option(None, help=PLAN_HELP),
    mode: Optional[str] = typer.Option(None, help=MODE_HELP),
    fusion: Optional[str] = typer.Option(None, help=FUSION_HELP),
    target_recall: Optional[float] = typer.Option(None, help=TARGET_HELP),
    max_ms: Optional[float] = typer.Option(None, help="Latency budget (ms) for 95% of queries, instead of a plan "
                                                     "(a calibrated collection)."),
    max_cost: Optional[float] = typer.Option(None, help="Multiply-adds per query at most, instead of a plan "
                                                        "(a calibrated collection)."),
    filter_: Optional[str] = typer.Option(None, "--filter", help=FILTER_HELP),
    parents: bool = typer.Option(False, "--parents", help="For a collection of passages (--chunk-tokens): each "
                                                          "document once, ranked by its best passage."),
    encoder_runtime: Optional[str] = typer.Option(None, help=RUNTIME_HELP),
    encoder: str = typer.Option("auto", help="The sub-model that embeds the query: full, fast (the default "
                                             "model's student, about 2x quicker; see README, Query encoding speed) "
                                             "or auto (full, unless --max-ms fits only with fast)."),
    ray_address: Optional[str] = typer.Option(None, "--ray", help=RAY_HELP),
    partial: bool = typer.Option(False, "--partial", help="A sharded collection: if a shard does not answer, show "
                                 "the other shards' results, flagged partial, instead of an error naming it."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
):
    """Search a collection with a text query."""
    if not query.strip():
        raise InvalidInputError("query text is empty")
    sharded = _is_sharded(collection, ray_address)
    if sharded and (fusion is not None or parents or encoder not in ("auto", "full")):
        raise InvalidInputError("a sharded collection searches dense only with the full encoder: --fusion, --parents "
                                "and --encoder do not apply")
    if partial and not sharded:
        raise InvalidInputError("--partial is for sharded collections, whose shards may fail to answer")
    with _open(collection, ray_address) as col:
        _use_runtime(col, encoder_runtime)
        extra = {"partial": partial} if sharded else {"fusion": fusion, "parents": parents, "encoder": encoder}
        result = col.search(query, k=k, plan=plan, mode=mode, target_recall=target_recall, max_ms=max_ms,
                            max_cost=max_cost, filter=filter_, **extra)
        shown = result.ids[0] if result.passages is None else result.passages[0]  # by parent: its best passage
        ids = [i for i in shown if i is not None]  # a lexical search may match fewer than k
        records = col.get(ids) if ids else []
    hits = [
        {"rank": n, "id": r.id, "score": float(s), "text": r.text, "metadata": r.metadata}
        | ({} if result.passages is None else {"id": parent, "passage": r.id})
        for n, (r, s, parent) in enumerate(zip(records, result.scores[0], result.ids[0]), start=1)
    ]
    shards = {"shards": result.shards, "missing_shards": list(result.missing),
              "overhead_ms": result.overhead_seconds * 1e3} if sharded else {}
    if as_json:
        _emit_json({"query": query, "mode": result.mode, "plan": result.plan, "target": result.target, "k": k,
                    **({"encoder": "fast"} if getattr(result, "encoder", "full") == "fast" else {}),  # asked, or auto
                    "results": hits,
                    "cost": result.cost.per_query(), **shards})
        return
    table = Table(title=escape(f"{query!r}  {result.mode}, plan {result.plan}"))
    for column in ("rank", "id", "score", "text"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        text = (hit["text"] or "")[:120]
        table.add_row(str(hit["rank"]), escape(hit["id"]), f"{hit['score']:.4f}", escape(text))
    out.print(table)
    c = result.cost
    probed = f"{c.lists_probed:,} lists probed, " if c.lists_probed else ""
    out.print(f"{c.multiply_adds:,} multiply-adds, {c.bytes_read:,} bytes, {probed}{c.items_scanned:,} items scanned, "
              f"candidates {c.candidates}, {c.seconds * 1e3:.2f} ms")
    if sharded:
        missing = f"; PARTIAL: shards {', '.join(map(str, result.missing))} did not answer" if result.missing else ""
        out.print(f"over {result.shards} shards, {shards['overhead_ms']:.2f} ms of it Ray's calls and the merge"
                  + missing)


@app.command(name="eval")
@_cli_errors
def eval_(
    collection: Path = typer.Argument(..., help="Collection folder."),
    beir: Path = typer.Option(..., help="BEIR folder with queries.jsonl and qrels/."),
    query_vectors: Optional[Path] = typer.Option(None, help="Precomputed query vectors (.npy), queries.jsonl order."),
    plan: Optional[str] = typer.Option(None, help=PLAN_HELP),
    mode: str = typer.Option("dense", help="dense (the plan; the default), lexical (BM25) or hybrid (both, fused)."),
    fusion: Optional[str] = typer.Option(None, help=FUSION_HELP),
    target_recall: Optional[float] = typer.Option(None, help=TARGET_HELP),
    filter_: Optional[str] = typer.Option(None, "--filter", help=FILTER_HELP + " Exact search is filtered too."),
    split: str = typer.Option("test", help="qrels split to score against."),
    encoder_runtime: Optional[str] = typer.Option(None, help=RUNTIME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
):
    """Score a collection's rankings against BEIR relevance judgements; time the search."""
    dataset = load_beir(beir, split=split)
    with Collection.open(collection) as col:
        _use_runtime(col, encoder_runtime)
        vectors = None if query_vectors is None else _load_npy(query_vectors, "query vectors")
        metrics = evaluate(col, dataset, plan=plan, query_vectors=vectors, mode=mode, fusion=fusion,
                           target_recall=target_recall, filter=filter_, progress=not as_json)
    if as_json:
        _emit_json(metrics)
        return
    table = Table(title=f"{beir}  {metrics['mode']}, plan {metrics['plan']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if key not in ("mode", "plan", "target_recall") and value is not None:
            table.add_row(key, _number(value))
    out.print(table)


@app.command()
@_cli_errors
def tune(
    collection: Path = typer.Argument(..., help="Collection folder."),
    queries: Optional[Path] = typer.Option(None, help="Calibration queries: raw query vectors (.npy) or a queries "
                                                      "file (.jsonl with 'text', or a BEIR queries.jsonl); default: "
                                                      "pseudo-queries drawn from the collection."),
    sample: int = typer.Option(1000, help="Pseudo-queries to draw (without --queries)."),
    pseudo: str = typer.Option("auto", help="Pseudo-queries (without --queries): spans (short spans of the items' "
                                            "texts, embedded), noise (stored vectors moved by noise), or auto "
                                            "(spans where an item has text, noise elsewhere)."),
    k: int = typer.Option(10, "-k", help="Calibrate recall@k for this k."),
    timed: int = typer.Option(200, help="Queries timed one at a time per setting."),
    plot: Optional[Path] = typer.Option(None, help="Write the recall/latency frontier as a PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the calibration as JSON."),
):
    """Measure every setting of the collection's indexes and save the frontier that targets choose from."""
    with Collection.open(collection, writable=True) as col:
        given = None
        if queries is not None:
            given = _load_npy(queries, "queries") if queries.suffix == ".npy" else read_corpus_jsonl(queries)[1]
        calibration = col.tune(given, sample=sample, k=k, timed=timed, pseudo=pseudo, progress=not as_json)
    effort = calibration.notes.get("effort", {})
    if plot is not None:
        from .tuning.plot import plot_frontier, plot_policy_effort

        plot_frontier(calibration, plot)
        if "0.95" in effort:
            plot_policy_effort(calibration, plot.with_name(f"{plot.stem}.effort{plot.suffix or '.png'}"))
    summary = {target: {"plans": e["plans"], **{what: _spread(e[what]) for what in ("multiply_adds", "lists_probed")}}
               for target, e in effort.items()}
    if as_json:
        _emit_json({"queries": calibration.queries, "k": calibration.k, "rows": calibration.rows,
                    "top1_floor": calibration.top1_floor, "encoder_ms": calibration.encoder_ms,
                    "points": [vars(p) for p in calibration.points],
                    "frontier": [p.plan for p in calibration.frontier()],
                    "chosen": {str(t): calibration.choose(target_recall=t).plan for t in (0.8, 0.9, 0.95, 0.99)
                               if max(p.recall for p in calibration.points) >= t},
                    "effort": summary})
        return
    table = Table(title=f"{collection}: the frontier ({calibration.queries})")
    for column in ("plan", f"recall@{calibration.k}", "worst 10%", "ms", "ms p95", "multiply-adds"):
        table.add_column(column, justify="left" if column == "plan" else "right")
    for p in calibration.frontier():
        table.add_row(p.plan, f"{p.recall:.4f}", f"{p.tail_recall:.3f}", f"{p.ms:.3f}", f"{p.ms_p95:.3f}",
                      f"{p.multiply_adds:,.0f}")
    out.print(table)
    table = Table(title="targets: the plans serving each (queries each takes) and the effort per calibration query")
    for column in ("target", "plans", "multiply-adds p10 / p50 / p90", "lists probed p10 / p50 / p90"):
        table.add_column(column, justify="left" if column == "plans" else "right")
    for target, s in summary.items():
        table.add_row(target, ", ".join(f"{plan} ({n})" for plan, n in s["plans"].items()),
                      " / ".join(f"{v:,.0f}" for v in s["multiply_adds"]),
                      " / ".join(f"{v:.0f}" for v in s["lists_probed"]))
    out.print(table)
    if calibration.encoder_ms:  # a text query's max_ms counts its encoder
        out.print("encoder, ms per text query (p95): " + ", ".join(f"{name} {ms:.2f}"
                                                                  for name, ms in calibration.encoder_ms.items()))


def _spread(values: list[float]) -> list[float]:
    """The 10th, 50th and 90th percentiles of per-query `values`."""
    return [float(v) for v in np.percentile(values, [10, 50, 90])] if values else []


@app.command()
@_cli_errors
def info(
    collection: Path = typer.Argument(..., help="Collection folder."),
    plan: Optional[str] = typer.Option(None, help="Plan whose resident bytes to report. " + PLAN_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray", help=RAY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
):
    """Counts, dims, and bytes per vector on disk and resident in memory (for a sharded collection: per shard too)."""
    with _open(collection, ray_address) as col:
        data = col.info(plan)
    if as_json:
        _emit_json(data)
        return
    per_shard = data.pop("per_shard", None)
    table = Table(title=str(collection))
    table.add_column("field")
    table.add_column("value", justify="right")
    for key, value in data.items():
        for name, item in (value.items() if isinstance(value, dict) else [(None, value)]):
            table.add_row(key if name is None else f"{key}: {name}", _number(item))
    out.print(table)
    if per_shard:
        _print_shards(per_shard)


def _print_shards(per_shard: list[dict]) -> None:
    table = Table(title="shards")
    columns = ("shard", "count", "deleted", "on_disk_bytes", "index_bytes_per_vector", "resident_bytes_per_vector")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for shard in per_shard:
        table.add_row(*(_number(shard.get(column, "")) for column in columns))
    out.print(table)



def _training_pairs(pairs: Optional[Path], split: str, eval_split: str) -> Optional[list]:
    """Pairs from a BEIR folder's qrels/<split>.tsv (never the evaluation split) or a TSV pairs file."""
    from .train.pairs import beir_pairs, read_pairs

    if pairs is None:
        return None
    return beir_pairs(pairs, split, evaluation_split=eval_split) if pairs.is_dir() else read_pairs(pairs)


PAIRS_HELP = ("(query, relevant document) pairs: a BEIR folder (its qrels/<--split>.tsv is read; --split corpus "
              "mines (title, body) pairs from its documents alone) or a TSV file of 'query<TAB>document text' lines.")


@app.command()
@_cli_errors
def elasticize(
    collection: Path = typer.Argument(..., help="Collection folder."),
    method: str = typer.Option("adapter", help="pca or adapter (PCA refined by a learned rotation)."),
    dims: Optional[str] = typer.Option(None, help="Prefix dims the adapter makes good "
                                       "(default: 16,32,64,… below the full dim)."),
    pairs: Optional[Path] = typer.Option(None, help="Supervise the adapter with " + PAIRS_HELP),
    split: str = typer.Option("train", help="qrels split to take pairs from when --pairs is a BEIR folder."),
    eval_split: str = typer.Option("test", help="The split you evaluate on: refused as a source of pairs."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
):
    """Re-fit a collection's transform on its own vectors; re-rotate the store and rebuild its indexes."""
    start = time.perf_counter()
    training = _training_pairs(pairs, split, eval_split)
    with Collection.open(collection, writable=True) as col:
        summary = col.elasticize(method, dims=_dims(dims), pairs=training, progress=not as_json)
    summary = {"collection": str(collection), **summary, "seconds": time.perf_counter() - start}
    if as_json:
        _emit_json(summary)
    else:
        out.print(f"{collection}: transform {summary['transform']} fitted on {summary['fitted_on']:,} vectors"
                  + (f" and {summary['pairs']:,} pairs" if summary["pairs"] else "")
                  + f" for prefixes {summary['dims']}, recipe {summary['recipe']} rebuilt, "
                  f"in {summary['seconds']:.1f}s")
        if "validation" in summary:
            _print_validation(summary["validation"])


def _print_validation(validation: dict) -> None:
    """The adapter's held-back check: per dim, PCA against the adapter, and what was kept."""
    out.print(f"validated on {validation['held_back']:,} held-back documents, {validation['criterion']}:")
    out.print("  dim     PCA  learned     kept")
    for d, pca, learned, kept in zip(validation["dims"], validation["pca"], validation["adapter"], validation["kept"]):
        out.print(f"  {d:>3}  {pca:6.3f}   {learned:6.3f}   {kept:6.3f} ({100 * (kept - pca):+.1f})")
    if validation["fell_back"]:
        out.print("the adapter did not beat PCA on held-back documents: the transform stays PCA")
    else:
        out.print(f"kept the adapter at strength {validation['strength']} (1 = as learned, 0 = PCA); improved dims "
                  + ", ".join(f"{d} (+{100 * g:.1f})" for d, g in validation["improved"].items()))


@app.command()
@_cli_errors
def report(
    collection: Path = typer.Argument(..., help="Collection folder (holding the BEIR corpus)."),
    beir: Path = typer.Option(..., help="BEIR folder with queries.jsonl (and qrels/, for nDCG@10)."),
    query_vectors: Optional[Path] = typer.Option(None, help="Precomputed query vectors (.npy), queries.jsonl order."),
    dims: Optional[str] = typer.Option(None, help="Prefix dims to score, e.g. 16,32,64 "
                                       "(default: 16,32,64,… and the full dim)."),
    split: str = typer.Option("test", help="qrels split to score against."),
    plot: Path = typer.Option(Path("elasticity.png"), help="Where to write the PNG plot."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Per prefix dim: nDCG@10 and recall@10 (vs exact full-dim) for truncation, PCA and the adapter."""
    from .eval.elasticity import elasticity_report, plot_elasticity

    dataset = load_beir(beir, split=split, require_qrels=False)
    with Collection.open(collection) as col:
        vectors = None if query_vectors is None else _load_npy(query_vectors, "query vectors")
        data = elasticity_report(col, dataset, dims=_dims(dims),
                                 query_vectors=vectors, progress=not as_json)
    plot_elasticity(data, plot)
    data["plot"] = str(plot)
    if as_json:
        _emit_json(data)
        return
    table = Table(title=f"{collection}: {data['documents']:,} documents, {data['queries']} queries")
    table.add_column("dims", justify="right")
    for method in data["methods"]:
        if data["qrels"]:
            table.add_column(f"{method} nDCG@10", justify="right")
        table.add_column(f"{method} recall@10", justify="right")
    for n, dim in enumerate(data["dims"]):
        cells = []
        for scores in data["methods"].values():
            cells += ([f"{scores['ndcg@10'][n]:.4f}"] if data["qrels"] else []) + [f"{scores['recall@10'][n]:.3f}"]
        table.add_row(str(dim), *cells)
    out.print(table)
    out.print(f"recall@10 is against exact search on all {data['dims'][-1]} dims; plot written to {plot}")


@app.command()
@_cli_errors
def finetune(
    pairs: Path = typer.Argument(..., help=PAIRS_HELP),
    output: Path = typer.Option(..., "--out", "-o", help="Folder to save the fine-tuned model to."),
    model: str = typer.Option(DEFAULT_MODEL, help="sentence-transformers model name or path to start from."),
    dims: Optional[str] = typer.Option(None, help="Matryoshka dims (default: the full dim and its halvings to 32)."),
    split: str = typer.Option("train", help="qrels split to take pairs from when PAIRS is a BEIR folder."),
    eval_split: str = typer.Option("test", help="The split you evaluate on: refused as a source of pairs."),
    epochs: float = typer.Option(1.0, help="Passes over the pairs."),
    batch_size: int = typer.Option(32, help="Pairs per step (the other pairs in a batch are the negatives)."),
    start_from: Optional[Path] = typer.Option(None, help="A collection made with this model: training starts from "
                                              "the model followed by that collection's transform (PCA or adapter); "
                                              "'general': the bundled MiniLM followed by the rotation shipped with "
                                              "matsearch (a collection folder named general: give its full path)."),
):
    """Fine-tune an encoder with sentence-transformers' MatryoshkaLoss; use it with 'index --model OUT'."""
    from .train.finetune import finetune_matryoshka

    training = _training_pairs(pairs, split, eval_split)
    rotation = None
    if start_from is not None and str(start_from) == "general":
        if model != DEFAULT_MODEL:
            raise InvalidInputError(f"the general rotation is for {DEFAULT_MODEL}, not {model!r}")
        from .transform import general_rotation

        rotation = general_rotation()
    elif start_from is not None:
        with Collection.open(start_from) as col:
            if col.manifest.model != model:
                raise InvalidInputError(f"collection {start_from} was made with model {col.manifest.model!r}, "
                                        f"not {model!r}")
            rotation = None if col.transform is None else col.transform.matrix_
    start = time.perf_counter()
    saved = finetune_matryoshka(training, output, model=model, dims=_dims(dims), epochs=epochs,
                                batch_size=batch_size, rotation=rotation, progress=True)
    transform = " --transform none" if rotation is not None else ""
    out.print(f"fine-tuned {model} on {len(training):,} pairs in {time.perf_counter() - start:.0f}s; "
              f"saved to {saved} (use: matsearch index SOURCE -c COLLECTION --model {saved}{transform})")


@app.command()
@_cli_errors
def mcp(root: Path = typer.Argument(..., help="Folder whose subfolders are collections (opened read-only).")):
    """Serve the collections under ROOT to language-model agents: an MCP server over stdio with the tools
    list_collections, search(collection, query, k, filter, target_recall) and get(collection, ids)."""
    from .service.mcp import serve

    serve(root)


@app.command()
@_cli_errors
def serve(
    root: Path = typer.Argument(..., help="Folder whose subfolders are collections (new ones are made in it)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(None, envvar="MATSEARCH_API_KEY", show_default=False,
                                          help="Key every write needs (Authorization: Bearer KEY); prefer the "
                                               "MATSEARCH_API_KEY variable, which other users cannot read in ps."),
    read_only: bool = typer.Option(False, "--read-only", help="Refuse every write; collections are opened read-only."),
    private: bool = typer.Option(False, "--private", help="Reads need the API key too."),
    cors: Optional[list[str]] = typer.Option(None, "--cors", help="A browser origin allowed to call (repeatable)."),
    workers: int = typer.Option(1, min=1, help="Server processes; more than one needs --read-only (a collection "
                                               "has one writer). Each process searches in many threads."),
):
    """Serve the collections under ROOT over HTTP: the JSON API under /v1, the search page at /, /metrics."""
    import os

    import uvicorn

    from .service.app import ENVIRONMENT, create_app

    if workers > 1 and not read_only:
        raise InvalidInputError(f"--workers {workers} needs --read-only: a collection has one writer, so a service "
                                "that writes runs one process (its searches run in parallel threads)")
    settings = {"root": str(root), "read_only": read_only, "private": private, "cors": cors or []}
    service = create_app(api_key=api_key, **settings)  # the settings are checked here, before a worker starts
    if workers == 1:
        uvicorn.run(service, host=host, port=port)
        return
    os.environ[ENVIRONMENT] = json.dumps(settings)
    if api_key is not None:
        os.environ["MATSEARCH_API_KEY"] = api_key
    uvicorn.run("matsearch.service.app:from_environment", factory=True, host=host, port=port, workers=workers)
