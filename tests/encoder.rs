//! Encoder parity with the reference outputs in fixtures/model/reference.json, computed by
//! onnxruntime (Python) and numpy following FlagEmbedding's BGE-M3 post-processing.
//! Needs the ONNX Runtime library: scripts/setup-onnxruntime.sh installs it.

use std::path::{Path, PathBuf};

use hybridb::{Embedding, Encoder, EncoderOptions, Error, Layout, Pooling, TextKind};
use serde_json::Value;

const TOLERANCE: f32 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/model")
}

fn reference() -> Value {
    let bytes = std::fs::read(fixtures().join("reference.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn options(batch_size: usize) -> EncoderOptions {
    EncoderOptions {
        max_length: reference()["max_length"].as_u64().unwrap() as usize,
        batch_size,
        ..EncoderOptions::default()
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= TOLERANCE, "{what}: max difference {worst}");
}

fn kind(case: &Value) -> TextKind {
    match case["kind"].as_str().unwrap() {
        "query" => TextKind::Query,
        _ => TextKind::Passage,
    }
}

/// Encodes every case of `cases` (queries and passages in separate calls, so batches mix
/// lengths) and returns the embeddings in case order.
fn encode_cases(enc: &Encoder, cases: &[Value]) -> Vec<Embedding> {
    let mut out: Vec<Option<Embedding>> = vec![None; cases.len()];
    for k in [TextKind::Query, TextKind::Passage] {
        let idx: Vec<usize> = (0..cases.len()).filter(|&i| kind(&cases[i]) == k).collect();
        let texts: Vec<&str> = idx
            .iter()
            .map(|&i| cases[i]["text"].as_str().unwrap())
            .collect();
        for (i, e) in idx.iter().zip(enc.encode(&texts, k).unwrap()) {
            out[*i] = Some(e);
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

fn check_m3(dir: &str, layout: Layout, batch_size: usize) {
    let r = reference();
    let enc = Encoder::open(fixtures().join(dir), options(batch_size)).unwrap();
    let info = enc.info();
    assert_eq!(info.layout, layout);
    assert_eq!(
        (info.dense_dim, info.colbert_dim, info.sparse),
        (32, Some(32), true)
    );
    let cases = r["m3"].as_array().unwrap();
    let max_length = r["max_length"].as_u64().unwrap() as usize;
    let mut truncated = 0;
    for (case, e) in cases.iter().zip(encode_cases(&enc, cases)) {
        let text = case["text"].as_str().unwrap();
        let ids = case["input_ids"].as_array().unwrap();
        assert_eq!(e.tokens, ids.len(), "{text:?}: tokens");
        truncated += usize::from(e.truncated);
        assert_eq!(e.truncated, e.tokens == max_length, "{text:?}");
        assert_close(
            &format!("{dir} {text:?} dense"),
            &e.dense,
            &floats(&case["dense"]),
        );

        let want = case["sparse"].as_object().unwrap();
        let sparse = e.sparse.as_ref().unwrap();
        let got_ids: Vec<String> = sparse.indices().iter().map(u32::to_string).collect();
        let mut want_ids: Vec<&String> = want.keys().collect();
        want_ids.sort_by_key(|k| k.parse::<u32>().unwrap());
        assert_eq!(
            got_ids.iter().collect::<Vec<_>>(),
            want_ids,
            "{text:?}: sparse ids"
        );
        let want_w: Vec<f32> = want_ids
            .iter()
            .map(|k| want[*k].as_f64().unwrap() as f32)
            .collect();
        assert_close(&format!("{dir} {text:?} sparse"), sparse.values(), &want_w);

        let rows = case["colbert"].as_array().unwrap();
        let want_c: Vec<f32> = rows.iter().flat_map(floats).collect();
        let got_c = e.colbert.as_ref().unwrap();
        assert_eq!(
            got_c.len() / 32,
            ids.len() - 1,
            "{text:?}: one ColBERT row per token after the first"
        );
        assert_close(&format!("{dir} {text:?} colbert"), got_c, &want_c);
    }
    assert_eq!(truncated, 1, "exactly the long text is truncated");
}

#[test]
fn m3_outputs_layout_matches_reference() {
    check_m3("m3", Layout::M3Outputs, 4);
}

#[test]
fn m3_heads_layout_matches_reference() {
    check_m3("m3-heads", Layout::M3Heads, 3);
}

#[test]
fn batching_does_not_change_results() {
    let texts: Vec<String> = reference()["m3"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let one = Encoder::open(fixtures().join("m3-heads"), options(1)).unwrap();
    let many = Encoder::open(
        fixtures().join("m3-heads"),
        EncoderOptions {
            max_batch_tokens: 100,
            ..options(16)
        },
    )
    .unwrap();
    let mut calls = Vec::new();
    let a = one.encode(&refs, TextKind::Passage).unwrap();
    let b = many
        .encode_with_progress(&refs, TextKind::Passage, &mut |n| calls.push(n))
        .unwrap();
    // The token budget of 100 splits the 14 texts into several runs, reported as they finish.
    assert!(
        calls.len() > 2 && calls.windows(2).all(|w| w[0] < w[1]),
        "{calls:?}"
    );
    assert_eq!(calls.last(), Some(&texts.len()));
    for (x, y) in a.iter().zip(&b) {
        assert_close("dense", &x.dense, &y.dense);
        assert_close(
            "colbert",
            x.colbert.as_ref().unwrap(),
            y.colbert.as_ref().unwrap(),
        );
        assert_eq!(
            x.sparse.as_ref().unwrap().indices(),
            y.sparse.as_ref().unwrap().indices()
        );
    }
}

#[test]
fn dense_only_layout_pools_and_prefixes() {
    let r = reference();
    let cases = r["e5"].as_array().unwrap();
    let e5 = |pooling| EncoderOptions {
        pooling,
        query_prefix: "query: ".into(),
        passage_prefix: "passage: ".into(),
        ..options(5)
    };
    // Mean pooling comes from 1_Pooling/config.json; CLS is an override.
    for (pooling, key) in [(None, "dense"), (Some(Pooling::Cls), "dense_cls")] {
        let enc = Encoder::open(fixtures().join("e5"), e5(pooling)).unwrap();
        assert_eq!(enc.info().layout, Layout::DenseOnly);
        assert_eq!(enc.info().pooling, Some(pooling.unwrap_or(Pooling::Mean)));
        assert_eq!((enc.info().colbert_dim, enc.info().sparse), (None, false));
        for (case, e) in cases.iter().zip(encode_cases(&enc, cases)) {
            assert_eq!(e.tokens, case["input_ids"].as_array().unwrap().len());
            assert!(e.sparse.is_none() && e.colbert.is_none());
            let text = case["text"].as_str().unwrap();
            assert_close(&format!("e5 {key} {text:?}"), &e.dense, &floats(&case[key]));
        }
    }
}

#[test]
fn max_length_is_capped_by_the_model() {
    // config.json: xlm-roberta with 130 positions, so 128 tokens at most.
    let enc = Encoder::open(fixtures().join("m3"), EncoderOptions::default()).unwrap();
    assert_eq!(enc.info().max_length, 128);
    let long = "rain ".repeat(400);
    let e = &enc.encode(&[&long], TextKind::Passage).unwrap()[0];
    assert_eq!((e.tokens, e.truncated), (128, true));
}

#[test]
fn bad_model_directories_are_clear_errors() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Encoder>();
    let dir = tempfile::tempdir().unwrap();
    let err = |p: &Path| match Encoder::open(p, EncoderOptions::default()) {
        Err(Error::Model(m)) => m,
        Err(e) => panic!("expected a model error, got {e}"),
        Ok(_) => panic!("{} opened", p.display()),
    };
    let m = err(&dir.path().join("missing"));
    assert!(m.contains("does not exist"), "{m}");
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny");
    let m = err(&tiny);
    assert!(
        m.contains("no tokenizer.json") && m.contains("corpus.jsonl"),
        "{m}"
    );

    // A model file that is not ONNX.
    std::fs::copy(
        fixtures().join("m3/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.onnx"), b"not a model").unwrap();
    let m = err(dir.path());
    assert!(m.contains("ONNX Runtime could not load it"), "{m}");

    // A broken tokenizer.json.
    std::fs::copy(
        fixtures().join("m3/model.onnx"),
        dir.path().join("model.onnx"),
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), b"{\"version\": ").unwrap();
    let m = err(dir.path());
    assert!(m.contains("tokenizer.json"), "{m}");

    // BGE-M3 heads as PyTorch files only: a hint to convert them, not a silent dense-only model.
    std::fs::copy(
        fixtures().join("m3-heads/model.onnx"),
        dir.path().join("model.onnx"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("m3/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("sparse_linear.pt"), b"PK").unwrap();
    let m = err(dir.path());
    assert!(
        m.contains("PyTorch files") && m.contains("safetensors"),
        "{m}"
    );

    // Heads that do not fit the hidden size.
    std::fs::copy(
        fixtures().join("m3-heads/model.onnx"),
        dir.path().join("model.onnx"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("m3/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("m3-heads/colbert_linear.safetensors"),
        dir.path().join("colbert_linear.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("m3-heads/colbert_linear.safetensors"),
        dir.path().join("sparse_linear.safetensors"),
    )
    .unwrap();
    let m = err(dir.path());
    assert!(
        m.contains("sparse_linear maps to 32 values, expected 1"),
        "{m}"
    );
}

/// A safetensors file of F32 tensors `(name, shape, values)`.
fn safetensors(tensors: &[(&str, &[usize], Vec<f32>)]) -> Vec<u8> {
    let (mut header, mut data) = (serde_json::Map::new(), Vec::new());
    for (name, shape, values) in tensors {
        let start = data.len();
        values
            .iter()
            .for_each(|v| data.extend_from_slice(&v.to_le_bytes()));
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    out
}

#[test]
fn heads_of_the_wrong_input_size_are_model_errors() {
    // The fixture's hidden size is 32; a head taking 16 inputs used to trip an assert in the
    // first model run, before the size check.
    for (name, out) in [("sparse_linear", 1), ("colbert_linear", 32)] {
        let dir = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(fixtures().join("m3-heads")).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
        let head = safetensors(&[
            ("weight", &[out, 16], vec![0.5; out * 16]),
            ("bias", &[out], vec![0.0; out]),
        ]);
        std::fs::write(dir.path().join(format!("{name}.safetensors")), head).unwrap();
        match Encoder::open(dir.path(), EncoderOptions::default()) {
            Err(Error::Model(m)) => assert!(
                m.contains(&format!(
                    "{name} takes 16 inputs but the model's hidden size is 32"
                )),
                "{m}"
            ),
            Err(e) => panic!("{name}: expected a model error, got {e}"),
            Ok(_) => panic!("{name}: opened"),
        }
    }
}

/// Protocol-buffer encoding, enough for a small ONNX model.
mod pb {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    pub fn int(out: &mut Vec<u8>, field: u64, v: i64) {
        varint(out, field << 3);
        varint(out, v as u64);
    }
    pub fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    pub fn msg(field: u64, parts: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = parts.concat();
        let mut out = Vec::new();
        bytes(&mut out, field, &body);
        out
    }
    pub fn str_field(field: u64, s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        bytes(&mut out, field, s.as_bytes());
        out
    }
    pub fn int_field(field: u64, v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        int(&mut out, field, v);
        out
    }
}

/// An ONNX model with BGE-M3's three outputs whose `colbert_vecs` is `[batch, tokens - 1, 0]`:
/// the input ids as floats serve as dense and sparse outputs.
fn m3_outputs_model_with_empty_colbert() -> Vec<u8> {
    use pb::*;
    let node = |op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<Vec<u8>>| {
        let mut parts: Vec<Vec<u8>> = inputs.iter().map(|i| str_field(1, i)).collect();
        parts.extend(outputs.iter().map(|o| str_field(2, o)));
        parts.push(str_field(4, op));
        parts.extend(attrs);
        msg(1, &parts)
    };
    let int64s = |name: &str, values: &[i64]| {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut raw_field = Vec::new();
        bytes(&mut raw_field, 9, &raw);
        msg(
            5,
            &[
                int_field(1, values.len() as i64),
                int_field(2, 7),
                str_field(8, name),
                raw_field,
            ],
        )
    };
    // elem_type 7 = int64, 1 = float; a shape of named dimensions when given.
    let value_info = |field: u64, name: &str, elem: i64, dims: &[&str]| {
        let shape: Vec<Vec<u8>> = dims.iter().map(|d| msg(1, &[str_field(2, d)])).collect();
        let mut tensor = vec![int_field(1, elem)];
        if !dims.is_empty() {
            tensor.push(msg(2, &shape));
        }
        msg(field, &[str_field(1, name), msg(2, &[msg(1, &tensor)])])
    };
    let cast_to_float = msg(5, &[str_field(1, "to"), int_field(3, 1), int_field(20, 2)]);
    let graph = msg(
        7,
        &[
            node("Cast", &["input_ids"], &["x"], vec![cast_to_float]),
            node("Identity", &["x"], &["dense_vecs"], vec![]),
            node("Identity", &["x"], &["sparse_vecs"], vec![]),
            node("Unsqueeze", &["x", "axis2"], &["u"], vec![]),
            node(
                "Slice",
                &["u", "starts", "ends", "axes"],
                &["colbert_vecs"],
                vec![],
            ),
            str_field(2, "g"),
            int64s("axis2", &[2]),
            int64s("starts", &[1, 0]),
            int64s("ends", &[i64::MAX, 0]),
            int64s("axes", &[1, 2]),
            value_info(11, "input_ids", 7, &["batch", "tokens"]),
            value_info(12, "dense_vecs", 1, &[]),
            value_info(12, "sparse_vecs", 1, &[]),
            value_info(12, "colbert_vecs", 1, &[]),
        ],
    );
    let opset = msg(8, &[str_field(1, ""), int_field(2, 17)]);
    [int_field(1, 8), opset, graph].concat()
}

#[test]
fn a_colbert_dimension_of_zero_is_a_model_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("m3/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("model.onnx"),
        m3_outputs_model_with_empty_colbert(),
    )
    .unwrap();
    match Encoder::open(dir.path(), EncoderOptions::default()) {
        Err(Error::Model(m)) => assert!(m.contains("nonzero last dimension"), "{m}"),
        Err(e) => panic!("expected a model error, got {e}"),
        Ok(_) => panic!("opened"),
    }
}
