//! Retrieval evaluation: recall at fixed cutoffs, MRR@10 and nDCG@10 over
//! ranked runs, plus reading and writing runs in the TREC format
//! (`qid Q0 docid rank score tag`, one result per line).
//!
//! Recall@k follows the dataset README: a query is a hit at k when any of its
//! relevant documents is among the first k results; Recall@k is the fraction
//! of queries that are hits.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use crate::dataset::QueryRecord;
use crate::error::{Error, Result};

/// The cutoffs of [`Metrics::recall`], in order.
pub const RECALL_CUTOFFS: [usize; 5] = [1, 5, 10, 20, 100];

/// Averages over the evaluated queries.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Queries evaluated (those with at least one relevant document).
    pub queries: usize,
    /// Queries skipped because they list no relevant document.
    pub skipped: usize,
    /// Recall at each of [`RECALL_CUTOFFS`].
    pub recall: [f64; 5],
    pub mrr10: f64,
    pub ndcg10: f64,
}

impl Metrics {
    /// Recall at cutoff `k`, if `k` is one of [`RECALL_CUTOFFS`].
    pub fn recall_at(&self, k: usize) -> Option<f64> {
        let i = RECALL_CUTOFFS.iter().position(|&c| c == k)?;
        self.recall.get(i).copied()
    }
}

/// Scores `runs` (per query id, doc ids best first) against `queries`.
///
/// Queries with no relevant documents are skipped and counted in
/// [`Metrics::skipped`]; a query missing from `runs` counts as a miss
/// everywhere. A document repeated in a run keeps its ranks but gains at
/// most once. With no evaluated queries every metric is 0.
pub fn evaluate(queries: &[QueryRecord], runs: &HashMap<String, Vec<String>>) -> Metrics {
    let mut m = Metrics {
        queries: 0,
        skipped: 0,
        recall: [0.0; 5],
        mrr10: 0.0,
        ndcg10: 0.0,
    };
    for q in queries {
        let relevant: HashSet<&str> = q.relevant.iter().map(String::as_str).collect();
        if relevant.is_empty() {
            m.skipped += 1;
            continue;
        }
        m.queries += 1;
        let run = runs.get(&q.id).map(Vec::as_slice).unwrap_or_default();

        // 1-based rank of the first relevant document, if any.
        let first = run
            .iter()
            .position(|d| relevant.contains(d.as_str()))
            .map(|i| i + 1);
        if let Some(rank) = first {
            for (r, &k) in m.recall.iter_mut().zip(RECALL_CUTOFFS.iter()) {
                if rank <= k {
                    *r += 1.0;
                }
            }
            if rank <= 10 {
                m.mrr10 += 1.0 / rank as f64;
            }
        }

        // Binary-gain DCG over the top 10, each relevant document counted once.
        let mut seen = HashSet::new();
        let dcg: f64 = run
            .iter()
            .take(10)
            .enumerate()
            .filter(|(_, d)| relevant.contains(d.as_str()) && seen.insert(d.as_str()))
            .map(|(i, _)| discount(i + 1))
            .sum();
        let idcg: f64 = (1..=relevant.len().min(10)).map(discount).sum();
        m.ndcg10 += dcg / idcg;
    }
    if m.queries > 0 {
        let n = m.queries as f64;
        for r in &mut m.recall {
            *r /= n;
        }
        m.mrr10 /= n;
        m.ndcg10 /= n;
    }
    m
}

/// 1 / log2(rank + 1) for a 1-based rank.
fn discount(rank: usize) -> f64 {
    1.0 / ((rank + 1) as f64).log2()
}

/// Writes one TREC run line: `qid Q0 docid rank score tag`. Ids and tag must
/// be non-empty and free of whitespace, or the line could not be read back.
pub fn write_trec_line(
    out: &mut impl Write,
    qid: &str,
    docid: &str,
    rank: usize,
    score: f32,
    tag: &str,
) -> std::io::Result<()> {
    for (name, v) in [("qid", qid), ("docid", docid), ("tag", tag)] {
        if v.is_empty() || v.chars().any(char::is_whitespace) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("TREC {name} {v:?} is empty or contains whitespace"),
            ));
        }
    }
    writeln!(out, "{qid} Q0 {docid} {rank} {score} {tag}")
}

/// Reads a TREC run file into per-query doc ids ordered by the rank field
/// (ties keep file order). Blank lines are skipped; every other line must
/// have the six whitespace-separated fields with an integer rank and a
/// numeric score.
pub fn read_trec_run(path: &Path) -> Result<HashMap<String, Vec<String>>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut ranked: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let err = |field: &str, reason: String| Error::Parse {
            path: path.to_path_buf(),
            line: line_no,
            field: field.to_string(),
            reason,
        };
        let line = line.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                err("line", "not valid UTF-8".to_string())
            } else {
                Error::io(path, e)
            }
        })?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [qid, _q0, docid, rank, score, _tag] = fields.as_slice() else {
            if fields.is_empty() {
                continue;
            }
            return Err(err(
                "fields",
                format!(
                    "expected 6 fields (qid Q0 docid rank score tag), found {}",
                    fields.len()
                ),
            ));
        };
        let rank: usize = rank
            .parse()
            .map_err(|_| err("rank", format!("{rank:?} is not a non-negative integer")))?;
        score
            .parse::<f64>()
            .map_err(|_| err("score", format!("{score:?} is not a number")))?;
        ranked
            .entry(qid.to_string())
            .or_default()
            .push((rank, docid.to_string()));
    }
    Ok(ranked
        .into_iter()
        .map(|(qid, mut docs)| {
            docs.sort_by_key(|(rank, _)| *rank);
            (qid, docs.into_iter().map(|(_, d)| d).collect())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{
        DatasetDir, DocLine, SparseRecord, read_docs_jsonl, read_queries, read_sparse_jsonl,
    };
    use crate::npy;
    use std::path::PathBuf;

    fn query(id: &str, relevant: &[&str]) -> QueryRecord {
        QueryRecord {
            id: id.to_string(),
            text: String::new(),
            relevant: relevant.iter().map(|s| s.to_string()).collect(),
            answers: Vec::new(),
        }
    }

    fn run(docs: &[&str]) -> Vec<String> {
        docs.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed_metrics() {
        let queries = [
            query("q1", &["a"]),
            query("q2", &["a", "b"]),
            query("q3", &["c"]),
            query("q4", &["d"]),
            query("q5", &[]),
        ];
        let mut runs = HashMap::new();
        // q1: first relevant at rank 1. RR = 1; DCG = 1/log2(2) = 1 = IDCG; nDCG = 1.
        runs.insert("q1".to_string(), run(&["a", "b", "c"]));
        // q2: relevant at ranks 3 and 5. RR = 1/3.
        // DCG = 1/log2(4) + 1/log2(6) = 0.5 + 0.386852807 = 0.886852807
        // IDCG = 1/log2(2) + 1/log2(3) = 1 + 0.630929754 = 1.630929754
        // nDCG = 0.543771...
        runs.insert("q2".to_string(), run(&["x", "y", "a", "z", "b"]));
        // q3: relevant at rank 12: a hit only at 20 and 100; RR = 0, nDCG = 0.
        let mut q3: Vec<&str> = vec!["n"; 11];
        q3.push("c");
        runs.insert("q3".to_string(), run(&q3));
        // q4 has no run: a miss everywhere. q5 has no relevant docs: skipped.
        runs.insert("unknown".to_string(), run(&["a"]));

        let m = evaluate(&queries, &runs);
        assert_eq!((m.queries, m.skipped), (4, 1));
        // Hits: @1 {q1}; @5 and @10 {q1, q2}; @20 and @100 {q1, q2, q3}.
        assert_eq!(m.recall, [0.25, 0.5, 0.5, 0.75, 0.75]);
        assert_eq!(m.recall_at(20), Some(0.75));
        assert_eq!(m.recall_at(3), None);
        // MRR@10 = (1 + 1/3 + 0 + 0) / 4 = 0.333...
        assert!(close(m.mrr10, 1.0 / 3.0), "{}", m.mrr10);
        // nDCG@10 = (1 + 0.886852807/1.630929754) / 4
        let q2_ndcg = (0.5 + 1.0 / 6f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((q2_ndcg - 0.543_771).abs() < 1e-6, "{q2_ndcg}");
        assert!(close(m.ndcg10, (1.0 + q2_ndcg) / 4.0), "{}", m.ndcg10);
    }

    #[test]
    fn edge_cases() {
        // No evaluated queries: zeros, not NaN.
        let m = evaluate(&[query("q", &[])], &HashMap::new());
        assert_eq!((m.queries, m.skipped, m.mrr10, m.ndcg10), (0, 1, 0.0, 0.0));
        // A repeated relevant doc gains once, so nDCG stays at most 1.
        let mut runs = HashMap::new();
        runs.insert("q".to_string(), run(&["a", "a", "a"]));
        let m = evaluate(&[query("q", &["a", "a"])], &runs);
        assert!(close(m.ndcg10, 1.0) && close(m.mrr10, 1.0));
        // Twelve relevant docs: IDCG counts only ten.
        let rel: Vec<String> = (0..12).map(|i| format!("d{i}")).collect();
        let rel_refs: Vec<&str> = rel.iter().map(String::as_str).collect();
        runs.insert("q".to_string(), rel.clone());
        let m = evaluate(&[query("q", &rel_refs)], &runs);
        assert!(close(m.ndcg10, 1.0));
    }

    #[test]
    fn trec_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.trec");
        let mut buf = Vec::new();
        // Written out of order; reading sorts by rank.
        write_trec_line(&mut buf, "q1", "d2", 2, 0.5, "hybrid").unwrap();
        write_trec_line(&mut buf, "q1", "d9", 1, 0.75, "hybrid").unwrap();
        write_trec_line(&mut buf, "q2", "kq0001", 1, -1.25, "hybrid").unwrap();
        buf.extend_from_slice(b"\n");
        write_trec_line(&mut buf, "q1", "d3", 3, 0.25, "hybrid").unwrap();
        assert!(write_trec_line(&mut buf, "q 1", "d", 1, 0.0, "t").is_err());
        assert!(write_trec_line(&mut buf, "q", "", 1, 0.0, "t").is_err());
        std::fs::write(&path, &buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("q1 Q0 d2 2 0.5 hybrid\n"));

        let runs = read_trec_run(&path).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs["q1"], ["d9", "d2", "d3"]);
        assert_eq!(runs["q2"], ["kq0001"]);

        for (line, field) in [
            ("q1 Q0 d1 1 0.5\n", "fields"),
            ("q1 Q0 d1 first 0.5 t\n", "rank"),
            ("q1 Q0 d1 -1 0.5 t\n", "rank"),
            ("q1 Q0 d1 1 high t\n", "score"),
        ] {
            std::fs::write(&path, format!("q0 Q0 d0 1 1.0 t\n{line}")).unwrap();
            match read_trec_run(&path) {
                Err(Error::Parse { line, field: f, .. }) => {
                    assert_eq!((line, f.as_str()), (2, field))
                }
                other => panic!("{line:?}: expected a parse error, got {other:?}"),
            }
        }
    }

    /// The shared KorQuAD set, if this checkout has it.
    fn korquad_dir() -> Option<DatasetDir> {
        let candidates = [
            std::env::var("HYBRIDB_DATASETS").ok().map(PathBuf::from),
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets")),
            Some(PathBuf::from("/work/shared/datasets")),
        ];
        candidates
            .into_iter()
            .flatten()
            .map(|root| root.join("korquad-v1-dev"))
            .find(|p| p.join("corpus.jsonl").is_file())
            .map(DatasetDir::new)
    }

    /// Reads every file of korquad-v1-dev, then checks exact dense search on
    /// every 8th query against the README's figures for all queries (R@1 .7572,
    /// R@10 .9704, MRR@10 .8365) with a sampling tolerance. On all queries
    /// this code matched them within 0.002; the sample keeps debug builds fast.
    #[test]
    fn real_korquad_dev() {
        let Some(d) = korquad_dir() else {
            println!("skipped: korquad-v1-dev dataset not found");
            return;
        };
        let docs: Vec<DocLine> = read_docs_jsonl(&d.corpus())
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(docs.len(), 961);
        let ids: HashSet<&str> = docs.iter().map(|d| d.doc.id.as_str()).collect();
        assert_eq!(ids.len(), 961);
        let queries = read_queries(&d.queries()).unwrap();
        assert_eq!(queries.len(), 3316);
        let known = |q: &QueryRecord| q.relevant.iter().all(|r| ids.contains(r.as_str()));
        assert!(queries.iter().all(|q| !q.relevant.is_empty() && known(q)));
        for (path, n) in [(d.corpus_sparse(), 961), (d.queries_sparse(), 3316)] {
            let sparse: Vec<SparseRecord> = read_sparse_jsonl(&path.unwrap())
                .unwrap()
                .collect::<Result<_>>()
                .unwrap();
            assert_eq!(sparse.len(), n);
        }

        let (cd, qd) = (d.corpus_dense().unwrap(), d.queries_dense().unwrap());
        assert_eq!(npy::read_npy_dim(&cd).unwrap(), (961, 384));
        assert_eq!(npy::read_npy_dim(&qd).unwrap(), (3316, 384));
        let corpus = npy::read_f32_matrix(&cd).unwrap();
        let qm = npy::read_f32_matrix(&qd).unwrap();
        assert_eq!(
            npy::read_f32_row(&cd, 960).unwrap(),
            corpus.row(960).unwrap()
        );
        let mut runs = HashMap::new();
        let sample: Vec<QueryRecord> = queries.iter().step_by(8).cloned().collect();
        for (i, q) in queries.iter().enumerate().step_by(8) {
            let qv = qm.row(i).unwrap();
            let mut scored: Vec<(f32, usize)> = (0..corpus.rows)
                .map(|j| {
                    let dv = corpus.row(j).unwrap();
                    (qv.iter().zip(dv).map(|(a, b)| a * b).sum(), j)
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            let ranked = scored
                .iter()
                .take(100)
                .map(|&(_, j)| docs[j].doc.id.clone());
            runs.insert(q.id.clone(), ranked.collect());
        }
        let m = evaluate(&sample, &runs);
        assert_eq!(m.queries, 415);
        let near = |got: f64, want: f64| (got - want).abs() < 0.05;
        assert!(
            near(m.recall[0], 0.7572) && near(m.recall[2], 0.9704),
            "{m:?}"
        );
        assert!(near(m.mrr10, 0.8365), "{m:?}");
    }
}
