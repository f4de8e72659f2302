#!/usr/bin/env python3
"""Exact top-10 dense neighbours (inner product) of every query of a dataset.

Writes one JSON list of 10 corpus row indices per query, best first, to
DIR/queries.exact10.jsonl, or to --out FILE / --out-dir DIR/<dataset>.exact10.jsonl for
read-only datasets. Skips when the output exists and is newer than both .npy files.
"""
import argparse
import json
import os

import numpy as np

K = 10


def exact_topk(corpus, queries, k=K, q_chunk=1024, c_chunk=65536):
    """Row indices [len(queries), k] of the k largest inner products, best first."""
    nq = len(queries)
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_i = np.zeros((nq, k), dtype=np.int64)
    for c0 in range(0, len(corpus), c_chunk):
        block = np.ascontiguousarray(corpus[c0:c0 + c_chunk], dtype=np.float32)
        for q0 in range(0, nq, q_chunk):
            s = queries[q0:q0 + q_chunk] @ block.T
            kk = min(k, s.shape[1])
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            cand_s = np.concatenate([best_s[q0:q0 + q_chunk], np.take_along_axis(s, part, 1)], 1)
            cand_i = np.concatenate([best_i[q0:q0 + q_chunk], part + c0], 1)
            top = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
            best_s[q0:q0 + q_chunk] = np.take_along_axis(cand_s, top, 1)
            best_i[q0:q0 + q_chunk] = np.take_along_axis(cand_i, top, 1)
    return best_i


def default_path(data_dir, out=None, out_dir=None):
    if out:
        return out
    if out_dir:
        name = os.path.basename(os.path.normpath(data_dir))
        return os.path.join(out_dir, f"{name}.exact10.jsonl")
    return os.path.join(data_dir, "queries.exact10.jsonl")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--out-dir", help="write <out-dir>/<dataset>.exact10.jsonl instead")
    ap.add_argument("--out", help="write exactly this file instead")
    a = ap.parse_args()
    out = default_path(a.data, a.out, a.out_dir)
    npys = [os.path.join(a.data, f) for f in ("corpus.dense.npy", "queries.dense.npy")]
    if os.path.exists(out) and os.path.getmtime(out) > max(map(os.path.getmtime, npys)):
        print(f"{out} is up to date")
        return
    corpus = np.load(npys[0], mmap_mode="r")
    queries = np.load(npys[1]).astype(np.float32)
    top = exact_topk(corpus, queries)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        for row in top.tolist():
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out} ({len(top)} queries)")


if __name__ == "__main__":
    main()
