//! Converts a SQuAD-format JSON file (SQuAD 1.1/2.0, KorQuAD v1, KLUE MRC)
//! into the retrieval dataset layout of [`crate::dataset`]: each distinct
//! paragraph becomes a document and each question a query.
//!
//! Choices:
//! - Paragraphs are deduplicated by exact context text; the first occurrence's
//!   title wins. Documents are named `d0`, `d1`, ... in first-seen order, so
//!   the same input always gives the same ids.
//! - A query's `relevant` list is the one document holding its context (after
//!   deduplication every copy of that context is that one document).
//! - `answers` are the distinct answer texts in input order. Questions with
//!   no answers (SQuAD 2.0 `is_impossible`) are kept, with their own
//!   paragraph as relevant and no answers, so they still measure retrieval
//!   of the paragraph they were asked about; `plausible_answers` are ignored.
//! - The whole input is parsed and checked before anything is written.
//!   Errors name the JSON path, e.g. `data[3].paragraphs[0].context`.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{Value, json};

use crate::dataset::{DocRecord, QueryRecord};
use crate::error::{Error, Result};

/// What [`import_squad`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Distinct paragraphs written to `corpus.jsonl`.
    pub documents: usize,
    /// Questions written to `queries.jsonl`.
    pub queries: usize,
    /// Paragraphs in the input, duplicates included.
    pub paragraphs: usize,
    /// Paragraphs merged into an earlier one with the same context.
    pub duplicate_paragraphs: usize,
    /// Questions with no answer (kept, see the module docs).
    pub unanswerable: usize,
}

/// Reads `input` and writes `corpus.jsonl`, `queries.jsonl` and
/// `dataset.json` into `out_dir` (created if needed). Fails with
/// [`Error::InvalidInput`] if `out_dir` already holds a `corpus.jsonl` or
/// `queries.jsonl`.
pub fn import_squad(input: &Path, out_dir: &Path) -> Result<ImportSummary> {
    let bytes = std::fs::read(input).map_err(|e| Error::io(input, e))?;
    let (docs, queries, mut summary) = convert(input, &bytes)?;

    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    for name in ["corpus.jsonl", "queries.jsonl"] {
        if out_dir.join(name).exists() {
            return Err(Error::invalid(format!(
                "{} already exists; refusing to overwrite",
                out_dir.join(name).display()
            )));
        }
    }
    let corpus: Vec<CorpusLine> = docs.iter().map(CorpusLine::from).collect();
    write_jsonl(&out_dir.join("corpus.jsonl"), &corpus)?;
    write_jsonl(&out_dir.join("queries.jsonl"), &queries)?;

    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest = json!({
        "name": name,
        "source": format!("SQuAD-format file {source}, paragraphs deduplicated by exact text"),
        "documents": docs.len(),
        "queries": queries.len(),
    });
    let manifest_path = out_dir.join("dataset.json");
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|e| Error::invalid(e.to_string()))?;
    std::fs::write(&manifest_path, text + "\n").map_err(|e| Error::io(&manifest_path, e))?;

    summary.documents = docs.len();
    summary.queries = queries.len();
    Ok(summary)
}

/// Writes one JSON value per line to a file that must not exist yet.
fn write_jsonl<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::invalid(format!(
                    "{} already exists; refusing to overwrite",
                    path.display()
                ))
            } else {
                Error::io(path, e)
            }
        })?;
    let mut w = BufWriter::new(file);
    let io = |e| Error::io(path, e);
    for item in items {
        serde_json::to_writer(&mut w, item).map_err(|e| Error::io(path, e.into()))?;
        w.write_all(b"\n").map_err(io)?;
    }
    w.flush().map_err(io)?;
    w.get_ref().sync_all().map_err(io)?;
    Ok(())
}

/// A corpus line as written: no metadata field.
#[derive(serde::Serialize)]
struct CorpusLine<'a> {
    id: &'a str,
    title: &'a str,
    text: &'a str,
}

impl<'a> From<&'a DocRecord> for CorpusLine<'a> {
    fn from(d: &'a DocRecord) -> Self {
        CorpusLine {
            id: &d.id,
            title: &d.title,
            text: &d.text,
        }
    }
}

type Converted = (Vec<DocRecord>, Vec<QueryRecord>, ImportSummary);

/// Parses the SQuAD JSON and builds documents and queries.
pub(crate) fn convert(input: &Path, bytes: &[u8]) -> Result<Converted> {
    let err = |line: usize, field: &str, reason: String| Error::Parse {
        path: input.to_path_buf(),
        line,
        field: field.to_string(),
        reason,
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let root: Value =
        serde_json::from_slice(bytes).map_err(|e| err(e.line(), "json", e.to_string()))?;
    // Errors inside the document carry line 0: serde_json keeps no positions.
    let at = |field: &str, reason: &str| err(0, field, reason.to_string());

    let data = root
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| at("data", "expected an array"))?;
    let mut docs: Vec<DocRecord> = Vec::new();
    let mut by_text: HashMap<String, usize> = HashMap::new();
    let mut queries = Vec::new();
    let mut query_ids = HashSet::new();
    let mut summary = ImportSummary {
        documents: 0,
        queries: 0,
        paragraphs: 0,
        duplicate_paragraphs: 0,
        unanswerable: 0,
    };

    for (ai, article) in data.iter().enumerate() {
        let apath = format!("data[{ai}]");
        let title = match article.get("title") {
            None | Some(Value::Null) => "",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(at(&format!("{apath}.title"), "expected a string")),
        };
        let paragraphs = article
            .get("paragraphs")
            .and_then(Value::as_array)
            .ok_or_else(|| at(&format!("{apath}.paragraphs"), "expected an array"))?;
        for (pi, para) in paragraphs.iter().enumerate() {
            let ppath = format!("{apath}.paragraphs[{pi}]");
            let context = para
                .get("context")
                .and_then(Value::as_str)
                .ok_or_else(|| at(&format!("{ppath}.context"), "expected a string"))?;
            summary.paragraphs += 1;
            let doc_index = match by_text.get(context) {
                Some(&i) => {
                    summary.duplicate_paragraphs += 1;
                    i
                }
                None => {
                    let i = docs.len();
                    docs.push(DocRecord {
                        id: format!("d{i}"),
                        title: title.to_string(),
                        text: context.to_string(),
                        metadata: Value::Null,
                    });
                    by_text.insert(context.to_string(), i);
                    i
                }
            };
            let doc_id = docs
                .get(doc_index)
                .map(|d| d.id.clone())
                .unwrap_or_default();
            let qas = match para.get("qas") {
                None | Some(Value::Null) => &[][..],
                Some(Value::Array(a)) => a.as_slice(),
                Some(_) => return Err(at(&format!("{ppath}.qas"), "expected an array")),
            };
            for (qi, qa) in qas.iter().enumerate() {
                let qpath = format!("{ppath}.qas[{qi}]");
                let q = parse_qa(qa, &qpath, &doc_id).map_err(|(f, r)| at(&f, &r))?;
                if !query_ids.insert(q.id.clone()) {
                    return Err(at(
                        &format!("{qpath}.id"),
                        &format!("duplicate question id {:?}", q.id),
                    ));
                }
                if q.answers.is_empty() {
                    summary.unanswerable += 1;
                }
                queries.push(q);
            }
        }
    }
    Ok((docs, queries, summary))
}

/// One question; errors are (field path, reason).
fn parse_qa(
    qa: &Value,
    qpath: &str,
    doc_id: &str,
) -> std::result::Result<QueryRecord, (String, String)> {
    let fail = |field: &str, reason: &str| (format!("{qpath}.{field}"), reason.to_string());
    // Question ids are strings in SQuAD/KorQuAD; accept integers too.
    let id = match qa.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return Err(fail("id", "expected a non-empty string")),
    };
    let text = qa
        .get("question")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("question", "expected a string"))?
        .to_string();
    // `is_impossible` is only type-checked: a question counts as unanswerable
    // when it has no answers, whatever the flag says.
    if !matches!(
        qa.get("is_impossible"),
        None | Some(Value::Null | Value::Bool(_))
    ) {
        return Err(fail("is_impossible", "expected a boolean"));
    }
    let raw = match qa.get("answers") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        _ => return Err(fail("answers", "expected an array")),
    };
    let mut answers: Vec<String> = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        let t = a
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| fail(&format!("answers[{i}].text"), "expected a string"))?;
        if !answers.iter().any(|x| x == t) {
            answers.push(t.to_string());
        }
    }
    Ok(QueryRecord {
        id,
        text,
        relevant: vec![doc_id.to_string()],
        answers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{read_docs_jsonl, read_queries};

    const SAMPLE: &str = r#"{
      "version": "KorQuAD_v1.0_dev",
      "data": [
        {"title": "임종석",
         "paragraphs": [
           {"context": "1989년 2월 15일 여의도 농민 폭력 시위를 주도한 혐의로 지명수배되었다.",
            "qas": [
              {"id": "k1", "question": "임종석이 지명수배 된 날은?",
               "answers": [{"text": "1989년 2월 15일", "answer_start": 0},
                           {"text": "1989년 2월 15일", "answer_start": 0}]}
            ]},
           {"context": "Rust is a systems programming language.",
            "qas": [
              {"id": "e1", "question": "What kind of language is Rust?",
               "answers": [{"text": "systems programming", "answer_start": 10},
                           {"text": "a systems programming language", "answer_start": 8}]},
              {"id": "e2", "question": "Who wrote Rust?", "answers": [], "is_impossible": true,
               "plausible_answers": [{"text": "Rust", "answer_start": 0}]}
            ]}
         ]},
        {"title": "Duplicate",
         "paragraphs": [
           {"context": "1989년 2월 15일 여의도 농민 폭력 시위를 주도한 혐의로 지명수배되었다.",
            "qas": [{"id": "k2", "question": "무슨 시위를 주도했나?",
                     "answers": [{"text": "여의도 농민 폭력 시위", "answer_start": 11}]}]},
           {"context": "", "qas": []}
         ]}
      ]
    }"#;

    #[test]
    fn imports_and_dedups() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("dev.json");
        std::fs::write(&input, SAMPLE).unwrap();
        let out = dir.path().join("mini");
        let summary = import_squad(&input, &out).unwrap();
        assert_eq!(
            summary,
            ImportSummary {
                documents: 3,
                queries: 4,
                paragraphs: 4,
                duplicate_paragraphs: 1,
                unanswerable: 1,
            }
        );
        let docs: Vec<DocRecord> = read_docs_jsonl(&out.join("corpus.jsonl"))
            .unwrap()
            .map(|d| d.unwrap().doc)
            .collect();
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d0", "d1", "d2"]);
        // The first title wins for the duplicated paragraph.
        assert_eq!(docs[0].title, "임종석");
        assert_eq!(docs[2].title, "Duplicate");
        assert_eq!(docs[2].text, "");

        let q = read_queries(&out.join("queries.jsonl")).unwrap();
        let got: Vec<(&str, Vec<String>, Vec<String>)> = q
            .iter()
            .map(|q| (q.id.as_str(), q.relevant.clone(), q.answers.clone()))
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                ("k1", s(&["d0"]), s(&["1989년 2월 15일"])),
                (
                    "e1",
                    s(&["d1"]),
                    s(&["systems programming", "a systems programming language"])
                ),
                ("e2", s(&["d1"]), s(&[])),
                ("k2", s(&["d0"]), s(&["여의도 농민 폭력 시위"])),
            ]
        );
        assert_eq!(q[0].text, "임종석이 지명수배 된 날은?");

        let manifest: Value =
            serde_json::from_slice(&std::fs::read(out.join("dataset.json")).unwrap()).unwrap();
        assert_eq!(manifest["name"], "mini");
        assert_eq!(
            (manifest["documents"].as_u64(), manifest["queries"].as_u64()),
            (Some(3), Some(4))
        );

        // A second import into the same folder is refused.
        assert!(matches!(
            import_squad(&input, &out),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn malformed_input_names_the_json_path() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("bad.json");
        let cases = [
            (
                r#"{"data": [{"title": "t", "paragraphs": [{"context": 5}]}]"#,
                "json",
            ),
            (r#"{"version": "1"}"#, "data"),
            (
                r#"{"data": [{"title": 1, "paragraphs": []}]}"#,
                "data[0].title",
            ),
            (r#"{"data": [{"title": "t"}]}"#, "data[0].paragraphs"),
            (
                r#"{"data": [{"paragraphs": []}, {"paragraphs": [{"context": "a"}, {"context": 5}]}]}"#,
                "data[1].paragraphs[1].context",
            ),
            (
                r#"{"data": [{"paragraphs": [{"context": "a", "qas": {}}]}]}"#,
                "data[0].paragraphs[0].qas",
            ),
            (
                r#"{"data": [{"paragraphs": [{"context": "a", "qas": [{"question": "q", "answers": []}]}]}]}"#,
                "data[0].paragraphs[0].qas[0].id",
            ),
            (
                r#"{"data": [{"paragraphs": [{"context": "a", "qas": [{"id": "x", "answers": []}]}]}]}"#,
                "data[0].paragraphs[0].qas[0].question",
            ),
            (
                r#"{"data": [{"paragraphs": [{"context": "a", "qas": [{"id": "x", "question": "q", "answers": [{"text": 3}]}]}]}]}"#,
                "data[0].paragraphs[0].qas[0].answers[0].text",
            ),
            (
                r#"{"data": [{"paragraphs": [{"context": "a", "qas": [{"id": "x", "question": "q"}, {"id": "x", "question": "r"}]}]}]}"#,
                "data[0].paragraphs[0].qas[1].id",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&input, text).unwrap();
            let out = dir.path().join("out");
            match import_squad(&input, &out) {
                Err(Error::Parse { field, .. }) => assert_eq!(field, want, "{text}"),
                other => panic!("{text}: expected a parse error, got {other:?}"),
            }
            assert!(!out.exists(), "nothing is written for bad input");
        }
    }
}
