//! The BM25 leg: a tantivy index over each document's title and text, plus its JSON metadata
//! for equality filters. Documents are keyed by the database's `u64` docnum, held in an
//! indexed fast field so that deletes are term deletes and hits map back without a stored-field
//! lookup. Each commit carries `{"seq", "next_doc"}` as tantivy's commit payload, which tells the
//! database how far the index has caught up with its write log. Two analyzers are offered: tantivy's
//! default word tokenizer and a Hangul-bigram tokenizer for Korean; the chosen one is persisted
//! by name in the tantivy schema and re-registered on every open.
//!
//! BM25 statistics count live documents only, and a document's score is summed over the query's
//! terms in a fixed order, so that scores depend on the live documents alone: not on how tantivy
//! split them into segments, nor on which deleted documents its merges have dropped yet.

use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use tantivy::fieldnorm::FieldNormReader;
use tantivy::index::SegmentId;
use tantivy::indexer::LogMergePolicy;
use tantivy::postings::{Postings, SegmentPostings};
use tantivy::query::{
    AllQuery, Bm25StatisticsProvider, Bm25Weight, BooleanQuery, EnableScoring, Occur, Query,
    TermQuery,
};
use tantivy::schema::{
    Field, FieldType, IndexRecordOption, JsonObjectOptions, NumericOptions, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer, Token, TokenStream, Tokenizer,
};
use tantivy::{
    DocId, DocSet as _, Index, IndexReader, IndexWriter, InvertedIndexReader, ReloadPolicy, Score,
    Searcher, SegmentReader, TERMINATED, TantivyDocument, TantivyError, Term,
};

mod bm25;

use self::bm25::{LiveStats, Rescorer};
use crate::docset::DocSet;
use crate::error::{Error, Result};

const DOCNUM: &str = "docnum";
const BODY: &str = "body";
const META: &str = "meta";
/// Per document, the number of `body` tokens (what tantivy counts in its statistics).
const TOKENS: &str = "tokens";
/// Tokenizer for metadata strings: the whole string is one term (exact match).
const META_TOKENIZER: &str = "raw";
/// Memory budget of the IndexWriter, shared by its indexing threads (tantivy needs >= 15 MB each).
const WRITER_HEAP: usize = 50_000_000;
/// Tokens longer than this many bytes are dropped, as tantivy's default analyzer does.
const MAX_TOKEN_BYTES: usize = 40;
/// A segment whose deleted share passes this is merged in the background, dropping them.
const DELETED_SHARE_BEFORE_MERGE: f32 = 0.2;

/// How `body` text is split into terms. (Serialized by variant index: keep the order.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Analyzer {
    /// tantivy's default: alphanumeric words, lowercased, words over 40 bytes dropped.
    Default,
    /// Overlapping bigrams over runs of Hangul syllables, lowercased words for other scripts.
    HangulBigram,
}

impl Analyzer {
    /// The analyzer's user-facing name, as accepted by `FromStr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Analyzer::Default => "default",
            Analyzer::HangulBigram => "hangul-bigram",
        }
    }

    /// The tokenizer name registered on the index and persisted in its schema.
    fn tokenizer_name(self) -> &'static str {
        match self {
            Analyzer::Default => "hybridb-default",
            Analyzer::HangulBigram => "hybridb-hangul-bigram",
        }
    }

    fn text_analyzer(self) -> TextAnalyzer {
        match self {
            Analyzer::Default => TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
                .filter(LowerCaser)
                .build(),
            Analyzer::HangulBigram => TextAnalyzer::builder(HangulBigramTokenizer)
                .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
                .build(),
        }
    }

    /// Registers both analyzers on `index` under their names; needed on every open, because
    /// tantivy persists only the name.
    fn register_all(index: &Index) {
        for a in [Analyzer::Default, Analyzer::HangulBigram] {
            index
                .tokenizers()
                .register(a.tokenizer_name(), a.text_analyzer());
        }
    }
}

impl FromStr for Analyzer {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "default" => Ok(Analyzer::Default),
            "hangul-bigram" => Ok(Analyzer::HangulBigram),
            _ => Err(Error::invalid(format!("unknown analyzer {s:?}"))),
        }
    }
}

fn is_hangul_syllable(c: char) -> bool {
    ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

/// Splits text into alphanumeric runs; inside a run, Hangul syllables give overlapping bigrams
/// (a lone syllable gives itself) and every other stretch gives one lowercased word.
#[derive(Clone, Copy, Debug, Default)]
pub struct HangulBigramTokenizer;

impl Tokenizer for HangulBigramTokenizer {
    type TokenStream<'a> = HangulBigramStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> HangulBigramStream<'a> {
        HangulBigramStream {
            text,
            pos: 0,
            prev: None,
            bigrams: false,
            token: Token::default(),
        }
    }
}

pub struct HangulBigramStream<'a> {
    text: &'a str,
    /// Byte offset of the next unread char.
    pos: usize,
    /// Byte offset of the previous syllable, while inside a Hangul stretch.
    prev: Option<usize>,
    /// Whether the current Hangul stretch has emitted a bigram yet.
    bigrams: bool,
    token: Token,
}

impl HangulBigramStream<'_> {
    fn emit(&mut self, from: usize, to: usize, lowercase: bool) {
        let token = &mut self.token;
        token.position = token.position.wrapping_add(1);
        (token.offset_from, token.offset_to, token.position_length) = (from, to, 1);
        token.text.clear();
        let s = &self.text[from..to];
        if lowercase {
            token.text.extend(s.chars().flat_map(char::to_lowercase));
        } else {
            token.text.push_str(s);
        }
    }
}

impl TokenStream for HangulBigramStream<'_> {
    fn advance(&mut self) -> bool {
        loop {
            let start = self.pos;
            let next = self.text[start..].chars().next();
            if let Some(prev) = self.prev {
                if let Some(c) = next.filter(|&c| is_hangul_syllable(c)) {
                    self.pos += c.len_utf8();
                    (self.prev, self.bigrams) = (Some(start), true);
                    self.emit(prev, self.pos, false);
                    return true;
                }
                // The Hangul stretch ended; a lone syllable is its own token.
                self.prev = None;
                if !self.bigrams {
                    self.emit(prev, start, false);
                    return true;
                }
            }
            let Some(c) = next else { return false };
            if is_hangul_syllable(c) {
                (self.prev, self.bigrams) = (Some(start), false);
                self.pos += c.len_utf8();
            } else if c.is_alphanumeric() {
                let rest = &self.text[start..];
                let end = rest.find(|c: char| !c.is_alphanumeric() || is_hangul_syllable(c));
                self.pos += end.unwrap_or(rest.len());
                self.emit(start, self.pos, true);
                return true;
            } else {
                self.pos += c.len_utf8();
            }
        }
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

/// One document as the text index sees it.
pub struct TextDoc<'a> {
    pub docnum: u64,
    pub title: &'a str,
    pub text: &'a str,
    pub metadata: &'a serde_json::Value,
}

/// Reads every file of the index's segments and checks its footer checksum (tantivy writes a
/// CRC-32 footer on each), so that a damaged file is reported instead of read.
fn check_files(index: &Index, dir: &Path) -> Result<()> {
    let bad = index
        .validate_checksum()
        .map_err(|e| Error::corrupted(dir, format!("checking file checksums: {e}")))?;
    let mut bad: Vec<_> = bad.into_iter().collect();
    bad.sort();
    match bad.first() {
        Some(f) => Err(Error::corrupted(
            dir.join(f),
            "checksum mismatch (a derived index: `hybridb repair` rebuilds it)",
        )),
        None => Ok(()),
    }
}

/// The tantivy index of one database, with its reader and (when writable) its writer.
pub struct TextIndex {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Option<IndexWriter>,
    fields: Fields,
}

impl TextIndex {
    /// Opens the index in `dir`, creating it with `analyzer` if `dir` holds none (only when
    /// `writable`). An existing index keeps the analyzer it was created with; `analyzer` is
    /// then ignored. `writable = false` opens without an IndexWriter.
    pub fn open(dir: &Path, analyzer: Analyzer, writable: bool) -> Result<TextIndex> {
        if writable {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        } else if !dir.join("meta.json").is_file() {
            return Err(Error::NotFound(dir.to_path_buf()));
        }
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| Error::Text(format!("{}: {e}", dir.display())))?;
        let index = if Index::exists(&directory).map_err(|e| Error::Text(e.to_string()))? {
            let index = Index::open(directory)
                .map_err(|e| Error::corrupted(dir.join("meta.json"), e.to_string()))?;
            check_files(&index, dir)?;
            index
        } else {
            Index::create(directory, build_schema(analyzer), Default::default())?
        };
        Analyzer::register_all(&index);
        let fields = Fields::of(&index.schema())
            .map_err(|e| Error::corrupted(dir.join("meta.json"), e.to_string()))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let writer = writable.then(|| new_writer(&index, dir)).transpose()?;
        Ok(TextIndex {
            dir: dir.to_path_buf(),
            index,
            reader,
            writer,
            fields,
        })
    }

    /// Reloads the reader to the last commit on disk; returns that commit's payload, or
    /// `None` if a commit landed while reloading (so the searcher's commit is not known).
    pub fn reload_committed(&self) -> Result<Option<Option<(u64, u64)>>> {
        let before = self.committed()?;
        self.reader.reload()?;
        let after = self.committed()?;
        Ok((before == after).then_some(after))
    }

    /// The `(seq, next_doc)` payload of the last commit, or `None` for a never-committed index.
    pub fn committed(&self) -> Result<Option<(u64, u64)>> {
        let Some(payload) = self.index.load_metas()?.payload else {
            return Ok(None);
        };
        let bad = |why: &str| Error::corrupted(self.dir.join("meta.json"), why.to_string());
        let v: serde_json::Value =
            serde_json::from_str(&payload).map_err(|e| bad(&format!("commit payload: {e}")))?;
        let field = |name: &str| {
            v.get(name)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| bad(&format!("commit payload lacks integer {name:?}")))
        };
        Ok(Some((field("seq")?, field("next_doc")?)))
    }

    /// Applies one database commit: deletes `deletes`, adds `adds`, commits with the payload
    /// `(seq, next_doc)` and reloads the reader. On failure the uncommitted changes are rolled back.
    pub fn apply(
        &mut self,
        adds: &[TextDoc<'_>],
        deletes: &[u64],
        seq: u64,
        next_doc: u64,
    ) -> Result<()> {
        let Fields {
            docnum,
            body,
            meta,
            tokens,
            analyzer,
        } = self.fields;
        let mut analyzer = analyzer.text_analyzer();
        self.write(seq, next_doc, |writer| {
            for &d in deletes {
                writer.delete_term(Term::from_field_u64(docnum, d));
            }
            for doc in adds {
                let mut tdoc = TantivyDocument::new();
                tdoc.add_u64(docnum, doc.docnum);
                let text = format!("{}\n{}", doc.title, doc.text);
                if let Some(tokens) = tokens {
                    let mut n = 0u64;
                    analyzer.token_stream(&text).process(&mut |_| n += 1);
                    tdoc.add_u64(tokens, n);
                }
                tdoc.add_text(body, text);
                // Only objects have paths to filter on; other metadata is not indexed.
                if doc.metadata.is_object() {
                    tdoc.add_field_value(meta, doc.metadata);
                }
                writer.add_document(tdoc)?;
            }
            Ok(())
        })
    }

    /// Deletes every document and commits with the payload `(seq, next_doc)`.
    pub fn clear(&mut self, seq: u64, next_doc: u64) -> Result<()> {
        self.write(seq, next_doc, |w| w.delete_all_documents().map(drop))
    }

    /// Runs `ops`, then commits with the payload; rolls back if anything fails.
    fn write(
        &mut self,
        seq: u64,
        next_doc: u64,
        ops: impl FnOnce(&mut IndexWriter) -> tantivy::Result<()>,
    ) -> Result<()> {
        let writer = self.writer.as_mut().ok_or(Error::ReadOnly)?;
        let payload = serde_json::json!({ "seq": seq, "next_doc": next_doc }).to_string();
        let done = ops(writer).and_then(|()| {
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()
        });
        if let Err(e) = done {
            // Best effort: the commit error is the one worth reporting.
            let _ = writer.rollback();
            return Err(e.into());
        }
        self.reader.reload()?;
        Ok(())
    }

    /// Waits for the background merges to finish, then reloads the reader so that it sees
    /// their results.
    pub fn settle(&mut self) -> Result<()> {
        let old = self.writer.take().ok_or(Error::ReadOnly)?;
        let waited = old.wait_merging_threads();
        self.writer = Some(new_writer(&self.index, &self.dir)?);
        waited?;
        self.reader.reload()?;
        Ok(())
    }

    /// Merges all segments into one (dropping deleted documents).
    pub fn merge_all(&mut self) -> Result<()> {
        // Background merges must finish first: merging a segment twice is an error.
        self.settle()?;
        let writer = self.writer.as_mut().ok_or(Error::ReadOnly)?;
        let metas = self.index.searchable_segment_metas()?;
        if metas.len() > 1 || metas.iter().any(|m| m.has_deletes()) {
            let ids: Vec<_> = metas.iter().map(|m| m.id()).collect();
            writer.merge(&ids).wait()?;
        }
        self.reader.reload()?;
        Ok(())
    }

    /// Deletes the files of segments that were merged away. Files that a searcher still holds
    /// (an older snapshot's) stay until a later call.
    pub fn collect_garbage(&mut self) -> Result<()> {
        let writer = self.writer.as_mut().ok_or(Error::ReadOnly)?;
        writer.garbage_collect_files().wait()?;
        Ok(())
    }

    /// Lets running background merges finish, so that their work is kept (best effort).
    pub fn finish_merges(&mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.wait_merging_threads();
        }
    }

    /// A point-in-time view for [`search`] and [`filter_docs`].
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// The analyzer the index was created with.
    #[allow(dead_code)] // The database keeps the analyzer in its own schema too.
    pub fn analyzer(&self) -> Analyzer {
        self.fields.analyzer
    }
}

/// A writer whose merge policy keeps the segment count logarithmic: tantivy merges, in the
/// background, any two segments of one size level (the default waits for eight). A level spans
/// a factor of two in documents (the default, 2^0.75), and every segment under 10,000
/// documents is on the lowest level. A level holding a segment with more than a fifth of its
/// documents deleted is merged too, even alone, which drops them (they do not weigh on scores,
/// but still cost space and search time). Each commit writes up to one segment per indexing
/// thread.
fn new_writer(index: &Index, dir: &Path) -> Result<IndexWriter> {
    let writer: IndexWriter = index.writer(WRITER_HEAP).map_err(|e| lock_error(e, dir))?;
    let mut policy = LogMergePolicy::default();
    policy.set_min_num_segments(2);
    policy.set_level_log_size(1.0);
    policy.set_del_docs_ratio_before_merge(DELETED_SHARE_BEFORE_MERGE);
    writer.set_merge_policy(Box::new(policy));
    Ok(writer)
}

fn lock_error(e: TantivyError, dir: &Path) -> Error {
    match e {
        TantivyError::LockFailure(..) => Error::Locked(dir.to_path_buf()),
        e => e.into(),
    }
}

fn build_schema(analyzer: Analyzer) -> Schema {
    let mut b = Schema::builder();
    b.add_u64_field(DOCNUM, NumericOptions::default().set_indexed().set_fast());
    b.add_u64_field(TOKENS, NumericOptions::default().set_fast());
    let body = TextFieldIndexing::default()
        .set_tokenizer(analyzer.tokenizer_name())
        .set_index_option(IndexRecordOption::WithFreqs);
    b.add_text_field(BODY, TextOptions::default().set_indexing_options(body));
    let meta = TextFieldIndexing::default()
        .set_tokenizer(META_TOKENIZER)
        .set_index_option(IndexRecordOption::Basic)
        .set_fieldnorms(false);
    let meta = JsonObjectOptions::default().set_indexing_options(meta);
    b.add_json_field(META, meta);
    b.build()
}

/// The fields of an index with our schema, and the analyzer its `body` field was made with.
#[derive(Clone, Copy)]
struct Fields {
    docnum: Field,
    body: Field,
    meta: Field,
    /// Absent in indexes made before it was added.
    tokens: Option<Field>,
    analyzer: Analyzer,
}

impl Fields {
    fn of(schema: &Schema) -> Result<Fields> {
        let field = |name| schema.get_field(name).ok();
        let (docnum, body, meta) = (field(DOCNUM), field(BODY), field(META));
        let analyzer = match body.map(|b| schema.get_field_entry(b).field_type()) {
            Some(FieldType::Str(o)) => o.get_indexing_options(),
            _ => None,
        }
        .and_then(|i| i.tokenizer().strip_prefix("hybridb-")?.parse().ok());
        match (docnum, body, meta, analyzer) {
            (Some(docnum), Some(body), Some(meta), Some(analyzer)) => Ok(Fields {
                docnum,
                body,
                meta,
                tokens: field(TOKENS),
                analyzer,
            }),
            _ => Err(Error::Text("the text index schema is not hybridb's".into())),
        }
    }
}

/// BM25 top-`k`: `query` is analyzed with the index's own analyzer (read from the schema) and
/// every term becomes a SHOULD clause, so a document's score is the sum of its terms' BM25
/// scores (k1 = 1.2, b = 0.75, tantivy's idf and quantized field lengths), added in the terms'
/// sorted order. The statistics (document count, average length, document frequencies) count
/// live documents only. A term repeated in the query counts once. Only documents in `allow` are
/// considered when it is given. Returns `(docnum, score)`, best first, ties by smaller docnum; a
/// query without terms gives nothing.
pub fn search(
    searcher: &Searcher,
    query: &str,
    k: usize,
    allow: Option<&DocSet>,
) -> Result<Vec<(u64, f32)>> {
    let fields = Fields::of(searcher.schema())?;
    let mut terms: Vec<String> = Vec::new();
    let mut analyzer = fields.analyzer.text_analyzer();
    let mut stream = analyzer.token_stream(query);
    stream.process(&mut |t| terms.push(t.text.clone()));
    // Deduplicated: on korquad-v1-dev, keeping repeats changed recall by at most 3 of 3316 queries.
    terms.sort_unstable();
    terms.dedup();
    if terms.is_empty() || k == 0 || allow.is_some_and(DocSet::is_empty) {
        return Ok(Vec::new());
    }
    let terms: Vec<Term> = terms
        .iter()
        .map(|t| Term::from_field_text(fields.body, t))
        .collect();
    let stats = LiveStats::new(searcher, &fields, &terms)?;
    if stats.docs == 0 {
        return Ok(Vec::new());
    }
    let weights = terms
        .iter()
        .map(|t| Bm25Weight::for_terms(&stats, std::slice::from_ref(t)))
        .collect::<tantivy::Result<Vec<_>>>()?;
    let clauses: Vec<(Occur, Box<dyn Query>)> = terms
        .iter()
        .map(|t| {
            let q = TermQuery::new(t.clone(), IndexRecordOption::WithFreqs);
            (Occur::Should, Box::new(q) as Box<dyn Query>)
        })
        .collect();
    let scoring = EnableScoring::enabled_from_statistics_provider(&stats, searcher);
    let weight = BooleanQuery::new(clauses).weight(scoring)?;
    // tantivy adds a document's term scores in an order that depends on the segment layout; a
    // sum of n non-negative terms in two orders differs by under 2(n-1) ulps of it. The bar
    // given to tantivy is lowered by more than that, so that no document is skipped whose own
    // score reaches the k-th best.
    let slack = 1.0 - 4.0 * terms.len() as Score * Score::EPSILON;
    let bar = |threshold: Score| {
        if threshold > 0.0 {
            threshold * slack
        } else {
            threshold
        }
    };
    let mut top = TopK {
        k,
        heap: BinaryHeap::with_capacity(k.min(1 << 16) + 1),
    };
    for reader in searcher.segment_readers() {
        let docnums = reader.fast_fields().u64(DOCNUM)?;
        let alive = reader.alive_bitset();
        // Up to two terms, tantivy's sum is this one: a + b == b + a in floating point.
        let mut exact = match terms.len() {
            1 | 2 => None,
            _ => Some(Rescorer::new(reader, &fields, &terms, &weights)?),
        };
        let mut failed = None;
        let mut threshold = bar(top.threshold());
        // Pruning lets tantivy skip blocks (block-max WAND) that cannot beat the threshold.
        weight.for_each_pruning(threshold, reader, &mut |doc, score| {
            if alive.is_none_or(|a| a.is_alive(doc))
                && let Some(docnum) = docnums.first(doc)
                && allow.is_none_or(|s| s.contains(docnum))
            {
                let score = match exact.as_mut().map(|e| e.score(doc)) {
                    None => score,
                    Some(Ok(score)) => score,
                    Some(Err(e)) => {
                        // Nothing more is offered: no score can pass.
                        failed = Some(e);
                        return Score::INFINITY;
                    }
                };
                threshold = bar(top.offer(hit(score, docnum)));
            }
            threshold
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let mut hits = top.heap.into_vec();
    hits.sort_unstable();
    Ok(hits.into_iter().map(|h| (h.1, score_of(h))).collect())
}

/// The docnum of every live document in `searcher`'s segments, in index order.
pub(crate) fn docnums(searcher: &Searcher) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for reader in searcher.segment_readers() {
        let docnums = reader.fast_fields().u64(DOCNUM)?;
        for doc in reader.doc_ids_alive() {
            match docnums.first(doc) {
                Some(d) => out.push(d),
                None => return Err(Error::Text(format!("document {doc} has no docnum"))),
            }
        }
    }
    Ok(out)
}

/// A heap entry ordered so that the worse hit is greater: (inverted score bits, docnum).
/// BM25 scores are non-negative, and non-negative floats order like their bit patterns.
type Hit = (u32, u64);

fn hit(score: Score, docnum: u64) -> Hit {
    (!score.max(0.0).to_bits(), docnum)
}

fn score_of(hit: Hit) -> Score {
    f32::from_bits(!hit.0)
}

/// The best `k` hits so far; the top of the heap is the worst of them.
struct TopK {
    k: usize,
    heap: BinaryHeap<Hit>,
}

impl TopK {
    /// Offers a hit; returns the new threshold.
    fn offer(&mut self, hit: Hit) -> Score {
        if self.heap.len() < self.k {
            self.heap.push(hit);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && hit < *worst
        {
            *worst = hit;
        }
        self.threshold()
    }

    /// The score a doc must exceed to be offered: just below the k-th best, so that ties
    /// (broken by docnum) still reach us.
    fn threshold(&self) -> Score {
        match self.heap.peek() {
            Some(&worst) if self.heap.len() >= self.k => score_of(worst).next_down(),
            _ => Score::MIN,
        }
    }
}

/// The docnums whose metadata equals every `(path, value)` pair. `path` is a dot-separated path
/// into the metadata object (`"source"`, `"a.b"`; a literal dot in a key is written `\.`);
/// `value` is a string, bool or number. An array in the metadata matches any of its elements.
/// No conditions selects every live document. Arrays, objects and null as values are rejected.
pub fn filter_docs(
    searcher: &Searcher,
    conditions: &[(String, serde_json::Value)],
) -> Result<DocSet> {
    let meta = Fields::of(searcher.schema())?.meta;
    let query: Box<dyn Query> = if conditions.is_empty() {
        Box::new(AllQuery)
    } else {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(conditions.len());
        for (path, value) in conditions {
            let term = meta_term(meta, path, value)?;
            let q = TermQuery::new(term, IndexRecordOption::Basic);
            clauses.push((Occur::Must, Box::new(q)));
        }
        Box::new(BooleanQuery::new(clauses))
    };
    let weight = query.weight(EnableScoring::disabled_from_searcher(searcher))?;
    let mut set = DocSet::new();
    for reader in searcher.segment_readers() {
        let docnums = reader.fast_fields().u64(DOCNUM)?;
        let alive = reader.alive_bitset();
        weight.for_each_no_score(reader, &mut |docs| {
            for &doc in docs {
                if alive.is_none_or(|a| a.is_alive(doc))
                    && let Some(docnum) = docnums.first(doc)
                {
                    set.insert(docnum);
                }
            }
        })?;
    }
    Ok(set)
}

/// The term tantivy indexes for `value` at `path` of the JSON field: numbers are normalized the
/// way tantivy does (integral values as i64, else u64, else f64).
fn meta_term(meta: Field, path: &str, value: &serde_json::Value) -> Result<Term> {
    use serde_json::Value;
    if path.is_empty() {
        return Err(Error::invalid("metadata filter path is empty"));
    }
    let mut term = Term::from_field_json_path(meta, path, false);
    match value {
        Value::String(s) => term.append_type_and_str(s),
        Value::Bool(b) => term.append_type_and_fast_value(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                term.append_type_and_fast_value(i);
            } else if let Some(u) = n.as_u64() {
                term.append_type_and_fast_value(u);
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // Mirrors tantivy's NumericalValue::normalize.
                if f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64 {
                    term.append_type_and_fast_value(f as i64);
                } else if f.fract() == 0.0 && f >= 0.0 && f <= u64::MAX as f64 {
                    term.append_type_and_fast_value(f as u64);
                } else {
                    term.append_type_and_fast_value(f);
                }
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => {
            return Err(Error::invalid(format!(
                "metadata filter on {path:?}: value must be a string, number or bool, not {value}"
            )));
        }
    }
    Ok(term)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Lines of `input|expected tokens` for the Hangul-bigram analyzer.
    const TOKEN_CASES: &str = "서울특별시 KTX역|서울 울특 특별 별시 ktx 역
        아이폰15프로 漢字와 2024년|아이 이폰 15 프로 漢字 와 2024 년
        Hello, WORLD! x42b ÉCOLE|hello world x42b école
        가 나다 라 ㅋㅋ 😀한국😀|가 나다 라 ㅋㅋ 한국
        |
        😀👍 —!? ...|";

    fn tokens(a: Analyzer, text: &str) -> Vec<(String, [usize; 3])> {
        let (mut analyzer, mut out) = (a.text_analyzer(), Vec::new());
        let mut stream = analyzer.token_stream(text);
        while let Some(t) = stream.next() {
            out.push((t.text.clone(), [t.offset_from, t.offset_to, t.position]));
        }
        out
    }

    #[test]
    fn hangul_bigram_tokens() {
        for line in TOKEN_CASES.lines() {
            let (input, want) = line.trim().split_once('|').unwrap();
            let got = tokens(Analyzer::HangulBigram, input);
            let got: Vec<&str> = got.iter().map(|t| t.0.as_str()).collect();
            assert_eq!(got, want.split_whitespace().collect::<Vec<_>>());
        }
        let got = tokens(Analyzer::HangulBigram, "서울역 KTX, 가!");
        let spans: Vec<_> = got.iter().map(|t| t.1).collect();
        assert_eq!(spans, [[0, 6, 0], [3, 9, 1], [10, 13, 2], [15, 18, 3]]);
        let got = tokens(Analyzer::Default, "Hi, 서울특별시!");
        assert_eq!(got[1].0, "서울특별시");
        for a in [Analyzer::Default, Analyzer::HangulBigram] {
            assert_eq!(a.as_str().parse::<Analyzer>().ok(), Some(a));
        }
    }

    const NULL: &Value = &Value::Null;

    fn doc<'a>(docnum: u64, text: &'a str, metadata: &'a Value) -> TextDoc<'a> {
        let title = "";
        TextDoc {
            docnum,
            title,
            text,
            metadata,
        }
    }

    /// Docnums of the top 9 hits, optionally restricted.
    fn q(idx: &TextIndex, query: &str, allow: Option<&DocSet>) -> Vec<u64> {
        let hits = search(&idx.searcher(), query, 9, allow).unwrap();
        hits.into_iter().map(|h| h.0).collect()
    }

    #[test]
    fn add_delete_update_payload_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (path, a) = (dir.path(), Analyzer::Default);
        let e = TextIndex::open(path, a, false).err();
        assert!(matches!(e, Some(Error::NotFound(_))));
        let mut idx = TextIndex::open(path, Analyzer::HangulBigram, true).unwrap();
        let e = TextIndex::open(path, a, true).err();
        assert!(matches!(e, Some(Error::Locked(_))));
        assert_eq!(idx.committed().unwrap(), None);
        let mut d0 = doc(0, "ownership and borrowing", NULL);
        d0.title = "Rust 서울특별시";
        let docs = [d0, doc(1, "java garbage", NULL), doc(2, "borrowing", NULL)];
        idx.apply(&docs, &[], 1, 3).unwrap();
        assert_eq!(idx.committed().unwrap(), Some((1, 3)));
        assert_eq!(idx.searcher().num_docs(), 3);
        assert_eq!(q(&idx, "RUST", None), [0]);
        assert_eq!(q(&idx, "특별시", None), [0]);
        assert_eq!(q(&idx, "borrowing", None), [2, 0]);
        assert!(q(&idx, "", None).is_empty() && q(&idx, " ?! ", None).is_empty());
        assert!(search(&idx.searcher(), "x", 0, None).unwrap().is_empty());
        idx.apply(&[], &[1], 2, 3).unwrap();
        assert!(q(&idx, "java", None).is_empty());
        // An update: the old docnum goes and the new one comes in one commit.
        idx.apply(&[doc(3, "ownership rules", NULL)], &[0], 3, 4)
            .unwrap();
        assert_eq!(q(&idx, "ownership rust", None), [3]);
        drop(idx);
        // The stored analyzer wins over the one asked for.
        let mut idx = TextIndex::open(path, a, false).unwrap();
        assert_eq!(idx.analyzer(), Analyzer::HangulBigram);
        assert_eq!(idx.committed().unwrap(), Some((3, 4)));
        assert_eq!(q(&idx, "borrowing", None), [2]);
        let e = idx.apply(&[], &[3], 4, 4).err();
        assert!(matches!(e, Some(Error::ReadOnly)));
        let mut idx = TextIndex::open(path, a, true).unwrap();
        idx.clear(4, 4).unwrap();
        assert_eq!(idx.committed().unwrap(), Some((4, 4)));
        assert_eq!(idx.searcher().num_docs(), 0);
        let mut prepared = idx.writer.as_mut().unwrap().prepare_commit().unwrap();
        prepared.set_payload("{\"seq\": 1}");
        prepared.commit().unwrap();
        assert!(matches!(idx.committed(), Err(Error::Corrupted { .. })));
    }

    #[test]
    fn allow_ties_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TextIndex::open(dir.path(), Analyzer::Default, true).unwrap();
        // Identical docs in separate commits (segments), docnums out of insertion order.
        for (seq, d) in [5, 2, 9, 4].into_iter().enumerate() {
            let docs = [doc(d, "same words", NULL)];
            idx.apply(&docs, &[], seq as u64, 10).unwrap();
        }
        idx.apply(&[doc(1, "other words", NULL)], &[4], 9, 10)
            .unwrap();
        let hits = search(&idx.searcher(), "same", 2, None).unwrap();
        assert_eq!((hits[0].0, hits[1].0), (2, 5));
        assert_eq!(hits[0].1, hits[1].1);
        assert_eq!(q(&idx, "same", None), [2, 5, 9]);
        let allow: DocSet = [1, 9, 4].into_iter().collect();
        assert_eq!(q(&idx, "words", Some(&allow)), [1, 9]);
        assert!(q(&idx, "same", Some(&DocSet::new())).is_empty());
        // Within one segment, later docs tying the k-th score must still be considered.
        let tied: Vec<_> = (10..=20).rev().map(|d| doc(d, "tie", NULL)).collect();
        idx.apply(&tied, &[], 10, 21).unwrap();
        assert_eq!(q(&idx, "tie", None)[..3], [10, 11, 12]);
        idx.merge_all().unwrap();
        assert_eq!(idx.index.searchable_segment_ids().unwrap().len(), 1);
        assert_eq!(idx.committed().unwrap(), Some((10, 21)));
        assert_eq!(q(&idx, "words", None), [1, 2, 5, 9]);
    }

    /// Segment files on disk, by segment id.
    fn segment_files(dir: &Path) -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".idx"))
            .collect()
    }

    #[test]
    fn commits_are_merged_in_the_background_and_old_files_collected() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TextIndex::open(dir.path(), Analyzer::Default, true).unwrap();
        let commits = 7u64;
        for c in 0..commits {
            let docs: Vec<_> = (c * 4..c * 4 + 4)
                .map(|d| doc(d, "same words", NULL))
                .collect();
            idx.apply(&docs, &[], c + 1, c * 4 + 4).unwrap();
        }
        idx.settle().unwrap();
        let segments = idx.index.searchable_segment_ids().unwrap().len();
        // The default policy waits for 8 segments: it would leave all 7.
        assert!(segments <= 2, "{segments} segments after {commits} commits");
        assert_eq!(idx.committed().unwrap(), Some((commits, commits * 4)));
        let all = |idx: &TextIndex| search(&idx.searcher(), "same", 100, None).unwrap().len();
        assert_eq!(all(&idx) as u64, commits * 4);
        // Files of merged-away segments go once no searcher holds them.
        let held = idx.searcher();
        idx.collect_garbage().unwrap();
        drop(held);
        idx.collect_garbage().unwrap();
        assert_eq!(segment_files(dir.path()).len(), segments);
        drop(idx);
        let idx = TextIndex::open(dir.path(), Analyzer::Default, false).unwrap();
        assert_eq!(all(&idx) as u64, commits * 4);
    }

    #[test]
    fn bm25_matches_hand_computation() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TextIndex::open(dir.path(), Analyzer::Default, true).unwrap();
        let texts = [
            "apple banana apple",
            "banana cherry",
            "cherry cherry cherry date",
        ];
        let docs: Vec<_> = (0..).zip(texts).map(|(d, t)| doc(d, t, NULL)).collect();
        idx.apply(&docs, &[], 1, 3).unwrap();
        // N = 3, avgdl = 9 / 3, k1 = 1.2, b = 0.75; fieldnorms this small are exact.
        let bm25 = |df: f64, tf: f64, dl: f64| {
            let idf = (1.0 + (3.0 - df + 0.5) / (df + 0.5)).ln();
            idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / 3.0))
        };
        let (b1, c3, b0) = (
            bm25(2.0, 1.0, 2.0),
            bm25(2.0, 3.0, 4.0),
            bm25(2.0, 1.0, 3.0),
        );
        let cases = [
            ("apple", vec![(0, bm25(1.0, 2.0, 3.0))]),
            ("banana cherry", vec![(1, 2.0 * b1), (2, c3), (0, b0)]),
        ];
        for (query, want) in cases {
            let hits = search(&idx.searcher(), query, 10, None).unwrap();
            assert_eq!(hits.len(), want.len());
            for (got, want) in hits.iter().zip(want) {
                assert_eq!(got.0, want.0);
                assert!((got.1 as f64 - want.1).abs() < 1e-4, "{got:?} {want:?}");
            }
        }
    }

    /// `n` texts of 2 to 80 words over a small vocabulary, some long enough for lossy norms.
    fn texts(n: usize) -> Vec<String> {
        let mut x = 7u64;
        let mut next = move |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        (0..n)
            .map(|_| {
                let len = 2 + next(80);
                let words: Vec<String> = (0..len)
                    .map(|_| format!("w{}", next(8) * next(8)))
                    .collect();
                words.join(" ")
            })
            .collect()
    }

    const QUERIES: [&str; 5] = [
        "w0",
        "w1 w2",
        "w1 w4 w9",
        "w0 w6 w12 w25",
        "w3 w7 w16 w35 w49",
    ];

    /// Every query's hits as `(docnum, score bits)`.
    fn scores(idx: &TextIndex) -> Vec<Vec<(u64, u32)>> {
        let s = idx.searcher();
        let hits = |q| search(&s, q, 30, None).unwrap();
        QUERIES
            .iter()
            .map(|q| hits(q).into_iter().map(|(d, x)| (d, x.to_bits())).collect())
            .collect()
    }

    #[test]
    fn scores_count_only_live_documents() {
        let texts = texts(3000);
        let docs: Vec<_> = (0..).zip(&texts).map(|(d, t)| doc(d, t, NULL)).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TextIndex::open(dir.path(), Analyzer::Default, true).unwrap();
        idx.apply(&docs[..2000], &[], 1, 2000).unwrap();
        idx.apply(&docs[2000..], &[], 2, 3000).unwrap();
        idx.settle().unwrap();
        // A few deletes (looked up one by one in the postings), then many (postings read whole).
        for (seq, every) in [(3, 301), (4, 7)] {
            let deletes: Vec<u64> = (0..3000).step_by(every).collect();
            idx.apply(&[], &deletes, seq, 3000).unwrap();
            let live: Vec<_> = (0..3000)
                .filter(|d| d % 301 != 0 && (seq == 3 || d % 7 != 0))
                .map(|d| doc(d, &texts[d as usize], NULL))
                .collect();
            let other = tempfile::tempdir().unwrap();
            let mut fresh = TextIndex::open(other.path(), Analyzer::Default, true).unwrap();
            fresh.apply(&live, &[], 1, 3000).unwrap();
            let want = scores(&fresh);
            assert!(want.iter().all(|hits| hits.len() == 30));
            assert_eq!(scores(&idx), want, "deleted every {every}th");
            // Twice: the second time from the cached counts.
            assert_eq!(scores(&idx), want);
        }
    }

    #[test]
    fn an_index_without_token_counts_still_searches() {
        // The schema of indexes made before `tokens` was added.
        let mut b = Schema::builder();
        b.add_u64_field(DOCNUM, NumericOptions::default().set_indexed().set_fast());
        let body = TextFieldIndexing::default()
            .set_tokenizer(Analyzer::Default.tokenizer_name())
            .set_index_option(IndexRecordOption::WithFreqs);
        b.add_text_field(BODY, TextOptions::default().set_indexing_options(body));
        let meta = TextFieldIndexing::default().set_tokenizer(META_TOKENIZER);
        b.add_json_field(
            META,
            JsonObjectOptions::default().set_indexing_options(meta),
        );
        let old_dir = tempfile::tempdir().unwrap();
        Index::create_in_dir(old_dir.path(), b.build()).unwrap();
        let texts = texts(1000);
        let docs: Vec<_> = (0..).zip(&texts).map(|(d, t)| doc(d, t, NULL)).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut old = TextIndex::open(old_dir.path(), Analyzer::HangulBigram, true).unwrap();
        assert!(old.fields.tokens.is_none() && old.analyzer() == Analyzer::Default);
        let mut new = TextIndex::open(dir.path(), Analyzer::Default, true).unwrap();
        for idx in [&mut old, &mut new] {
            idx.apply(&docs, &[], 1, 1000).unwrap();
        }
        assert_eq!(scores(&old), scores(&new));
        // With deletes the old index estimates the live length from quantized lengths.
        let deletes: Vec<u64> = (0..1000).step_by(9).collect();
        for idx in [&mut old, &mut new] {
            idx.apply(&[], &deletes, 2, 1000).unwrap();
        }
        for (a, b) in scores(&old).into_iter().zip(scores(&new)) {
            for (a, b) in a.into_iter().zip(b) {
                let (a, b) = (f32::from_bits(a.1), f32::from_bits(b.1));
                assert!((a - b).abs() <= 0.01 * b, "{a} {b}");
            }
        }
    }

    /// Lines of `path = value & ... -> matching docnums` (or `error`) over the docs below.
    const FILTER_CASES: &str = r#"source = "wiki" -> [0]
        source = "Wiki" -> []
        n = 3 -> [0]
        n = 3.0 -> [0]
        n = 4 -> [1]
        whole = 4 -> [0]
        f = 2.5 -> [0]
        neg = -2 -> [0]
        big = 18446744073709551615 -> [0]
        ok = true -> [0]
        ok = false -> [1]
        a.b = "d" -> [1]
        k\.dot = 1 -> [0]
        tags = "y" -> [0]
        missing = 1 -> []
        a.b = "c" & n = 3 -> [0]
        a.b = "c" & n = 4 -> []
        -> [0, 1, 2]
        tags = ["x"] -> error
        a = {"b": "c"} -> error
        n = null -> error
         = 1 -> error"#;

    #[test]
    fn metadata_filters() {
        let dir = tempfile::tempdir().unwrap();
        let m0 = json!({"source": "wiki", "n": 3, "f": 2.5, "whole": 4.0, "ok": true, "neg": -2,
            "big": u64::MAX, "a": {"b": "c"}, "tags": ["x", "y"], "k.dot": 1});
        let m1 = json!({"source": "news", "n": 4, "ok": false, "a": {"b": "d"}});
        let metas = [m0, m1, json!("not an object")];
        let docs: Vec<_> = (0..).zip(&metas).map(|(d, m)| doc(d, "x", m)).collect();
        let mut idx = TextIndex::open(dir.path(), Analyzer::Default, true).unwrap();
        idx.apply(&docs, &[], 1, 3).unwrap();
        for line in FILTER_CASES.lines() {
            let (conds, want) = line.rsplit_once("->").unwrap();
            let mut parsed = Vec::new();
            for c in conds.trim().split(" & ").filter(|c| !c.is_empty()) {
                let (path, value) = c.split_once("= ").unwrap();
                parsed.push((
                    path.trim().to_string(),
                    serde_json::from_str(value).unwrap(),
                ));
            }
            let got =
                filter_docs(&idx.searcher(), &parsed).map(|set| set.iter().collect::<Vec<u64>>());
            match (got, want.trim()) {
                (Err(Error::InvalidInput(_)), "error") => {}
                (got, want) => assert_eq!(got.ok(), serde_json::from_str(want).ok(), "{line}"),
            }
        }
    }
}
