//! The retrieval dataset layout (`/work/shared/datasets/README.md`): a folder
//! with `corpus.jsonl`, `queries.jsonl`, optional dense `.npy` matrices and
//! optional `.sparse.jsonl` files, where line/row `i` of each file describes
//! the same document or query.
//!
//! Readers check JSON types and report the first problem on a line as
//! [`Error::Parse`] with the file, the 1-based line number and the field
//! (`"json"` for a line that is not a JSON object, or one that repeats a key).
//! A UTF-8 byte order mark at the start of a file is skipped. [`read_documents`]
//! also checks what needs the whole input: repeated ids, sparse index order,
//! and that dense vectors are finite and of one dimension.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::document::{Document, SparseVector, id_problem, show_id};
use crate::error::{Error, Result};

/// One corpus document.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DocRecord {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
    /// A JSON object, or `Null` when the line has none.
    #[serde(default)]
    pub metadata: Value,
}

/// One query with its relevance judgements.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueryRecord {
    pub id: String,
    pub text: String,
    /// Ids of the documents that contain the answer.
    #[serde(default)]
    pub relevant: Vec<String>,
    #[serde(default)]
    pub answers: Vec<String>,
}

/// A sparse vector: parallel `indices` and `values` (same length).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct SparseRecord {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// One line of a corpus file: the document plus any vectors given inline.
#[derive(Debug, Clone, PartialEq)]
pub struct DocLine {
    /// 1-based line number in the file.
    pub line: usize,
    pub doc: DocRecord,
    /// From a `"dense": [f32, ...]` field.
    pub dense: Option<Vec<f32>>,
    /// From a `"sparse": {"indices": [...], "values": [...]}` field.
    pub sparse: Option<SparseRecord>,
}

/// Paths of the files of one dataset folder.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetDir {
    pub root: PathBuf,
}

impl DatasetDir {
    /// Wraps `root` without touching the disk.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DatasetDir { root: root.into() }
    }

    /// Like [`DatasetDir::new`], but fails unless `root/corpus.jsonl` exists.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let dir = Self::new(root);
        if !dir.corpus().is_file() {
            return Err(Error::invalid(format!(
                "{} is not a dataset folder: it has no corpus.jsonl",
                dir.root.display()
            )));
        }
        Ok(dir)
    }

    /// Name of the dataset: the folder's last component.
    pub fn name(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn corpus(&self) -> PathBuf {
        self.root.join("corpus.jsonl")
    }

    pub fn queries(&self) -> PathBuf {
        self.root.join("queries.jsonl")
    }

    /// `dataset.json`, the manifest with name, source and counts.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("dataset.json")
    }

    pub fn corpus_dense(&self) -> Option<PathBuf> {
        self.existing("corpus.dense.npy")
    }

    pub fn queries_dense(&self) -> Option<PathBuf> {
        self.existing("queries.dense.npy")
    }

    pub fn corpus_sparse(&self) -> Option<PathBuf> {
        self.existing("corpus.sparse.jsonl")
    }

    pub fn queries_sparse(&self) -> Option<PathBuf> {
        self.existing("queries.sparse.jsonl")
    }

    /// The corpus as documents ready to write, with their dense rows and sparse vectors.
    pub fn documents(&self) -> Result<Vec<Document>> {
        let mut docs = read_documents(
            &self.corpus(),
            self.corpus_dense().as_deref(),
            self.corpus_sparse().as_deref(),
        )?;
        if let Some((tokens, offsets)) = self.corpus_colbert() {
            let tv = TokenVectors::read(&tokens, &offsets)?;
            if tv.len() != docs.len() {
                return Err(Error::invalid(format!(
                    "{} describes {} texts but the corpus has {} documents",
                    offsets.display(),
                    tv.len(),
                    docs.len()
                )));
            }
            if let Some(at) = tv.tokens.data.iter().position(|x| !x.is_finite()) {
                let dim = tv.tokens.dim;
                return Err(Origin::Row(&tokens, at / dim).error(
                    "colbert",
                    format!(
                        "value {} at position {} is not finite",
                        tv.tokens.data[at],
                        at % dim
                    ),
                ));
            }
            docs = docs
                .into_iter()
                .enumerate()
                .map(|(i, d)| match tv.get(i) {
                    Some(t) if !t.is_empty() => d.colbert(t.to_vec()),
                    _ => d,
                })
                .collect();
        }
        Ok(docs)
    }

    /// `corpus.colbert.npy` and `corpus.colbert.offsets.npy`, when both exist.
    pub fn corpus_colbert(&self) -> Option<(PathBuf, PathBuf)> {
        Some((
            self.existing("corpus.colbert.npy")?,
            self.existing("corpus.colbert.offsets.npy")?,
        ))
    }

    /// `queries.colbert.npy` and `queries.colbert.offsets.npy`, when both exist.
    pub fn queries_colbert(&self) -> Option<(PathBuf, PathBuf)> {
        Some((
            self.existing("queries.colbert.npy")?,
            self.existing("queries.colbert.offsets.npy")?,
        ))
    }

    fn existing(&self, name: &str) -> Option<PathBuf> {
        let p = self.root.join(name);
        p.is_file().then_some(p)
    }
}

/// Token vectors of many texts: rows `offsets[i]..offsets[i + 1]` of `tokens` belong to text i.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenVectors {
    pub tokens: crate::npy::Matrix,
    pub offsets: Vec<i64>,
}

impl TokenVectors {
    /// Reads a `[total_tokens, dim]` float32 .npy and its int64 `[texts + 1]` offsets, checking
    /// that the offsets start at 0, never decrease and end at the row count.
    pub fn read(tokens: &Path, offsets: &Path) -> Result<TokenVectors> {
        let matrix = crate::npy::read_f32_matrix(tokens)?;
        let offs = crate::npy::read_i64_vector(offsets)?;
        let bad = |reason: String| Error::corrupted(offsets, reason);
        if offs.first() != Some(&0) {
            return Err(bad("offsets must start at 0".into()));
        }
        if let Some(i) = offs.windows(2).position(|w| w[1] < w[0]) {
            return Err(bad(format!("offsets decrease at position {}", i + 1)));
        }
        let last = offs.last().copied().unwrap_or(0);
        if i64::try_from(matrix.rows).ok() != Some(last) {
            return Err(bad(format!(
                "offsets end at {last} but {} has {} rows",
                tokens.display(),
                matrix.rows
            )));
        }
        Ok(TokenVectors {
            tokens: matrix,
            offsets: offs,
        })
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Text i's token vectors, row-major.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        let (a, b) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        let dim = self.tokens.dim;
        self.tokens
            .data
            .get(usize::try_from(a).ok()? * dim..usize::try_from(b).ok()? * dim)
    }
}

/// Where a value was read: a line of a JSONL file (1-based) or a row of a .npy file (0-based).
#[derive(Clone, Copy)]
enum Origin<'a> {
    Line(&'a Path, usize),
    Row(&'a Path, usize),
}

impl Origin<'_> {
    fn error(self, field: &str, reason: String) -> Error {
        match self {
            Origin::Line(path, line) => Error::Parse {
                path: path.to_path_buf(),
                line,
                field: field.to_string(),
                reason,
            },
            Origin::Row(path, row) => {
                Error::invalid(format!("{} row {row}: {field}: {reason}", path.display()))
            }
        }
    }
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Line(path, line) => write!(f, "{}:{line}", path.display()),
            Origin::Row(path, row) => write!(f, "{} row {row}", path.display()),
        }
    }
}

/// Reads a corpus JSONL file into documents, attaching row i of `dense` (.npy) and line i of
/// `sparse` (.jsonl) to document i. Vectors inline in the corpus lines win over the side files.
/// Every line is parsed and checked before anything is returned: besides what
/// [`read_docs_jsonl`] checks, no id may appear twice, sparse indices must ascend, and every
/// dense vector must be finite and have the dimension of the first. Errors name the file and
/// the line (or the .npy row) the problem was read from.
pub fn read_documents(
    corpus: &Path,
    dense: Option<&Path>,
    sparse: Option<&Path>,
) -> Result<Vec<Document>> {
    let lines: Vec<DocLine> = read_docs_jsonl(corpus)?.collect::<Result<_>>()?;
    let mut first_line: HashMap<&str, usize> = HashMap::with_capacity(lines.len());
    for l in &lines {
        match first_line.entry(&l.doc.id) {
            Entry::Occupied(first) => {
                return Err(Origin::Line(corpus, l.line).error(
                    "id",
                    format!(
                        "duplicate id {}: first on line {}",
                        show_id(&l.doc.id),
                        first.get()
                    ),
                ));
            }
            Entry::Vacant(v) => {
                v.insert(l.line);
            }
        }
    }
    drop(first_line);
    let dense_file = dense;
    let dense = dense.map(crate::npy::read_f32_matrix).transpose()?;
    let sparse_file = sparse;
    let sparse: Option<Vec<(usize, SparseRecord)>> = match sparse {
        Some(p) => {
            let mut reader = read_sparse_jsonl(p)?;
            let mut records = Vec::new();
            while let Some(record) = reader.next() {
                records.push((reader.lines.line, record?));
            }
            Some(records)
        }
        None => None,
    };
    let mismatch = |file: &Path, what: &str, n: usize| {
        Error::invalid(format!(
            "{} has {n} {what} but {} has {} documents",
            file.display(),
            corpus.display(),
            lines.len()
        ))
    };
    if let (Some(m), Some(p)) = (&dense, dense_file)
        && m.rows != lines.len()
    {
        return Err(mismatch(p, "rows", m.rows));
    }
    if let (Some(s), Some(p)) = (&sparse, sparse_file)
        && s.len() != lines.len()
    {
        return Err(mismatch(p, "vectors", s.len()));
    }
    let mut first_dense: Option<(usize, String)> = None;
    let mut docs = Vec::with_capacity(lines.len());
    for (i, l) in lines.into_iter().enumerate() {
        let here = Origin::Line(corpus, l.line);
        let mut doc = Document::new(l.doc.id)
            .title(l.doc.title)
            .text(l.doc.text)
            .metadata(l.doc.metadata);
        let row = match (l.dense, &dense, dense_file) {
            (Some(v), _, _) => Some((v, here)),
            (None, Some(m), Some(p)) => m.row(i).map(|r| (r.to_vec(), Origin::Row(p, i))),
            _ => None,
        };
        if let Some((v, from)) = row {
            if v.is_empty() {
                return Err(from.error("dense", "the vector is empty".into()));
            }
            if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                return Err(from.error(
                    "dense",
                    format!("value {} at position {j} is not finite", v[j]),
                ));
            }
            match &first_dense {
                None => first_dense = Some((v.len(), from.to_string())),
                Some((dim, first)) if *dim != v.len() => {
                    return Err(from.error(
                        "dense",
                        format!("dimension {} but {first} has dimension {dim}", v.len()),
                    ));
                }
                Some(_) => {}
            }
            doc = doc.dense(v);
        }
        let side = match (&sparse, sparse_file) {
            (Some(s), Some(p)) => s
                .get(i)
                .map(|(line, r)| (r.clone(), Origin::Line(p, *line))),
            _ => None,
        };
        let vector = match l.sparse {
            Some(s) => Some((s, here, "sparse.indices")),
            None => side.map(|(s, from)| (s, from, "indices")),
        };
        if let Some((s, from, field)) = vector {
            let v = SparseVector::new(s.indices, s.values).map_err(|e| {
                from.error(
                    field,
                    match e {
                        Error::InvalidInput(m) => m,
                        e => e.to_string(),
                    },
                )
            })?;
            doc = doc.sparse(v);
        }
        docs.push(doc);
    }
    Ok(docs)
}

/// Reads non-blank lines of a file, numbering them from 1.
struct Lines {
    path: PathBuf,
    reader: BufReader<File>,
    line: usize,
    buf: Vec<u8>,
    done: bool,
}

impl Lines {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Lines {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            line: 0,
            buf: Vec::new(),
            done: false,
        })
    }

    fn parse_err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::Parse {
            path: self.path.clone(),
            line: self.line,
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// The next non-blank line as a JSON object whose objects repeat no key. An I/O error ends
    /// the stream.
    fn next_object(&mut self) -> Option<Result<Map<String, Value>>> {
        while !self.done {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line += 1;
                    let Ok(text) = std::str::from_utf8(&self.buf) else {
                        return Some(Err(self.parse_err("json", "line is not valid UTF-8")));
                    };
                    let text = match self.line {
                        1 => text.strip_prefix('\u{feff}').unwrap_or(text),
                        _ => text,
                    };
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    return Some(match serde_json::from_str::<Strict>(text) {
                        Ok(Strict(Value::Object(map))) => Ok(map),
                        Ok(_) => Err(self.parse_err("json", "line is not a JSON object")),
                        Err(e) => Err(self.parse_err("json", json_reason(&e))),
                    });
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(Error::io(&self.path, e)));
                }
            }
        }
        None
    }
}

/// serde_json's message without its position, plus the column: each line is parsed alone, so
/// its "line 1" would mislead.
fn json_reason(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&position) {
        Some(m) => format!("{m} at column {}", e.column()),
        None => message,
    }
}

/// A JSON value in which no object repeats a key (serde_json's own `Value` keeps the last).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> std::result::Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> std::result::Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, x: f64) -> std::result::Result<Value, E> {
        Ok(serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> std::result::Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {key:?}"
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Iterator over the lines of a corpus file; see [`read_docs_jsonl`].
pub struct DocReader {
    lines: Lines,
}

impl Iterator for DocReader {
    type Item = Result<DocLine>;

    fn next(&mut self) -> Option<Self::Item> {
        let map = match self.lines.next_object()? {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        let line = self.lines.line;
        Some(
            parse_doc(&map)
                .map(|d| DocLine { line, ..d })
                .map_err(|(f, r)| self.lines.parse_err(&f, r)),
        )
    }
}

/// Iterator over the lines of a `.sparse.jsonl` file; see [`read_sparse_jsonl`].
pub struct SparseReader {
    lines: Lines,
}

impl Iterator for SparseReader {
    type Item = Result<SparseRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let map = match self.lines.next_object()? {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        Some(parse_sparse(&map, "").map_err(|(f, r)| self.lines.parse_err(&f, r)))
    }
}

/// Streams a corpus file. Each line is an object with `id` (a valid document
/// id, see [`Document`]; required), `text` (string, required, may be empty),
/// and optional `title` (string), `metadata` (object), `dense` and `sparse`;
/// `null` counts as absent and unknown fields are ignored. Blank lines are
/// skipped. After a parse error the iterator goes on with the next line; after
/// an I/O error it ends. Repeated ids are not checked here (see [`read_documents`]).
pub fn read_docs_jsonl(path: &Path) -> Result<DocReader> {
    Ok(DocReader {
        lines: Lines::open(path)?,
    })
}

/// Streams a `.sparse.jsonl` file of `{"indices": [u32], "values": [f32]}` lines.
pub fn read_sparse_jsonl(path: &Path) -> Result<SparseReader> {
    Ok(SparseReader {
        lines: Lines::open(path)?,
    })
}

/// Reads a whole queries file: `id` and `text` required, `relevant` and
/// `answers` optional lists of strings (empty when absent). Query ids follow the rule for
/// document ids (see [`Document`]), so that they can be written to a TREC run.
pub fn read_queries(path: &Path) -> Result<Vec<QueryRecord>> {
    let mut lines = Lines::open(path)?;
    let mut out = Vec::new();
    // A repeated query id would merge two queries' lines of a TREC run.
    let mut first_line: HashMap<String, usize> = HashMap::new();
    while let Some(map) = lines.next_object() {
        let map = map?;
        let query = parse_query(&map).map_err(|(f, r)| lines.parse_err(&f, r))?;
        if let Some(first) = first_line.insert(query.id.clone(), lines.line) {
            let why = format!("duplicate id {}: first on line {first}", show_id(&query.id));
            return Err(lines.parse_err("id", why));
        }
        out.push(query);
    }
    Ok(out)
}

/// A field error: (field, reason).
type FieldResult<T> = std::result::Result<T, (String, String)>;

fn field_err<T>(field: &str, reason: impl Into<String>) -> FieldResult<T> {
    Err((field.to_string(), reason.into()))
}

/// Present and not null.
fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn id_field(map: &Map<String, Value>) -> FieldResult<String> {
    match map.get("id") {
        None | Some(Value::Null) => field_err("id", "missing"),
        Some(Value::String(s)) => match id_problem(s) {
            Some(why) => field_err("id", format!("{} {why}", show_id(s))),
            None => Ok(s.clone()),
        },
        Some(v) => field_err("id", format!("expected a string, found {}", kind(v))),
    }
}

fn string_field(map: &Map<String, Value>, key: &str, required: bool) -> FieldResult<String> {
    match get(map, key) {
        None if required => field_err(key, "missing"),
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => field_err(key, format!("expected a string, found {}", kind(v))),
    }
}

fn string_list(map: &Map<String, Value>, key: &str) -> FieldResult<Vec<String>> {
    match get(map, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                v => field_err(
                    key,
                    format!("item {i}: expected a string, found {}", kind(v)),
                ),
            })
            .collect(),
        Some(v) => field_err(key, format!("expected an array, found {}", kind(v))),
    }
}

/// A JSON array of numbers as finite f32 values.
fn f32_list(v: &Value, field: &str) -> FieldResult<Vec<f32>> {
    let Value::Array(items) = v else {
        return field_err(field, format!("expected an array, found {}", kind(v)));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_f64() {
            Some(x) if (x as f32).is_finite() => Ok(x as f32),
            Some(x) => field_err(field, format!("item {i}: {x} is not a finite f32")),
            None => field_err(
                field,
                format!("item {i}: expected a number, found {}", kind(v)),
            ),
        })
        .collect()
}

fn u32_list(v: &Value, field: &str) -> FieldResult<Vec<u32>> {
    let Value::Array(items) = v else {
        return field_err(field, format!("expected an array, found {}", kind(v)));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64().and_then(|x| u32::try_from(x).ok()).map_or_else(
                || field_err(field, format!("item {i}: {v} is not a u32")),
                Ok,
            )
        })
        .collect()
}

/// Parses `indices`/`values` from `map`; `prefix` is prepended to field names.
fn parse_sparse(map: &Map<String, Value>, prefix: &str) -> FieldResult<SparseRecord> {
    let fi = format!("{prefix}indices");
    let fv = format!("{prefix}values");
    let indices = match get(map, "indices") {
        Some(v) => u32_list(v, &fi)?,
        None => return field_err(&fi, "missing"),
    };
    let values = match get(map, "values") {
        Some(v) => f32_list(v, &fv)?,
        None => return field_err(&fv, "missing"),
    };
    if indices.len() != values.len() {
        return field_err(
            &fv,
            format!("{} values for {} indices", values.len(), indices.len()),
        );
    }
    Ok(SparseRecord { indices, values })
}

fn parse_doc(map: &Map<String, Value>) -> FieldResult<DocLine> {
    let id = id_field(map)?;
    let title = string_field(map, "title", false)?;
    let text = string_field(map, "text", true)?;
    let metadata = match map.get("metadata") {
        None | Some(Value::Null) => Value::Null,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(v) => return field_err("metadata", format!("expected an object, found {}", kind(v))),
    };
    let dense = get(map, "dense")
        .map(|v| f32_list(v, "dense"))
        .transpose()?;
    let sparse = match get(map, "sparse") {
        None => None,
        Some(Value::Object(m)) => Some(parse_sparse(m, "sparse.")?),
        Some(v) => return field_err("sparse", format!("expected an object, found {}", kind(v))),
    };
    Ok(DocLine {
        line: 0,
        doc: DocRecord {
            id,
            title,
            text,
            metadata,
        },
        dense,
        sparse,
    })
}

fn parse_query(map: &Map<String, Value>) -> FieldResult<QueryRecord> {
    Ok(QueryRecord {
        id: id_field(map)?,
        text: string_field(map, "text", true)?,
        relevant: string_list(map, "relevant")?,
        answers: string_list(map, "answers")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Asserts a Parse error at `line` on `field`.
    fn parse_error<T: std::fmt::Debug>(r: Result<T>, want_line: usize, want_field: &str) {
        match r {
            Err(Error::Parse { line, field, .. }) => {
                assert_eq!((line, field.as_str()), (want_line, want_field))
            }
            other => panic!("expected parse error at {want_line}/{want_field}, got {other:?}"),
        }
    }

    #[test]
    fn docs_with_inline_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.jsonl",
            concat!(
                r#"{"id": "a", "title": "제목", "text": "본문", "metadata": {"year": 2020}}"#,
                "\n\n   \n",
                r#"{"id": "b", "text": "", "title": null, "dense": [0.5, -1, 2e-3],"#,
                r#" "sparse": {"indices": [3, 7], "values": [0.25, 1.0]}, "extra": 1}"#,
                "\n",
            ),
        );
        let docs: Vec<DocLine> = read_docs_jsonl(&p).unwrap().map(|d| d.unwrap()).collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 1);
        assert_eq!(docs[0].doc.title, "제목");
        assert_eq!(docs[0].doc.metadata, serde_json::json!({"year": 2020}));
        assert_eq!(
            (docs[0].dense.as_ref(), docs[0].sparse.as_ref()),
            (None, None)
        );
        assert_eq!(docs[1].line, 4);
        assert_eq!(docs[1].doc.title, "");
        assert_eq!(docs[1].doc.metadata, Value::Null);
        assert_eq!(docs[1].dense, Some(vec![0.5, -1.0, 0.002]));
        let sparse = docs[1].sparse.as_ref().unwrap();
        assert_eq!(
            (sparse.indices.as_slice(), sparse.values.as_slice()),
            (&[3u32, 7][..], &[0.25f32, 1.0][..])
        );
    }

    #[test]
    fn doc_errors_name_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (r#"{"id": "a", "text": "x""#, "json"),
            ("[1, 2]", "json"),
            (r#"{"text": "x"}"#, "id"),
            (r#"{"id": 7, "text": "x"}"#, "id"),
            (r#"{"id": "", "text": "x"}"#, "id"),
            (r#"{"id": "a b", "text": "x"}"#, "id"),
            (r#"{"id": "a\u0000", "text": "x"}"#, "id"),
            (r#"{"id": "a", "text": "x", "id": "b"}"#, "json"),
            (
                r#"{"id": "a", "text": "x", "metadata": {"k": 1, "k": 2}}"#,
                "json",
            ),
            (r#"{"id": "a"}"#, "text"),
            (r#"{"id": "a", "text": 3}"#, "text"),
            (r#"{"id": "a", "text": "x", "title": ["t"]}"#, "title"),
            (r#"{"id": "a", "text": "x", "metadata": "m"}"#, "metadata"),
            (r#"{"id": "a", "text": "x", "metadata": [1]}"#, "metadata"),
            (r#"{"id": "a", "text": "x", "dense": [1, "2"]}"#, "dense"),
            (r#"{"id": "a", "text": "x", "dense": [1e50]}"#, "dense"),
            (r#"{"id": "a", "text": "x", "sparse": [1]}"#, "sparse"),
            (
                r#"{"id": "a", "text": "x", "sparse": {"indices": [-1], "values": [1]}}"#,
                "sparse.indices",
            ),
            (
                r#"{"id": "a", "text": "x", "sparse": {"indices": [1], "values": []}}"#,
                "sparse.values",
            ),
            (
                r#"{"id": "a", "text": "x", "sparse": {"values": []}}"#,
                "sparse.indices",
            ),
        ];
        for (line, field) in cases {
            // A good line and a blank line first, so the bad one is line 3.
            let text = format!("{{\"id\": \"ok\", \"text\": \"\"}}\n\n{line}\n");
            let p = write(dir.path(), "bad.jsonl", &text);
            let mut it = read_docs_jsonl(&p).unwrap();
            assert!(it.next().unwrap().is_ok());
            parse_error(it.next().unwrap(), 3, field);
            assert!(it.next().is_none(), "{line}");
        }
        let p = write(dir.path(), "utf.jsonl", "");
        std::fs::write(&p, b"{\"id\": \"\xff\", \"text\": \"\"}\n").unwrap();
        parse_error(read_docs_jsonl(&p).unwrap().next().unwrap(), 1, "json");
        assert!(matches!(
            read_docs_jsonl(&dir.path().join("missing.jsonl")),
            Err(Error::Io { .. })
        ));
    }

    /// The reason of a Parse error at `line` on `field`.
    fn parse_reason<T: std::fmt::Debug>(r: Result<T>, line: usize, field: &str) -> String {
        match r {
            Err(Error::Parse {
                line: l,
                field: f,
                reason,
                ..
            }) if (l, f.as_str()) == (line, field) => reason,
            other => panic!("expected parse error at {line}/{field}, got {other:?}"),
        }
    }

    #[test]
    fn repeated_ids_and_keys_name_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.jsonl",
            "{\"id\": \"g0\", \"text\": \"\"}\n{\"id\": \"g1\", \"text\": \"\"}\n\n\
             {\"id\": \"g2\", \"text\": \"\"}\n{\"id\": \"g1\", \"text\": \"x\"}\n",
        );
        let reason = parse_reason(read_documents(&p, None, None), 5, "id");
        assert!(
            reason.contains(r#""g1""#) && reason.contains("line 2"),
            "{reason}"
        );
        let p = write(
            dir.path(),
            "q.jsonl",
            "{\"id\": \"q1\", \"text\": \"a\"}\n{\"id\": \"q1\", \"text\": \"b\"}\n",
        );
        let reason = parse_reason(read_queries(&p), 2, "id");
        assert!(reason.contains("first on line 1"), "{reason}");

        let p = write(
            dir.path(),
            "k.jsonl",
            "{\"id\": \"a\", \"text\": \"\", \"metadata\": {\"m\": {\"x\": 1, \"x\": 2}}}\n",
        );
        let reason = parse_reason(read_documents(&p, None, None), 1, "json");
        assert!(reason.contains(r#"duplicate key "x""#), "{reason}");
        // serde_json's "line 1" would point at the wrong line of the file.
        assert!(!reason.contains("line 1"), "{reason}");
        let p = write(
            dir.path(),
            "s.jsonl",
            "{\"indices\": [1], \"values\": [1], \"values\": [2]}\n",
        );
        parse_error(read_sparse_jsonl(&p).unwrap().next().unwrap(), 1, "json");
        let p = write(
            dir.path(),
            "q.jsonl",
            "{\"id\": \"q\", \"text\": \"t\", \"text\": \"u\"}\n",
        );
        parse_error(read_queries(&p), 1, "json");
    }

    #[test]
    fn ids_follow_the_document_id_rule() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.jsonl",
            "{\"id\": \"ok\", \"text\": \"\"}\n{\"id\": \"a\\u0000\\u001b[2J\", \"text\": \"\"}\n",
        );
        let reason = parse_reason(read_documents(&p, None, None), 2, "id");
        assert!(reason.contains(r#""a\0\u{1b}[2J""#), "{reason}");
        assert!(
            !reason.contains('\0') && !reason.contains('\u{1b}'),
            "{reason}"
        );
        let long = "x".repeat(crate::MAX_ID_BYTES + 1);
        let p = write(
            dir.path(),
            "l.jsonl",
            &format!("{{\"id\": \"{long}\", \"text\": \"\"}}\n"),
        );
        parse_error(read_documents(&p, None, None), 1, "id");
        let p = write(
            dir.path(),
            "q.jsonl",
            "{\"id\": \"q 1\", \"text\": \"t\"}\n",
        );
        parse_error(read_queries(&p), 1, "id");
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.jsonl",
            "\u{feff}{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"b\", \"text\": \"y\"}\n",
        );
        let docs = read_documents(&p, None, None).unwrap();
        assert_eq!(
            docs.iter().map(Document::id).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let p = write(
            dir.path(),
            "q.jsonl",
            "\u{feff}{\"id\": \"q\", \"text\": \"t\"}\n",
        );
        assert_eq!(read_queries(&p).unwrap()[0].id, "q");
        // Only at the start of the file.
        let p = write(
            dir.path(),
            "m.jsonl",
            "{\"id\": \"a\", \"text\": \"x\"}\n\u{feff}{\"id\": \"b\", \"text\": \"y\"}\n",
        );
        parse_error(read_documents(&p, None, None), 2, "json");
    }

    #[test]
    fn side_file_errors_name_that_file_and_its_line_or_row() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = write(
            dir.path(),
            "corpus.jsonl",
            "{\"id\": \"a\", \"text\": \"\"}\n{\"id\": \"b\", \"text\": \"\"}\n",
        );
        // The second vector is on line 3 of the sparse file (after a blank line).
        let sparse = write(
            dir.path(),
            "corpus.sparse.jsonl",
            "{\"indices\": [1], \"values\": [1]}\n\n{\"indices\": [5, 2], \"values\": [1, 1]}\n",
        );
        match read_documents(&corpus, None, Some(&sparse)) {
            Err(Error::Parse { path, line, .. }) => assert_eq!((path, line), (sparse.clone(), 3)),
            other => panic!("{other:?}"),
        }
        // Inline sparse vectors are reported against the corpus.
        let inline = write(
            dir.path(),
            "inline.jsonl",
            "{\"id\": \"a\", \"text\": \"\", \"sparse\": {\"indices\": [5, 2], \"values\": [1, 1]}}\n",
        );
        parse_error(read_documents(&inline, None, None), 1, "sparse.indices");

        let dense = dir.path().join("corpus.dense.npy");
        crate::npy::write_f32_matrix(&dense, 2, 2, &[1.0, 2.0, 3.0, f32::NAN]).unwrap();
        let err = read_documents(&corpus, Some(&dense), None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("corpus.dense.npy row 1") && text.contains("NaN"),
            "{text}"
        );
        // Inline vectors of another dimension than the first.
        let mixed = write(
            dir.path(),
            "mixed.jsonl",
            "{\"id\": \"a\", \"text\": \"\", \"dense\": [1, 2]}\n{\"id\": \"b\", \"text\": \"\", \"dense\": [1]}\n",
        );
        let reason = parse_reason(read_documents(&mixed, None, None), 2, "dense");
        assert!(reason.contains("mixed.jsonl:1 has dimension 2"), "{reason}");
        let empty = write(
            dir.path(),
            "empty.jsonl",
            "{\"id\": \"a\", \"text\": \"\", \"dense\": []}\n",
        );
        parse_error(read_documents(&empty, None, None), 1, "dense");
    }

    #[test]
    fn token_offsets_errors_are_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("t.npy");
        crate::npy::write_f32_matrix(&tokens, 2, 1, &[1.0, 2.0]).unwrap();
        // An int64 vector [0, 2^62], as numpy writes it.
        let offsets = dir.path().join("o.npy");
        let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }";
        let header = format!("{dict:<117}\n").into_bytes();
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&header);
        for v in [0i64, 1 << 62] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&offsets, bytes).unwrap();
        let err = TokenVectors::read(&tokens, &offsets)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("offsets end at 4611686018427387904 but") && !err.contains("Some("),
            "{err}"
        );
    }

    #[test]
    fn queries_and_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "q.jsonl",
            concat!(
                r#"{"id": "q1", "text": "누구?", "relevant": ["a", "b"], "answers": ["임수경"]}"#,
                "\n",
                r#"{"id": "q2", "text": "what?"}"#,
                "\n"
            ),
        );
        let q = read_queries(&p).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].relevant, ["a", "b"]);
        assert_eq!(q[0].answers, ["임수경"]);
        assert!(q[1].relevant.is_empty() && q[1].answers.is_empty());
        let p = write(
            dir.path(),
            "q2.jsonl",
            "{\"id\": \"q\", \"text\": \"t\", \"relevant\": [1]}\n",
        );
        parse_error(read_queries(&p), 1, "relevant");
        let p = write(
            dir.path(),
            "q3.jsonl",
            "{\"id\": \"q\", \"text\": \"t\", \"answers\": \"x\"}\n",
        );
        parse_error(read_queries(&p), 1, "answers");

        let p = write(
            dir.path(),
            "s.jsonl",
            "{\"indices\": [1, 5], \"values\": [0.5, 0.25]}\n{\"indices\": [], \"values\": []}\n{\"indices\": [4294967296], \"values\": [1]}\n{\"indices\": [1], \"values\": [true]}\n",
        );
        let s: Vec<Result<SparseRecord>> = read_sparse_jsonl(&p).unwrap().collect();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].as_ref().unwrap().indices, [1, 5]);
        assert!(s[1].as_ref().unwrap().indices.is_empty());
        let mut s = s.into_iter().skip(2);
        parse_error(s.next().unwrap(), 3, "indices");
        parse_error(s.next().unwrap(), 4, "values");
    }

    #[test]
    fn dataset_dir_paths() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DatasetDir::open(dir.path()).is_err());
        write(dir.path(), "corpus.jsonl", "");
        write(dir.path(), "corpus.dense.npy", "");
        let d = DatasetDir::open(dir.path()).unwrap();
        assert_eq!(d.corpus(), dir.path().join("corpus.jsonl"));
        assert_eq!(d.corpus_dense(), Some(dir.path().join("corpus.dense.npy")));
        assert_eq!(d.queries_dense(), None);
        assert_eq!(d.corpus_sparse(), None);
    }
}
