#!/usr/bin/env python3
"""Write a synthetic clustered retrieval set in the layout of shared/datasets/README.md.

Documents fall into C = max(50, N/500) clusters of uneven size. A document vector is its
cluster centre plus Gaussian noise of `--spread` times the centre's norm, L2-normalized, so
documents of one cluster are similar (cosine ~0.5 at spread 1) and the nearest neighbours
inside a cluster are not trivial to find. Text: ~12 Hangul words (2-3 syllables), half from
the cluster's own topic vocabulary and half from a shared Zipf-distributed common vocabulary;
the title is two topic words. Sparse vectors hash each word into [0, 30000) with tf-based
weights in [0.1, 1.0].

A query targets one random document: its vector is the document's vector plus noise (2 to 5
times its norm), normalized; its text is 2-4 of the document's words, usually one more topic
word of its cluster (which the document may lack) and sometimes one random common word;
`relevant` is the target document.

Deterministic for a given seed. Works in chunks, so memory stays bounded for N = 1,000,000.
"""
import argparse
import json
import os
import zlib

import numpy as np

SPARSE_DIM = 30000
TOPIC_WORDS = 40
COMMON_WORDS = 2000
CHUNK = 50_000


def hangul_words(rng, count):
    """`count` distinct words of 2-3 syllables from the Hangul syllables block."""
    words, seen = [], set()
    while len(words) < count:
        n = int(rng.integers(2, 4))
        w = "".join(chr(0xAC00 + int(s)) for s in rng.integers(0, 11172, n))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def write_npy_header(f, rows, dim):
    """npy format 1.0 header for a little-endian float32 [rows, dim] array."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})


def normalize(v):
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def sparse_line(word_ids, word_hash, word_base):
    """JSON sparse vector of a list of word ids: weight = base * (1 + 0.5 ln tf), clipped."""
    ids, tf = np.unique(word_ids, return_counts=True)
    w = np.clip(word_base[ids] * (1.0 + 0.5 * np.log(tf)), 0.1, 1.0)
    acc = {}
    for h, x in zip(word_hash[ids].tolist(), w.tolist()):
        acc[h] = min(1.0, acc.get(h, 0.0) + x)  # hash collisions merge
    keys = sorted(acc)
    return json.dumps({"indices": keys, "values": [round(acc[k], 4) for k in keys]})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--queries", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--spread", type=float, default=1.0,
                    help="document noise norm relative to the cluster centre norm")
    a = ap.parse_args()
    n, dim, nq = a.docs, a.dim, a.queries
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)

    clusters = max(50, n // 500)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    cluster_p = rng.lognormal(0.0, 0.5, clusters)  # uneven cluster sizes
    cluster_p /= cluster_p.sum()

    # Vocabulary: common words first, then TOPIC_WORDS per cluster.
    vocab = hangul_words(rng, COMMON_WORDS + clusters * TOPIC_WORDS)
    word_hash = np.array([zlib.crc32(w.encode()) % SPARSE_DIM for w in vocab], dtype=np.int64)
    common_p = 1.0 / np.arange(1, COMMON_WORDS + 1) ** 1.1
    common_p /= common_p.sum()
    # Base sparse weight: frequent common words low, rare common words and topic words high.
    word_base = np.full(len(vocab), 0.8)
    word_base[:COMMON_WORDS] = 0.1 + 0.6 * np.log1p(np.arange(COMMON_WORDS)) / np.log(COMMON_WORDS)

    # Query targets are chosen up front and captured while their chunk is generated.
    targets = rng.integers(0, n, nq)
    target_set = set(targets.tolist())
    captured_vec, captured_words, captured_cluster = {}, {}, {}

    def path(name):
        return os.path.join(a.out, name)

    with open(path("corpus.dense.npy"), "wb") as fv, \
            open(path("corpus.jsonl"), "w", encoding="utf-8") as fc, \
            open(path("corpus.sparse.jsonl"), "w", encoding="utf-8") as fs:
        write_npy_header(fv, n, dim)
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            cid = rng.choice(clusters, m, p=cluster_p)
            noise = rng.standard_normal((m, dim), dtype=np.float32) * np.float32(a.spread)
            vec = normalize(centres[cid] + noise)
            fv.write(vec.astype("<f4").tobytes())
            lengths = rng.integers(8, 17, m)  # 8..16 words, ~12 on average
            topic = rng.integers(0, TOPIC_WORDS, (m, 16)) + COMMON_WORDS + cid[:, None] * TOPIC_WORDS
            common = rng.choice(COMMON_WORDS, (m, 16), p=common_p)
            words = np.where(rng.random((m, 16)) < 0.5, topic, common)
            title = rng.integers(0, TOPIC_WORDS, (m, 2)) + COMMON_WORDS + cid[:, None] * TOPIC_WORDS
            lines, sparse = [], []
            for j in range(m):
                i = start + j
                w = words[j, :lengths[j]]
                lines.append(json.dumps({
                    "id": f"d{i}",
                    "title": " ".join(vocab[t] for t in title[j]),
                    "text": " ".join(vocab[t] for t in w),
                }, ensure_ascii=False))
                sparse.append(sparse_line(w, word_hash, word_base))
                if i in target_set:
                    captured_vec[i] = vec[j].copy()
                    captured_words[i] = w.copy()
                    captured_cluster[i] = int(cid[j])
            fc.write("\n".join(lines) + "\n")
            fs.write("\n".join(sparse) + "\n")

    with open(path("queries.dense.npy"), "wb") as fv, \
            open(path("queries.jsonl"), "w", encoding="utf-8") as fq, \
            open(path("queries.sparse.jsonl"), "w", encoding="utf-8") as fs:
        write_npy_header(fv, nq, dim)
        qvec = np.stack([captured_vec[t] for t in targets.tolist()]) if nq else np.zeros((0, dim))
        scale = rng.uniform(2.0, 5.0, (nq, 1)).astype(np.float32)
        qvec = normalize(qvec + rng.standard_normal((nq, dim), dtype=np.float32) * scale / np.sqrt(dim))
        fv.write(qvec.astype("<f4").tobytes())
        for q, t in enumerate(targets.tolist()):
            doc_words = captured_words[t]
            k = min(len(doc_words), int(rng.integers(2, 5)))
            w = rng.choice(doc_words, k, replace=False)
            if rng.random() < 0.7:
                w = np.append(w, COMMON_WORDS + captured_cluster[t] * TOPIC_WORDS
                              + rng.integers(0, TOPIC_WORDS))
            if rng.random() < 0.3:
                w = np.append(w, rng.choice(COMMON_WORDS, p=common_p))
            fq.write(json.dumps({"id": f"q{q}", "text": " ".join(vocab[x] for x in w),
                                 "relevant": [f"d{t}"], "answers": []}, ensure_ascii=False) + "\n")
            fs.write(sparse_line(w, word_hash, word_base) + "\n")

    meta = {
        "name": os.path.basename(os.path.normpath(a.out)),
        "task": "synthetic clustered retrieval (generated by scripts/peers/gen_synthetic.py)",
        "source": f"synthetic, seed {a.seed}, {clusters} clusters, spread {a.spread}",
        "documents": n,
        "queries": nq,
        "dense": {"file_suffix": "dense.npy", "dim": dim, "dtype": "float32", "normalized": True},
        "sparse": {"file_suffix": "sparse.jsonl", "dim": SPARSE_DIM, "score": "dot product"},
    }
    with open(path("dataset.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
