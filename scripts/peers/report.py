#!/usr/bin/env python3
"""Merge benchmark result JSON files (hybridb's and the peers') into Markdown tables.

Reads every *.json in RESULTS_DIR, groups the results by dataset and writes, per dataset, a
build/footprint table and a query table with one row per system, then a table of ratios
between hybridb and each peer. Also records the machine and the measured versions.
"""
import argparse
import glob
import json
import os
import platform

MIB = 1 << 20
KINDS = ("dense", "text", "hybrid")


def machine():
    model, mem = "unknown CPU", None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    ram = f"{mem / (1 << 30):.1f} GiB RAM" if mem else "RAM unknown"
    return f"{model}, {os.cpu_count()} logical cores, {ram}, {platform.system()} {platform.machine()}"


def num(x, digits=2):
    if x is None:
        return "n/a"
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits if abs(x) >= 1 else digits + 1}f}"


def lat(r, kind, q):
    v = (r.get("latency_ms") or {}).get(kind)
    return v.get(q) if v else None


def rec(r, key):
    return (r.get("recall") or {}).get(key)


def paired_delta(h, p, kind):
    """hybridb hit@10 minus the peer's on the queries both timed, with a 95% interval (normal
    approximation of the paired differences): (delta, half-width, n), or None."""
    hq, pq = h.get("hit_per_query") or {}, p.get("hit_per_query") or {}
    if not hq.get(kind) or not pq.get(kind):
        return None
    ph = dict(zip(pq["rows"], pq[kind]))
    d = [x - ph[row] for row, x in zip(hq["rows"], hq[kind]) if row in ph]
    if len(d) < 2:
        return None
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    return mean, 1.96 * (var / len(d)) ** 0.5, len(d)


def delta_cell(v):
    if v is None:
        return "n/a"
    mean, half, n = v
    verdict = "better" if mean - half > 0 else "worse" if mean + half < 0 else "no significant difference"
    return f"{mean:+.4f} ± {half:.4f} (n = {n:,}; {verdict})"


def label(r):
    return f'{r["system"]} {r.get("version", "")} ({r.get("api", "?")})'


def times(ratio):
    """Phrase a 'how many times faster' ratio: >1 faster, <1 slower."""
    if ratio is None:
        return "n/a"
    if ratio >= 1:
        return f"hybridb {ratio:.1f}× faster"
    return f"hybridb {1 / ratio:.1f}× slower"


def div(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def common_notes(r, results):
    """Notes that every result of r's system and version carries."""
    same = [x.get("notes", []) for x in results if label(x) == label(r)]
    return [n for n in same[0] if all(n in other for other in same)] if same else []


def dataset_tables(name, rows, rows_all, out):
    r0 = rows[0]
    out.append(f"## {name} ({num(r0.get('docs'))} documents, {r0.get('dim')}-d)\n")
    out.append("| system | ingest s | index build s | docs/s | disk MiB | disk / raw | "
               "disk / raw with sparse | peak RSS MiB | baseline RSS MiB |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        disk, raw = r.get("disk_bytes"), r.get("raw_bytes")
        sparse = r.get("raw_sparse_bytes")
        out.append(" | ".join([
            f"| {label(r)}", num(r.get("ingest_s")), num(r.get("index_build_s")),
            num(r.get("docs_per_s"), 0) if r.get("docs_per_s") else "n/a",
            num(disk / MIB if disk is not None else None),
            num(div(disk, raw)),
            num(div(disk, raw + sparse)) if raw is not None and sparse is not None else "n/a",
            num(r["peak_rss_bytes"] / MIB if r.get("peak_rss_bytes") else None, 0),
            num(r["baseline_rss_bytes"] / MIB if r.get("baseline_rss_bytes") else None, 0),
        ]) + " |")
    out.append("")
    out.append("| system | queries | dense p50 / p99 ms | text p50 / p99 ms | hybrid p50 / p99 ms | "
               "dense R@10 vs exact | dense hit@10 | text hit@10 | hybrid hit@10 |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"| {label(r)}", num(r.get("queries"))]
        for k in KINDS:
            p50, p99 = lat(r, k, "p50"), lat(r, k, "p99")
            cells.append("n/a" if p50 is None else f"{num(p50)} / {num(p99)}")
        for key in ("dense_vs_exact", "dense_qrels", "text_qrels", "hybrid_qrels"):
            v = rec(r, key)
            cells.append("n/a" if v is None else f"{v:.4f}")
        out.append(" | ".join(cells) + " |")
    out.append("")
    out.append("Indexes (and notes for this dataset only):\n")
    for r in rows:
        extra = [n for n in r.get("notes", []) if n not in common_notes(r, rows_all)]
        out.append(f"- {label(r)}: {r.get('index', '?')}" + "".join(f"; {n}" for n in extra))
    out.append("")

    ours = [r for r in rows if r["system"] == "hybridb"]
    peers = [r for r in rows if not r["system"].startswith("hybridb")]
    if not ours or not peers:
        return
    h = ours[0]
    out.append(f"### hybridb vs each peer on {name}\n")
    out.append("Latency: hybridb p50 / peer p50, and in brackets peer p50 / hybridb p50 "
               "phrased as how many times faster hybridb answers. Ingest: hybridb docs/s / "
               "peer docs/s (ingest + index build). Disk and peak RSS: hybridb / peer "
               "(below 1 = hybridb smaller). Hybrid hit@10 Δ: hybridb minus peer on the queries "
               "both timed, ± the 95% interval of the paired difference.\n")
    out.append("| peer | dense p50 | text p50 | hybrid p50 | hybrid hit@10 Δ | ingest docs/s | "
               "disk | peak RSS |")
    out.append("|---|---|---|---|---|---|---|---|")
    for p in peers:
        cells = [f"| {label(p)}"]
        for k in KINDS:
            ratio = div(lat(p, k, "p50"), lat(h, k, "p50"))
            cells.append("n/a" if ratio is None else f"{1 / ratio:.3g} ({times(ratio)})")
        cells.append(delta_cell(paired_delta(h, p, "hybrid")))
        ing = div(h.get("docs_per_s"), p.get("docs_per_s"))
        cells.append("n/a" if ing is None else f"{ing:.2f} ({times(ing)})")
        cells.append(num(div(h.get("disk_bytes"), p.get("disk_bytes"))))
        cells.append(num(div(h.get("peak_rss_bytes"), p.get("peak_rss_bytes"))))
        out.append(" | ".join(cells) + " |")
    out.append("")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="directory of result *.json files")
    ap.add_argument("--out", help="also write the Markdown here")
    a = ap.parse_args()

    results = []
    for path in sorted(glob.glob(os.path.join(a.results, "*.json"))):
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        if isinstance(r, dict) and "system" in r and "dataset" in r:
            results.append(r)
    if not results:
        raise SystemExit(f"no result files in {a.results}")

    order = {"hybridb": 0, "hybridb-dense-bm25": 1, "hybridb-words": 2, "lancedb": 3,
             "milvus": 4, "chroma": 5}
    results.sort(key=lambda r: (r.get("docs") or 0, r["dataset"], order.get(r["system"], 9)))
    datasets = []
    for r in results:
        if r["dataset"] not in datasets:
            datasets.append(r["dataset"])

    out = ["# hybridb and embedded peers\n", f"Machine: {machine()}.\n"]
    seen = {}
    for r in results:
        seen.setdefault(label(r), r)
    out.append("Systems: " + "; ".join(seen) + ".\n")
    out.append("Latencies are single-threaded, one query at a time, k = 10, after warm-up. "
               "hit@10: share of queries with a relevant document in the top 10; "
               "R@10 vs exact: overlap with the exact dense top 10. Peak RSS includes the "
               "dataset held by the benchmark process (baseline RSS).\n")
    for name in datasets:
        dataset_tables(name, [r for r in results if r["dataset"] == name], results, out)

    out.append("## Configuration and notes\n")
    for lab, r in seen.items():
        out.append(f"- **{lab}**")
        out += [f"  - {n}" for n in common_notes(r, results)]
    text = "\n".join(out) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
