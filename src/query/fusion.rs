//! Rank fusion: pure functions from per-leg ranked lists to one fused list.

use std::collections::HashMap;

use crate::query::Leg;

/// One leg's ranked list: `(doc, score)` best first.
pub(crate) struct LegResult {
    pub leg: Leg,
    pub weight: f32,
    pub hits: Vec<(u64, f32)>,
}

/// A fused document with its fused score and, per leg it appeared in, `(leg, rank, score)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fused {
    pub doc: u64,
    pub score: f32,
    pub legs: Vec<(Leg, usize, f32)>,
}

/// Reciprocal Rank Fusion (Cormack, Clarke & Büttcher, SIGIR 2009) with per-leg weights:
/// `score(d) = Σ_leg w_leg / (k + rank_leg(d))`, ranks from 1. Ties go to the smaller doc number.
pub(crate) fn rrf(legs: &[LegResult], k: f32) -> Vec<Fused> {
    fuse(legs, |i, rank, _| legs[i].weight / (k + rank as f32))
}

/// Weighted sum of min-max normalized scores: `score(d) = Σ_leg w_leg · (s − min) / (max − min)`
/// over each leg's own list; a leg whose scores are all equal gives 1 to each of its documents,
/// and a document absent from a leg gets 0 from it.
pub(crate) fn weighted(legs: &[LegResult]) -> Vec<Fused> {
    let ranges: Vec<(f32, f32)> = legs
        .iter()
        .map(|l| {
            l.hits
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &(_, s)| {
                    (lo.min(s), hi.max(s))
                })
        })
        .collect();
    fuse(legs, |i, _, score| {
        let (lo, hi) = ranges[i];
        let norm = if hi > lo {
            (score - lo) / (hi - lo)
        } else {
            1.0
        };
        legs[i].weight * norm
    })
}

/// Sums `contribution(leg index, rank, score)` per document over the legs.
fn fuse(legs: &[LegResult], contribution: impl Fn(usize, usize, f32) -> f32) -> Vec<Fused> {
    let mut by_doc: HashMap<u64, usize> = HashMap::new();
    let mut out: Vec<Fused> = Vec::new();
    for (l, leg) in legs.iter().enumerate() {
        for (i, &(doc, score)) in leg.hits.iter().enumerate() {
            let rank = i + 1;
            let slot = *by_doc.entry(doc).or_insert_with(|| {
                out.push(Fused {
                    doc,
                    score: 0.0,
                    legs: Vec::with_capacity(legs.len()),
                });
                out.len() - 1
            });
            out[slot].score += contribution(l, rank, score);
            out[slot].legs.push((leg.leg, rank, score));
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legs() -> Vec<LegResult> {
        vec![
            LegResult {
                leg: Leg::Dense,
                weight: 1.0,
                hits: vec![(10, 0.9), (20, 0.8), (30, 0.5)],
            },
            LegResult {
                leg: Leg::Bm25,
                weight: 2.0,
                hits: vec![(30, 12.0), (40, 6.0)],
            },
        ]
    }

    #[test]
    fn rrf_matches_hand_computed() {
        let f = rrf(&legs(), 60.0);
        // doc 30: 1/(60+3) + 2/(60+1) = 0.015873 + 0.032787 = 0.048660
        // doc 40: 2/(60+2) = 0.032258; doc 10: 1/61 = 0.016393; doc 20: 1/62 = 0.016129
        let got: Vec<(u64, f32)> = f.iter().map(|h| (h.doc, h.score)).collect();
        let want = [
            (30, 0.048660),
            (40, 0.032258),
            (10, 0.016393),
            (20, 0.016129),
        ];
        for ((d, s), (wd, ws)) in got.iter().zip(want) {
            assert_eq!(*d, wd);
            assert!((s - ws).abs() < 1e-6, "{d}: {s} vs {ws}");
        }
        assert_eq!(f[0].legs, vec![(Leg::Dense, 3, 0.5), (Leg::Bm25, 1, 12.0)]);
    }

    #[test]
    fn weighted_matches_hand_computed() {
        let f = weighted(&legs());
        // dense range [0.5, 0.9]: 10 → 1, 20 → 0.75, 30 → 0; bm25 range [6, 12]: 30 → 1, 40 → 0.
        // fused: 30 = 0 + 2·1 = 2; 10 = 1; 20 = 0.75; 40 = 0.
        let want = [(30, 2.0), (10, 1.0), (20, 0.75), (40, 0.0)];
        assert_eq!(f.len(), want.len());
        for (h, (wd, ws)) in f.iter().zip(want) {
            assert_eq!(h.doc, wd);
            assert!(
                (h.score - ws).abs() < 1e-6,
                "{}: {} vs {ws}",
                h.doc,
                h.score
            );
        }
    }

    #[test]
    fn ties_go_to_smaller_doc() {
        let l = vec![
            LegResult {
                leg: Leg::Dense,
                weight: 1.0,
                hits: vec![(7, 1.0)],
            },
            LegResult {
                leg: Leg::Bm25,
                weight: 1.0,
                hits: vec![(3, 1.0)],
            },
        ];
        let f = rrf(&l, 60.0);
        assert_eq!(f.iter().map(|h| h.doc).collect::<Vec<_>>(), vec![3, 7]);
        let w = weighted(&l);
        assert_eq!(w.iter().map(|h| h.doc).collect::<Vec<_>>(), vec![3, 7]);
    }
}
