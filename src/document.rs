//! Documents as the caller writes them, and their validation.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Sparse lexical weights: ascending token ids, each with a finite weight. Deserializing checks
/// the same rules as [`SparseVector::new`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSparse")]
pub struct SparseVector {
    indices: Vec<u32>,
    values: Vec<f32>,
}

/// The serialized form of [`SparseVector`], checked on the way in.
#[derive(Deserialize)]
struct RawSparse {
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl TryFrom<RawSparse> for SparseVector {
    type Error = Error;
    fn try_from(r: RawSparse) -> Result<Self> {
        SparseVector::new(r.indices, r.values)
    }
}

impl SparseVector {
    /// Checks that the lengths agree, ids are strictly ascending and weights are finite.
    pub fn new(indices: Vec<u32>, values: Vec<f32>) -> Result<Self> {
        let v = SparseVector { indices, values };
        v.check().map_err(Error::invalid)?;
        Ok(v)
    }

    /// The checks of [`SparseVector::new`], for callers that take a vector from outside.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let (indices, values) = (&self.indices, &self.values);
        if indices.len() != values.len() {
            return Err(format!(
                "sparse vector has {} indices but {} values",
                indices.len(),
                values.len()
            ));
        }
        if let Some(w) = indices.windows(2).position(|w| w[0] >= w[1]) {
            return Err(format!(
                "sparse indices must be strictly ascending: {} then {} at position {}",
                indices[w],
                indices[w + 1],
                w + 1
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "sparse value {} at position {i} is not finite",
                values[i]
            ));
        }
        Ok(())
    }

    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Dot product with another sparse vector (ids present in both; an id without a value
    /// counts as absent).
    pub fn dot(&self, other: &SparseVector) -> f32 {
        let mut a = self.indices.iter().zip(&self.values);
        let mut b = other.indices.iter().zip(&other.values);
        let (mut x, mut y, mut sum) = (a.next(), b.next(), 0.0f32);
        while let (Some((i, v)), Some((j, w))) = (x, y) {
            match i.cmp(j) {
                std::cmp::Ordering::Less => x = a.next(),
                std::cmp::Ordering::Greater => y = b.next(),
                std::cmp::Ordering::Equal => {
                    sum += v * w;
                    x = a.next();
                    y = b.next();
                }
            }
        }
        sum
    }
}

/// Longest valid document id, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 512;

/// Why `id` is not a valid document id, or `None` when it is one. A valid id is non-empty, at
/// most [`MAX_ID_BYTES`] bytes long, and has no whitespace and no control characters.
pub(crate) fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("is empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Some(format!(
            "is {} bytes long; ids are at most {MAX_ID_BYTES} bytes",
            id.len()
        ));
    }
    let (at, c) = id
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())?;
    let what = if c.is_control() {
        "a control character"
    } else {
        "whitespace"
    };
    Some(format!(
        "contains {what} (U+{:04X} at byte {at}); ids have no whitespace or control characters",
        c as u32
    ))
}

/// `id` quoted with its control characters escaped, cut short when it is long.
pub(crate) fn show_id(id: &str) -> String {
    const SHOWN: usize = 64;
    match id.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{:?}...", &id[..end]),
        None => format!("{id:?}"),
    }
}

/// A document to write: an external id, text, JSON metadata and optional vectors.
///
/// A valid id is non-empty, at most [`MAX_ID_BYTES`] bytes long, and contains no whitespace and
/// no control characters; [`Writer::upsert`](crate::Writer::upsert) rejects any other.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) text: String,
    pub(crate) metadata: serde_json::Value,
    pub(crate) dense: Option<Vec<f32>>,
    pub(crate) sparse: Option<SparseVector>,
    pub(crate) colbert: Option<Vec<f32>>,
}

impl Document {
    pub fn new(id: impl Into<String>) -> Self {
        Document {
            id: id.into(),
            title: String::new(),
            text: String::new(),
            metadata: serde_json::Value::Null,
            dense: None,
            sparse: None,
            colbert: None,
        }
    }

    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }

    /// JSON metadata: an object (or null for none).
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }

    pub fn dense(mut self, vector: Vec<f32>) -> Self {
        self.dense = Some(vector);
        self
    }

    pub fn sparse(mut self, vector: SparseVector) -> Self {
        self.sparse = Some(vector);
        self
    }

    /// ColBERT token vectors, row-major (tokens × the schema's ColBERT dimension).
    pub fn colbert(mut self, tokens: Vec<f32>) -> Self {
        self.colbert = Some(tokens);
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dense_vector(&self) -> Option<&[f32]> {
        self.dense.as_deref()
    }

    pub fn sparse_vector(&self) -> Option<&SparseVector> {
        self.sparse.as_ref()
    }
}

/// Checks a dense vector's dimension and values; `what` names it in errors.
pub(crate) fn check_dense(v: &[f32], dim: usize, what: &str) -> Result<()> {
    if v.len() != dim {
        return Err(Error::invalid(format!(
            "{what} has dimension {} but the schema expects {dim}",
            v.len()
        )));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "{what} has a non-finite value {} at position {i}",
            v[i]
        )));
    }
    Ok(())
}

/// Checks a row-major block of token vectors: a whole number of `dim`-sized rows, all finite.
pub(crate) fn check_tokens(t: &[f32], dim: usize, what: &str) -> Result<()> {
    if t.is_empty() || !t.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "{what} hold {} values, not a positive multiple of the dimension {dim}",
            t.len()
        )));
    }
    if let Some(i) = t.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "{what} have a non-finite value {} at token {}, position {}",
            t[i],
            i / dim,
            i % dim
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_validation() {
        assert!(SparseVector::new(vec![1, 2], vec![0.5]).is_err());
        assert!(SparseVector::new(vec![2, 2], vec![0.5, 0.1]).is_err());
        assert!(SparseVector::new(vec![3, 2], vec![0.5, 0.1]).is_err());
        assert!(SparseVector::new(vec![1], vec![f32::NAN]).is_err());
        let a = SparseVector::new(vec![1, 4, 9], vec![1.0, 2.0, 3.0]).unwrap();
        let b = SparseVector::new(vec![0, 4, 9, 12], vec![5.0, 0.5, 2.0, 1.0]).unwrap();
        assert_eq!(a.dot(&b), 2.0 * 0.5 + 3.0 * 2.0);
    }

    #[test]
    fn id_rule() {
        for ok in ["a", "문서-1", "x/y:z#1", &"é".repeat(MAX_ID_BYTES / 2)] {
            assert_eq!(id_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a\tb",
            "tail\n",
            "nul\0",
            "\u{1b}[31m",
            "nbsp\u{a0}",
            "\u{85}",
            &"x".repeat(MAX_ID_BYTES + 1),
        ] {
            assert!(id_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(show_id("a\u{1b}[0m\0"), r#""a\u{1b}[0m\0""#);
        assert_eq!(
            show_id(&"y".repeat(100)),
            format!("{:?}...", "y".repeat(64))
        );
    }

    #[test]
    fn sparse_deserialization_checks_like_new() {
        let parse = |j: &str| serde_json::from_str::<SparseVector>(j);
        let ok = parse(r#"{"indices":[1,4],"values":[0.5,2.0]}"#).unwrap();
        assert_eq!(ok, SparseVector::new(vec![1, 4], vec![0.5, 2.0]).unwrap());
        for bad in [
            r#"{"indices":[4,1],"values":[0.5,2.0]}"#,
            r#"{"indices":[4,4],"values":[0.5,2.0]}"#,
            r#"{"indices":[1,4],"values":[0.5]}"#,
            r#"{"indices":[1],"values":[0.5,2.0]}"#,
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("sparse"), "{bad}: {e}");
        }
        // Postcard (the store's encoding) goes through the same checks.
        let raw = postcard::to_allocvec(&(vec![9u32, 2], vec![1.0f32, f32::NAN])).unwrap();
        assert!(postcard::from_bytes::<SparseVector>(&raw).is_err());
        let raw = postcard::to_allocvec(&(vec![2u32, 9], vec![1.0f32, 3.0])).unwrap();
        let v: SparseVector = postcard::from_bytes(&raw).unwrap();
        assert_eq!(v.indices(), [2, 9]);
    }

    #[test]
    fn dot_of_mismatched_lengths_does_not_panic() {
        let short = SparseVector {
            indices: vec![1, 2, 3],
            values: vec![1.0],
        };
        let full = SparseVector::new(vec![1, 2, 3], vec![2.0, 2.0, 2.0]).unwrap();
        assert_eq!(short.dot(&full), 2.0);
        assert_eq!(full.dot(&short), 2.0);
    }

    /// A vector that skipped the checks (as serde once allowed) is refused by `upsert`, and
    /// the database stays usable.
    #[test]
    fn upsert_rechecks_sparse_vectors() {
        use crate::{Database, Query, Schema};
        let dir = tempfile::tempdir().unwrap();
        let schema = Schema::new().sparse().text();
        let bad = [
            SparseVector {
                indices: vec![7, 3],
                values: vec![1.0, 1.0],
            },
            SparseVector {
                indices: vec![3, 7],
                values: vec![1.0],
            },
            SparseVector {
                indices: vec![3],
                values: vec![f32::INFINITY],
            },
        ];
        {
            let db = Database::open_or_create(dir.path(), schema.clone()).unwrap();
            let mut w = db.writer().unwrap();
            for v in &bad {
                let doc = Document::new("x").text("x").sparse(v.clone());
                match w.upsert(doc) {
                    Err(Error::InvalidDocument { id, .. }) => assert_eq!(id, "x"),
                    other => panic!("{v:?}: expected InvalidDocument, got {other:?}"),
                }
                let q = Query::new().sparse(v.clone());
                assert!(
                    matches!(db.search(&q), Err(Error::InvalidInput(_))),
                    "{v:?}"
                );
            }
            let good = SparseVector::new(vec![3, 7], vec![1.0, 2.0]).unwrap();
            w.upsert(Document::new("y").text("y").sparse(good)).unwrap();
            w.commit().unwrap();
        }
        let db = Database::open(dir.path()).unwrap();
        assert_eq!(db.len(), 1);
        let q = Query::new().sparse(SparseVector::new(vec![7], vec![1.0]).unwrap());
        let hits = db.search(&q).unwrap();
        assert_eq!((hits[0].id.as_str(), hits[0].score), ("y", 2.0));
    }

    #[test]
    fn dense_validation() {
        assert!(check_dense(&[1.0, 2.0], 3, "v").is_err());
        assert!(check_dense(&[1.0, f32::INFINITY, 0.0], 3, "v").is_err());
        assert!(check_dense(&[1.0, 2.0, 0.0], 3, "v").is_ok());
    }
}
