//! A deterministic write workload for the crash and failpoint tests: commit `c` writes
//! documents `c{c}-0..4`, each findable by every leg through a term of its own.

use hybridb::{Database, DenseMode, Document, Leg, Metric, Precision, Query, Schema, SparseVector};

pub const DIM: usize = 16;
pub const PER_COMMIT: u64 = 5;

pub fn schema() -> Schema {
    Schema::new()
        .dense(DIM, Metric::Cosine)
        .sparse()
        .text()
        .colbert(4, Precision::F16)
}

/// Document `j` of commit `c`, fully determined by (c, j).
pub fn document(c: u64, j: u64) -> Document {
    let mut rng = super::Rng::new(c * 1000 + j);
    let dense: Vec<f32> = (0..DIM).map(|_| rng.normal()).collect();
    let unique = (c * PER_COMMIT + j) as u32 + 100;
    Document::new(format!("c{c}-{j}"))
        .title(format!("커밋 {c}"))
        .text(format!(
            "문서 c{c}x{j} 내용 {}",
            "반복 ".repeat((j + 1) as usize)
        ))
        .dense(dense)
        .sparse(SparseVector::new(vec![1, unique], vec![0.1, 2.0]).unwrap())
        .colbert(tokens(c, j))
}

/// Two normalized 4-d token vectors of document `j` of commit `c`.
pub fn tokens(c: u64, j: u64) -> Vec<f32> {
    let mut rng = super::Rng::new(c * 7919 + j);
    let mut t: Vec<f32> = (0..8).map(|_| rng.normal()).collect();
    for row in t.chunks_mut(4) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    t
}

/// Asserts every document of commit `c` is stored with its content and found by every leg.
pub fn check_commit_visible(db: &Database, c: u64) {
    for j in 0..PER_COMMIT {
        let id = format!("c{c}-{j}");
        let want = document(c, j);
        let got = db.get(&id).unwrap().unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(
            got.text,
            format!("문서 c{c}x{j} 내용 {}", "반복 ".repeat((j + 1) as usize))
        );
        let top = |q: Query| {
            db.search(&q.k(1).fetch_documents(false)).unwrap()[0]
                .id
                .clone()
        };
        assert_eq!(
            top(Query::new().text(format!("c{c}x{j}")).legs(&[Leg::Bm25])),
            id
        );
        let unique = (c * PER_COMMIT + j) as u32 + 100;
        let sq = SparseVector::new(vec![unique], vec![1.0]).unwrap();
        assert_eq!(top(Query::new().sparse(sq).legs(&[Leg::Sparse])), id);
        // ColBERT: the document's own tokens give MaxSim 1 (f16 storage, bf16 products).
        let hit = &db
            .search(
                &Query::new()
                    .text(format!("c{c}x{j}"))
                    .colbert(tokens(c, j))
                    .k(1),
            )
            .unwrap()[0];
        assert_eq!(hit.id, id);
        let colbert = hit.legs.iter().find(|l| l.leg == Leg::Colbert).unwrap();
        assert!(
            (colbert.score - 1.0).abs() < 1e-2,
            "colbert {}",
            colbert.score
        );
        let v = want.dense_vector().unwrap().to_vec();
        for mode in [DenseMode::Exact, DenseMode::Approximate] {
            let q = Query::new()
                .dense(v.clone())
                .legs(&[Leg::Dense])
                .dense_mode(mode);
            assert_eq!(top(q), id, "dense {mode:?}");
        }
    }
}
