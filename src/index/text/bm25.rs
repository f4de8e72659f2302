//! BM25 statistics over live documents and deterministic scoring: tantivy's per-segment
//! counts corrected for deleted documents (cached per segment and delete count), and each
//! candidate's score summed over the query's terms in a fixed order.

use super::*;

/// Scores a segment's documents, in increasing order, as the sum of their terms' BM25 scores in
/// the query's term order.
pub(super) struct Rescorer<'a> {
    weights: &'a [Bm25Weight],
    /// Each term's postings in the segment (`None`: not there), positioned at or before the
    /// document scored last.
    postings: Vec<Option<SegmentPostings>>,
    norms: FieldNormReader,
    inverted: Arc<InvertedIndexReader>,
    terms: &'a [Term],
    last: DocId,
}

impl<'a> Rescorer<'a> {
    pub(super) fn new(
        reader: &SegmentReader,
        fields: &Fields,
        terms: &'a [Term],
        weights: &'a [Bm25Weight],
    ) -> Result<Rescorer<'a>> {
        let inverted = reader.inverted_index(fields.body)?;
        let mut rescorer = Rescorer {
            weights,
            postings: Vec::new(),
            norms: reader.get_fieldnorms_reader(fields.body)?,
            inverted,
            terms,
            last: 0,
        };
        rescorer.rewind()?;
        Ok(rescorer)
    }

    fn rewind(&mut self) -> Result<()> {
        self.postings = self
            .terms
            .iter()
            .map(|t| self.inverted.read_postings(t, IndexRecordOption::WithFreqs))
            .collect::<std::io::Result<_>>()
            .map_err(TantivyError::from)?;
        self.last = 0;
        Ok(())
    }

    pub(super) fn score(&mut self, doc: DocId) -> Result<Score> {
        if doc < self.last {
            // tantivy offers documents in increasing order; this is only a safeguard.
            self.rewind()?;
        }
        self.last = doc;
        let norm = self.norms.fieldnorm_id(doc);
        let mut sum: Score = 0.0;
        for (postings, weight) in self.postings.iter_mut().zip(self.weights) {
            if let Some(p) = postings {
                if p.doc() < doc {
                    p.seek(doc);
                }
                if p.doc() == doc {
                    sum += weight.score(norm, p.term_freq());
                }
            }
        }
        Ok(sum)
    }
}

/// BM25 statistics over the live documents of a searcher, for the terms of one query.
pub(super) struct LiveStats {
    pub(super) docs: u64,
    tokens: u64,
    doc_freqs: Vec<(Term, u64)>,
}

impl LiveStats {
    pub(super) fn new(searcher: &Searcher, fields: &Fields, terms: &[Term]) -> Result<LiveStats> {
        let (mut docs, mut tokens) = (0u64, 0u64);
        let mut doc_freqs: Vec<(Term, u64)> = terms.iter().map(|t| (t.clone(), 0)).collect();
        for reader in searcher.segment_readers() {
            let inverted = reader.inverted_index(fields.body)?;
            let segment = SegmentStats::of(reader, fields)?;
            docs += u64::from(reader.num_docs());
            tokens += segment.live_tokens;
            for (term, df) in &mut doc_freqs {
                *df += live_doc_freq(reader, &inverted, term, &segment)?;
            }
        }
        for (_, df) in &mut doc_freqs {
            *df = (*df).min(docs);
        }
        Ok(LiveStats {
            docs,
            tokens,
            doc_freqs,
        })
    }
}

impl Bm25StatisticsProvider for LiveStats {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        Ok(self.tokens)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        match self.doc_freqs.iter().find(|(t, _)| t == term) {
            Some(&(_, df)) => Ok(df),
            None => Err(TantivyError::InternalError(format!(
                "no statistics for {term:?}"
            ))),
        }
    }
}

/// The live documents of a segment holding `term`.
pub(super) fn live_doc_freq(
    reader: &SegmentReader,
    inverted: &InvertedIndexReader,
    term: &Term,
    segment: &SegmentStats,
) -> Result<u64> {
    let info = inverted.get_term_info(term).map_err(TantivyError::from)?;
    let Some(info) = info else { return Ok(0) };
    let df = u64::from(info.doc_freq);
    let Some(alive) = reader.alive_bitset().filter(|_| segment.deleted > 0) else {
        return Ok(df);
    };
    let dead_cache = || segment.dead.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&dead) = dead_cache().get(term) {
        return Ok(df.saturating_sub(dead));
    }
    let mut postings = inverted
        .read_postings_from_terminfo(&info, IndexRecordOption::Basic)
        .map_err(TantivyError::from)?;
    let mut dead = 0u64;
    match &segment.deleted_docs {
        // Few deletes: look each up (a skip to its block) rather than read every posting.
        Some(docs) if docs.len() as u64 * 32 < df => {
            for &d in docs {
                if postings.doc() < d {
                    postings.seek(d);
                }
                if postings.doc() == TERMINATED {
                    break;
                }
                dead += u64::from(postings.doc() == d);
            }
        }
        _ => {
            let mut doc = postings.doc();
            while doc != TERMINATED {
                dead += u64::from(alive.is_deleted(doc));
                doc = postings.advance();
            }
        }
    }
    let mut cache = dead_cache();
    if cache.len() < SegmentStats::DEAD_CACHED {
        cache.insert(term.clone(), dead);
    }
    Ok(df.saturating_sub(dead))
}

/// A segment and its count of deleted documents.
pub(super) type SegmentKey = (SegmentId, u32);

/// What the statistics need of one segment: its live `body` tokens, and its deleted documents
/// (how many, and which when few).
#[derive(Default)]
pub(super) struct SegmentStats {
    /// Summed from the per-document counts: tantivy's own total is only estimated (from
    /// quantized lengths) for a segment merged from ones with deletes.
    live_tokens: u64,
    deleted: u32,
    deleted_docs: Option<Vec<DocId>>,
    /// Per term seen in a query, how many of the deleted documents hold it.
    dead: Mutex<HashMap<Term, u64>>,
}

impl SegmentStats {
    /// Deleted-document lists above this length are not kept.
    const MAX_LISTED: usize = 1 << 14;
    /// Segments kept in the cache.
    const CACHED: usize = 128;
    /// Terms whose deleted-document count is kept, per segment.
    const DEAD_CACHED: usize = 1 << 12;

    /// Computed once per segment and delete count (deletes only grow, so the pair names one
    /// set of live documents) and kept in a small process-wide cache.
    fn of(reader: &SegmentReader, fields: &Fields) -> Result<Arc<SegmentStats>> {
        static CACHE: Mutex<Vec<(SegmentKey, Arc<SegmentStats>)>> = Mutex::new(Vec::new());
        let lock = || CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let deleted = reader.num_deleted_docs();
        let key = (reader.segment_id(), deleted);
        if let Some((_, stats)) = lock().iter().find(|(k, _)| *k == key) {
            return Ok(stats.clone());
        }
        let alive = reader.alive_bitset().filter(|_| deleted > 0);
        let is_deleted = |d: DocId| alive.is_some_and(|a| a.is_deleted(d));
        let live_tokens = match fields.tokens {
            Some(_) => {
                let column = reader.fast_fields().u64(TOKENS)?;
                (0..reader.max_doc())
                    .filter(|&d| !is_deleted(d))
                    .map(|d| column.first(d).unwrap_or(0))
                    .sum()
            }
            // An index made before token counts were kept: deleted documents' quantized
            // lengths are taken off tantivy's total.
            None => {
                let norms = reader.get_fieldnorms_reader(fields.body)?;
                let gone: u64 = (0..reader.max_doc())
                    .filter(|&d| is_deleted(d))
                    .map(|d| u64::from(norms.fieldnorm(d)))
                    .sum();
                let total = reader.inverted_index(fields.body)?.total_num_tokens();
                total.saturating_sub(gone)
            }
        };
        let deleted_docs = (deleted > 0 && deleted as usize <= Self::MAX_LISTED)
            .then(|| (0..reader.max_doc()).filter(|&d| is_deleted(d)).collect());
        let stats = Arc::new(SegmentStats {
            live_tokens,
            deleted,
            deleted_docs,
            dead: Mutex::default(),
        });
        let mut cache = lock();
        if cache.len() >= Self::CACHED {
            cache.remove(0);
        }
        cache.push((key, stats.clone()));
        Ok(stats)
    }
}
