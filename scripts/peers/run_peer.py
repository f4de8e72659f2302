#!/usr/bin/env python3
"""Measure one embedded peer system (LanceDB, Milvus Lite or Chroma) on one dataset.

Runs in its own process so the peak RSS is this system's alone (plus the dataset held in
memory, recorded separately as baseline_rss_bytes). Steps: load the dataset; ingest every
document with its given vector (and text and sparse vector where the system takes them);
build the indexes; time k=10 queries one at a time on one thread after warm-up (dense,
full-text, the system's own hybrid); close; measure the bytes on disk; write RESULT.json in
the schema that scripts/peers/report.py reads (see scripts/peers/README.md).
"""
import argparse
import gc
import json
import os
import resource
import shutil
import sys
import time
import warnings

import numpy as np

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exact import exact_topk  # noqa: E402

K = 10
WARMUP = 20
# Some peers log deprecation warnings from Rust on every query; keep them off the output.
os.environ.setdefault("LANCEDB_LOG", "error")
os.environ.setdefault("RUST_LOG", "error")
# milvus-lite 2.5 imports the deprecated pkg_resources module.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


def rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def sparse_batches(path, batch):
    """Yield lists of {index: value} dicts, `batch` documents at a time."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            out.append(dict(zip(s["indices"], s["values"])))
            if len(out) == batch:
                yield out
                out = []
    if out:
        yield out


class Dataset:
    def __init__(self, data_dir, exact_path):
        try:
            with open(os.path.join(data_dir, "dataset.json"), encoding="utf-8") as f:
                self.name = json.load(f).get("name")
        except FileNotFoundError:
            self.name = None
        self.name = self.name or os.path.basename(os.path.normpath(data_dir))
        corpus = read_jsonl(os.path.join(data_dir, "corpus.jsonl"))
        self.ids = [d["id"] for d in corpus]
        # Every system indexes the same text: title + newline + body, as the vectors were made.
        self.texts = [f'{d["title"]}\n{d["text"]}' for d in corpus]
        self.raw_text_bytes = sum(len(d["title"].encode()) + len(d["text"].encode()) for d in corpus)
        del corpus
        self.row = {d: i for i, d in enumerate(self.ids)}
        self.dense = np.load(os.path.join(data_dir, "corpus.dense.npy")).astype(np.float32, copy=False)
        self.queries = read_jsonl(os.path.join(data_dir, "queries.jsonl"))
        self.qdense = np.load(os.path.join(data_dir, "queries.dense.npy")).astype(np.float32, copy=False)
        self.qsparse = [dict(zip(s["indices"], s["values"]))
                        for s in read_jsonl(os.path.join(data_dir, "queries.sparse.jsonl"))]
        self.sparse_path = os.path.join(data_dir, "corpus.sparse.jsonl")
        self.relevant = [{self.row[r] for r in q["relevant"] if r in self.row} for q in self.queries]
        if exact_path and os.path.exists(exact_path):
            self.exact = [row[:K] for row in read_jsonl(exact_path)]
            self.exact_note = f"exact top-10 from {os.path.basename(exact_path)}"
        else:
            self.exact = exact_topk(self.dense, self.qdense).tolist()
            self.exact_note = "exact top-10 computed in-process (no exact file)"
        if len(self.exact) != len(self.queries):
            raise SystemExit(f"{exact_path}: {len(self.exact)} rows for {len(self.queries)} queries")
        self.n, self.dim = self.dense.shape


# ---------------------------------------------------------------------------------------
# Systems. Each query method returns the system's raw result; rows() turns it into corpus
# row indices outside the timed region.


class LanceDB:
    name = "lancedb"

    def __init__(self, work, ds, a):
        import lancedb
        import lance
        import pyarrow as pa
        self.pa = pa
        self.version = lancedb.__version__
        self.ds, self.ef, self.refine = ds, a.ef, a.refine
        self.indexed = ds.n >= a.lance_flat_below
        self.db = lancedb.connect(os.path.join(work, "lancedb"))
        self.schema = pa.schema([
            pa.field("id", pa.string()),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), ds.dim)),
        ])
        self.table = self.db.create_table("docs", schema=self.schema)
        self.batch = 100_000
        self.notes = [
            f"pylance {lance.__version__}",
            f"add() in batches of {self.batch} rows (LanceDB favours few large appends)",
            "FTS: native Lance inverted index, 'simple' tokenizer (splits on whitespace and "
            "punctuation), lower-casing, no stemming / stop words / ascii folding; "
            "text = title + newline + body",
            "hybrid: query_type='hybrid' (vector + FTS, each leg limited to k) fused by "
            "RRFReranker (k=60) in the Python client",
            "no sparse-vector type: the dataset's sparse vectors are not used",
        ]
        if self.indexed:
            self.parts = max(1, ds.n // 1_000_000)
            self.index = (f"IVF_HNSW_SQ (num_partitions={self.parts}, m=20, ef_construction=300, "
                          f"dot); query ef={self.ef}, refine_factor={self.refine}; FTS inverted index")
        else:
            self.index = "no vector index (flat scan, dot); FTS inverted index"
            self.notes.append(
                f"{ds.n} docs < {a.lance_flat_below}: no vector index, exact flat search "
                "(LanceDB's docs say brute force is usually enough for small tables)")

    def ingest(self):
        pa, ds, t = self.pa, self.ds, 0.0
        for s in range(0, ds.n, self.batch):
            e = min(ds.n, s + self.batch)
            vec = pa.FixedSizeListArray.from_arrays(pa.array(ds.dense[s:e].reshape(-1)), ds.dim)
            batch = pa.table({"id": ds.ids[s:e], "text": ds.texts[s:e], "vector": vec},
                             schema=self.schema)
            t0 = time.perf_counter()
            self.table.add(batch)
            t += time.perf_counter() - t0
        return t

    def build_index(self):
        from lancedb.index import FTS, HnswSq
        t0 = time.perf_counter()
        if self.indexed:
            self.table.create_index("vector", config=HnswSq(distance_type="dot",
                                                            num_partitions=self.parts))
        self.table.create_index("text", config=FTS(stem=False, remove_stop_words=False,
                                                   ascii_folding=False))
        return time.perf_counter() - t0

    def _vector_opts(self, q):
        q = q.distance_type("dot")
        if self.indexed:
            q = q.ef(self.ef)
            if self.refine:
                q = q.refine_factor(self.refine)
        return q

    def dense(self, i):
        q = self.table.search(self.ds.qdense[i], vector_column_name="vector")
        return self._vector_opts(q).limit(K).select(["id"]).to_arrow()

    def text(self, i):
        return (self.table.search(self.ds.queries[i]["text"], query_type="fts")
                .limit(K).select(["id"]).to_arrow())

    def hybrid(self, i):
        from lancedb.rerankers import RRFReranker
        q = (self.table.search(query_type="hybrid", vector_column_name="vector")
             .vector(self.ds.qdense[i]).text(self.ds.queries[i]["text"]))
        return self._vector_opts(q).rerank(RRFReranker()).limit(K).select(["id"]).to_arrow()

    def rows(self, res):
        return [self.ds.row[x] for x in res.column("id").to_pylist()]

    def close(self):
        self.table = None
        self.db = None


class Milvus:
    """Milvus Lite through pymilvus. Two engine generations exist: milvus-lite >= 3 is a
    pure-Python engine running in this process; 2.x runs the C++ Milvus core as a child
    process. Both are handled; the result's version tells which was measured."""
    name = "milvus"

    def __init__(self, work, ds, a):
        import pymilvus
        from importlib.metadata import version
        from pymilvus import DataType, Function, FunctionType, MilvusClient
        self.pm = pymilvus
        self.version = version("milvus-lite")
        self.python_engine = int(self.version.split(".")[0]) >= 3
        self.ds, self.leg_k = ds, a.leg_k
        self.sparse_terms = 0
        self.path = os.path.join(work, "milvus.db")
        self.client = MilvusClient(self.path)
        too_long = max(len(t.encode()) for t in ds.texts)
        if too_long > 65535:
            raise SystemExit(f"a document has {too_long} bytes of text; Milvus VARCHAR holds 65535")
        s = MilvusClient.create_schema(auto_id=False)
        s.add_field("id", DataType.INT64, is_primary=True)  # corpus row index
        s.add_field("text", DataType.VARCHAR, max_length=65535, enable_analyzer=True)
        s.add_field("dense", DataType.FLOAT_VECTOR, dim=ds.dim)
        s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        s.add_field("bm25", DataType.SPARSE_FLOAT_VECTOR)
        s.add_function(Function(name="text_bm25", function_type=FunctionType.BM25,
                                input_field_names=["text"], output_field_names=["bm25"]))
        self.client.create_collection("docs", schema=s)
        self.batch = 2000

        # Dense index: HNSW where the engine has it (3.x); 2.x accepts only FLAT, IVF_FLAT
        # and AUTOINDEX, of which IVF_FLAT is the one with a tunable search breadth.
        kind = a.milvus_index or ("HNSW" if self.python_engine else "IVF_FLAT")
        if kind == "HNSW":
            self.build = {"M": 16, "efConstruction": 200}
            self.search = {"ef": a.ef}
        elif kind == "IVF_FLAT":
            nlist = max(16, min(4096, int(4 * ds.n ** 0.5)))  # Milvus guide: ~4 sqrt(n)
            self.build = {"nlist": nlist}
            self.search = {"nprobe": max(1, min(nlist, a.nprobe or nlist // 8))}
        else:
            self.build, self.search = {}, {}
        self.dense_index = kind
        self.index = (f"dense {kind} (IP, build {self.build}, search {self.search}); sparse "
                      "SPARSE_INVERTED_INDEX (IP); BM25 function -> SPARSE_INVERTED_INDEX (BM25)")
        engine = ("the pure-Python engine (WAL + Parquet segments + per-segment FAISS indexes) "
                  "serving gRPC from a thread of this process" if self.python_engine else
                  "the C++ Milvus core run as a child process (its peak RSS is added to "
                  "peak_rss_bytes)")
        self.notes = [
            f"pymilvus {pymilvus.__version__}; milvus-lite {self.version} is {engine}",
            ("milvus-lite 3.x dense indexes: FLAT/BRUTE_FORCE, HNSW, HNSW_SQ, IVF_FLAT, IVF_SQ8, "
             "AUTOINDEX (= HNSW); no PQ; sparse: SPARSE_INVERTED_INDEX (exact)"
             if self.python_engine else
             "milvus-lite 2.x dense indexes: only FLAT, IVF_FLAT and AUTOINDEX ('local mode "
             "only support FLAT IVF_FLAT AUTOINDEX'); HNSW is refused"),
            f"insert() in batches of {self.batch} rows, then flush() (both in ingest_s)",
            "index_build_s = create_index + load_collection" +
            (" + waiting for the engine's background compaction/index worker" if self.python_engine
             else "") + " + one sparse and one BM25 search (lazily built parts are built there)",
            "BM25: Milvus standard analyzer (word split, lower-cased) on title + newline + body" +
            ("; BM25 IDF statistics are per segment in 3.x" if self.python_engine else ""),
            f"hybrid: hybrid_search over dense + sparse + BM25, {self.leg_k} candidates per "
            "leg, RRFRanker(k=60)",
        ]

    def _engine_collection(self):
        """The in-process 3.x engine behind the gRPC adapter (to drain its background worker)."""
        from milvus_lite.server_manager import server_manager_instance as sm
        entry = getattr(sm, "_servers", {}).get(os.path.abspath(self.path))
        if isinstance(entry, tuple) and hasattr(entry[1], "get_collection"):
            return entry[1].get_collection("docs")
        return None

    def ingest(self):
        ds, t = self.ds, 0.0
        for b, sparse in enumerate(sparse_batches(ds.sparse_path, self.batch)):
            self.sparse_terms += sum(len(sp) for sp in sparse)
            s = b * self.batch
            rows = [{"id": s + j, "text": ds.texts[s + j], "dense": ds.dense[s + j],
                     "sparse": sp} for j, sp in enumerate(sparse)]
            t0 = time.perf_counter()
            self.client.insert("docs", rows)
            t += time.perf_counter() - t0
        t0 = time.perf_counter()
        self.client.flush("docs")
        return t + time.perf_counter() - t0

    def build_index(self):
        ip = self.client.prepare_index_params()
        ip.add_index(field_name="dense", index_type=self.dense_index, metric_type="IP",
                     params=self.build)
        ip.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        ip.add_index(field_name="bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        t0 = time.perf_counter()
        self.client.create_index("docs", ip)
        self.client.load_collection("docs")
        if self.python_engine:
            col = self._engine_collection()
            if col is not None and hasattr(col, "_wait_for_bg"):
                col._wait_for_bg()
            else:
                self.notes.append("could not reach the engine to wait for background index builds")
        self.client.search("docs", data=[self.ds.qsparse[0]], anns_field="sparse", limit=K,
                           search_params={"metric_type": "IP"})
        self.client.search("docs", data=[self.ds.queries[0]["text"]], anns_field="bm25",
                           limit=K, search_params={"metric_type": "BM25"})
        return time.perf_counter() - t0

    def dense(self, i):
        return self.client.search("docs", data=[self.qvec[i]], anns_field="dense", limit=K,
                                  search_params={"metric_type": "IP", "params": self.search})

    def text(self, i):
        return self.client.search("docs", data=[self.ds.queries[i]["text"]], anns_field="bm25",
                                  limit=K, search_params={"metric_type": "BM25"})

    def hybrid(self, i):
        req = self.pm.AnnSearchRequest
        dense_params = dict(self.search)
        if "ef" in dense_params:
            dense_params["ef"] = max(dense_params["ef"], self.leg_k)
        legs = [
            req(data=[self.qvec[i]], anns_field="dense", limit=self.leg_k,
                param={"metric_type": "IP", "params": dense_params}),
            req(data=[self.ds.qsparse[i]], anns_field="sparse", limit=self.leg_k,
                param={"metric_type": "IP"}),
            req(data=[self.ds.queries[i]["text"]], anns_field="bm25", limit=self.leg_k,
                param={"metric_type": "BM25"}),
        ]
        return self.client.hybrid_search("docs", legs, self.pm.RRFRanker(60), limit=K)

    def prepare(self):
        # pymilvus takes plain lists; convert outside the timed region.
        self.qvec = [v.tolist() for v in self.ds.qdense]

    def rows(self, res):
        return [h["id"] for h in res[0]]

    def child_peak_rss(self):
        """Peak RSS (VmHWM) of this process's live child processes, e.g. the 2.x server."""
        total = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/children") as f:
                    pids = f.read().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                total += int(line.split()[1]) * 1024
                except OSError:
                    pass
        return total

    def close(self):
        from milvus_lite.server_manager import server_manager_instance as sm
        self.client.close()
        sm.release_server(self.path)


class Chroma:
    name = "chroma"

    def __init__(self, work, ds, a):
        import chromadb
        self.version = chromadb.__version__
        self.ds = ds
        self.client = chromadb.PersistentClient(
            path=os.path.join(work, "chroma"),
            settings=chromadb.Settings(anonymized_telemetry=False))
        self.col = self.client.create_collection(
            "docs", embedding_function=None,
            configuration={"hnsw": {"space": "ip", "ef_search": a.ef}})
        self.batch = self.client.get_max_batch_size()
        h = self.col.configuration["hnsw"]
        self.index = (f"HNSW (space=ip, max_neighbors={h['max_neighbors']}, "
                      f"ef_construction={h['ef_construction']}, ef_search={h['ef_search']})")
        self.notes = [
            f"add() in batches of get_max_batch_size() = {self.batch}; ids, embeddings and "
            "documents (title + newline + body)",
            "the HNSW index is built inside add(): index_build_s is 0 and the build is in ingest_s",
            "local Chroma has no ranked full-text search (where_document $contains is an "
            "unranked substring filter), and its Search API with sparse vectors / hybrid rank "
            "is only in distributed and hosted Chroma: text and hybrid are n/a",
        ]

    def ingest(self):
        ds, t = self.ds, 0.0
        for s in range(0, ds.n, self.batch):
            e = min(ds.n, s + self.batch)
            ids = [str(i) for i in range(s, e)]
            t0 = time.perf_counter()
            self.col.add(ids=ids, embeddings=ds.dense[s:e], documents=ds.texts[s:e])
            t += time.perf_counter() - t0
        return t

    def build_index(self):
        return 0.0

    def dense(self, i):
        return self.col.query(query_embeddings=self.ds.qdense[i:i + 1], n_results=K, include=[])

    text = hybrid = None

    def rows(self, res):
        return [int(x) for x in res["ids"][0]]

    def close(self):
        self.col = None
        self.client = None


SYSTEMS = {"lancedb": LanceDB, "milvus": Milvus, "chroma": Chroma}


# ---------------------------------------------------------------------------------------


def time_queries(system, fn, timed, warm):
    """Warm up, then time each query alone. Returns (latencies ms, result rows per query)."""
    for i in warm:
        system.rows(fn(i))
    lat, rows = [], []
    for i in timed:
        t0 = time.perf_counter()
        res = fn(i)
        lat.append((time.perf_counter() - t0) * 1000.0)
        rows.append(system.rows(res))
    return lat, rows


def disk_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", choices=sorted(SYSTEMS), required=True)
    ap.add_argument("--data", required=True, help="dataset directory")
    ap.add_argument("--work", required=True, help="empty or absent directory for the database")
    ap.add_argument("--out", required=True, help="result JSON file")
    ap.add_argument("--queries", type=int, default=500, help="timed queries per query type")
    ap.add_argument("--exact", help="exact top-10 file (default DATA/queries.exact10.jsonl)")
    ap.add_argument("--ef", type=int, default=256, help="HNSW search breadth for every system")
    ap.add_argument("--refine", type=int, default=0, help="LanceDB refine_factor (0 = off)")
    ap.add_argument("--lance-flat-below", type=int, default=5000,
                    help="LanceDB: no vector index below this many documents")
    ap.add_argument("--leg-k", type=int, default=100, help="Milvus: candidates per hybrid leg")
    ap.add_argument("--milvus-index", choices=["HNSW", "IVF_FLAT", "FLAT", "AUTOINDEX"],
                    help="Milvus dense index (default HNSW on milvus-lite 3.x, IVF_FLAT on 2.x)")
    ap.add_argument("--nprobe", type=int, default=0, help="Milvus IVF_FLAT nprobe (0 = nlist/8)")
    ap.add_argument("--keep", action="store_true", help="keep WORKDIR afterwards")
    a = ap.parse_args()
    started = time.perf_counter()

    if os.path.isdir(a.work) and os.listdir(a.work):
        raise SystemExit(f"--work {a.work} is not empty")
    os.makedirs(a.work, exist_ok=True)

    ds = Dataset(a.data, a.exact or os.path.join(a.data, "queries.exact10.jsonl"))
    gc.collect()
    baseline_rss = rss_now()

    nq = len(ds.queries)
    timed = np.unique(np.linspace(0, nq - 1, min(a.queries, nq)).astype(int)).tolist()
    rest = sorted(set(range(nq)) - set(timed))
    warm = (rest or timed)[:WARMUP]

    system = SYSTEMS[a.system](a.work, ds, a)
    ingest_s = system.ingest()
    index_s = system.build_index()
    if hasattr(system, "prepare"):
        system.prepare()
    print(f"{a.system} {ds.name}: ingest {ingest_s:.2f} s, index {index_s:.2f} s", flush=True)

    latency, recall = {}, {}
    per_query = {"rows": timed}  # 1 where a relevant document is in the top 10, per timed query
    for kind in ("dense", "text", "hybrid"):
        fn = getattr(system, kind)
        if fn is None:
            latency[kind] = None
            recall[f"{kind}_qrels"] = None
            continue
        lat, rows = time_queries(system, fn, timed, warm)
        latency[kind] = {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}
        per_query[kind] = [int(bool(ds.relevant[i] & set(r))) for i, r in zip(timed, rows)]
        recall[f"{kind}_qrels"] = float(np.mean(per_query[kind]))
        if kind == "dense":
            recall["dense_vs_exact"] = float(np.mean([len(set(r) & set(ds.exact[i])) / K
                                                      for i, r in zip(timed, rows)]))
        print(f"  {kind}: p50 {latency[kind]['p50']:.3f} ms, p99 {latency[kind]['p99']:.3f} ms, "
              f"hit@10 {recall[f'{kind}_qrels']:.4f}", flush=True)
    recall.setdefault("dense_vs_exact", None)

    version, index, notes = system.version, system.index, list(system.notes)
    # The sparse vectors a system was given, as given: a u32 id and an f32 weight per term.
    raw_sparse = getattr(system, "sparse_terms", 0) * 8
    child_peak = system.child_peak_rss() if hasattr(system, "child_peak_rss") else 0
    system.close()
    del system
    gc.collect()
    disk = disk_bytes(a.work)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 + child_peak
    if child_peak:
        notes.append(f"peak_rss_bytes includes {child_peak} bytes of child-process peak RSS")
    if not a.keep:
        shutil.rmtree(a.work)

    total = ingest_s + index_s
    result = {
        "system": a.system, "version": version, "api": "python",
        "dataset": ds.name, "docs": ds.n, "dim": ds.dim, "queries": len(timed),
        "ingest_s": ingest_s, "index_build_s": index_s,
        "docs_per_s": ds.n / total if total > 0 else None,
        "disk_bytes": disk, "raw_bytes": ds.n * ds.dim * 4 + ds.raw_text_bytes,
        "raw_sparse_bytes": raw_sparse,
        "peak_rss_bytes": peak, "baseline_rss_bytes": baseline_rss,
        "latency_ms": latency,
        "recall": {k: recall[k] for k in ("dense_vs_exact", "dense_qrels", "text_qrels", "hybrid_qrels")},
        "hit_per_query": per_query,
        "index": index,
        "notes": notes + [
            "peak_rss_bytes is ru_maxrss of the whole process and includes the dataset held "
            "in memory (baseline_rss_bytes, measured before the database was created)",
            f"{WARMUP} warm-up queries, then {len(timed)} timed queries one at a time per type",
            ds.exact_note,
            f"wall time of the whole run: {time.perf_counter() - started:.1f} s",
        ],
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
